"""spark-submit entry point of the ingest job (the same code path as ``dicomlake ingest``).

    spark-submit --master spark://127.0.0.1:7077 --py-files dist/dicomlake.zip \
        jobs/ingest.py --landing hdfs://nn:8020/landing --lake hdfs://nn:8020/lake \
        --keyring /etc/dicomlake/keyring.json [--conf conf/cluster.yaml]
"""

import sys

from dicomlake.cli import run

if __name__ == "__main__":
    run(["ingest", "--submitted", *sys.argv[1:]])
