"""spark-submit entry point of the snapshot job (the same code path as ``dicomlake snapshot``).

    spark-submit --master spark://127.0.0.1:7077 --py-files dist/dicomlake.zip \
        jobs/snapshot.py --lake hdfs://nn:8020/lake --backup hdfs://nn:8020/backup \
        --mode incremental --label 20261128T000000Z [--conf conf/cluster.yaml]
"""

import sys

from dicomlake.cli import run

if __name__ == "__main__":
    run(["snapshot", "--submitted", *sys.argv[1:]])
