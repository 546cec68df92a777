"""Local Spark workers import the installed pyspark, not a copy compiled again from Spark's zip."""

from __future__ import annotations

import pyspark


def test_local_workers_import_the_installed_pyspark(spark) -> None:
    def worker_pyspark(_):
        import pyspark as imported

        yield imported.__file__

    files = spark.sparkContext.parallelize(range(2), 2).mapPartitions(worker_pyspark).collect()
    assert ".zip" not in pyspark.__file__
    assert files == [pyspark.__file__] * 2, files
