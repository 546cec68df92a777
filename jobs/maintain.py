"""spark-submit entry point of the lake maintenance job (the same code path as ``dicomlake
maintain``: compaction, checkpoints and vacuum of the lake's Delta tables; no Spark work).

    spark-submit --master spark://127.0.0.1:7077 --py-files dist/dicomlake.zip \
        jobs/maintain.py --lake hdfs://nn:8020/lake [--conf conf/cluster.yaml]
"""

import sys

from dicomlake.cli import run

if __name__ == "__main__":
    run(["maintain", *sys.argv[1:]])
