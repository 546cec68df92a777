"""Spark SQL over tables a catalog names, in a session of its own (the catalog must persist).

    spark-submit ... tests/integration/apps/catalog_query.py imaging

Prints one line ``RESULT <json>``: the row count of every table of the database, and the
instances per Modality as [Modality, count] pairs.
"""

from __future__ import annotations

import json
import sys

from pyspark.sql import SparkSession

if __name__ == "__main__":
    database = sys.argv[1]
    spark = SparkSession.builder.getOrCreate()
    tables = sorted(r["tableName"] for r in spark.sql(f"show tables in {database}").collect())
    counts = {
        t: spark.sql(f"select count(*) as n from {database}.{t}").first()["n"] for t in tables
    }
    modalities = [  # pairs: a null Modality stays null in JSON
        [r["Modality"], r["n"]]
        for r in spark.sql(
            f"select Modality, count(*) as n from {database}.instances group by Modality"
        ).collect()
    ]
    print("RESULT " + json.dumps({"counts": counts, "modalities": modalities}))
    spark.stop()
