"""spark-submit entry point of the backup verify job (the same code path as ``dicomlake verify``).

    spark-submit --master spark://127.0.0.1:7077 --py-files dist/dicomlake.zip \
        jobs/verify.py --backup hdfs://nn:8020/backup [--snapshot ID] \
        --deep --keyring /secure/keyring.json [--conf conf/cluster.yaml]
"""

import sys

from dicomlake.cli import run

if __name__ == "__main__":
    run(["verify", *sys.argv[1:]])
