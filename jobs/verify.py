"""spark-submit entry point of the backup verify job (the same code path as ``dicomlake verify``).

    spark-submit --master spark://127.0.0.1:7077 --py-files dist/dicomlake.zip \
        jobs/verify.py --backup hdfs://nn:8020/backup [--snapshot ID] \
        --keyring /secure/keyring.json [--deep] [--conf conf/cluster.yaml]

The keyring (default: the config's keys.keyring) authenticates the manifests; ``--deep`` needs
one that can unwrap the pack keys.
"""

import sys

from dicomlake.cli import run

if __name__ == "__main__":
    run(["verify", *sys.argv[1:]])
