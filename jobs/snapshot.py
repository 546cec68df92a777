"""spark-submit entry point of the snapshot job (the same code path as ``dicomlake snapshot``).

    spark-submit --master spark://127.0.0.1:7077 --py-files dist/dicomlake.zip \
        jobs/snapshot.py --lake hdfs://nn:8020/lake --backup hdfs://nn:8020/backup \
        --mode incremental --label 20261128T000000Z --keyring /secure/keyring.public.json \
        [--conf conf/cluster.yaml]

The keyring (default: the config's keys.keyring) authenticates the manifests: its public half is
enough, as for ingest.
"""

import sys

from dicomlake.cli import run

if __name__ == "__main__":
    run(["snapshot", "--submitted", *sys.argv[1:]])
