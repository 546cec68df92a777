"""spark-submit entry point registering a lake's tables in the Spark catalog (the same code path
as ``dicomlake register``). The session needs Delta Lake's connector and, for names that outlive
it, a persistent catalog:

    spark-submit --master spark://127.0.0.1:7077 --py-files dist/dicomlake.zip \
        --packages io.delta:delta-spark_4.2_2.13:4.4.0 \
        --conf spark.sql.extensions=io.delta.sql.DeltaSparkSessionExtension \
        --conf spark.sql.catalog.spark_catalog=org.apache.spark.sql.delta.catalog.DeltaCatalog \
        --conf spark.sql.catalogImplementation=hive \
        jobs/register.py --lake hdfs://nn:8020/lake --database imaging [--conf conf/cluster.yaml]
"""

import sys

from dicomlake.cli import run

if __name__ == "__main__":
    run(["register", "--submitted", *sys.argv[1:]])
