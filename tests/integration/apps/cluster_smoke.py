"""A tiny job for the cluster smoke test: shipped code, Spark's own hdfs://, WebHDFS on executors.

    spark-submit --master spark://127.0.0.1:17077 --py-files dist/dicomlake.zip \
        tests/integration/apps/cluster_smoke.py hdfs://127.0.0.1:18020/smoke http://127.0.0.1:19870

Prints one line ``RESULT <json>`` for the test to check.
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Iterator

from pyspark.sql import SparkSession


def on_executor(index: int, rows: Iterator[object], out: str, namenodes: str) -> Iterator[dict]:
    """Import dicomlake where the task runs, list Spark's output and write a file, via WebHDFS."""
    import dicomlake
    from dicomlake.config import HdfsConfig
    from dicomlake.storage.hdfs import WebHdfsFileSystem

    fs = WebHdfsFileSystem(HdfsConfig(namenodes=json.loads(namenodes)))
    parquet = [f for f in fs.list_files(f"{out}/native") if f.path.endswith(".parquet")]
    target = f"{out}/from-executors/part-{index}.txt"
    fs.write_bytes(target, f"partition {index}: {sum(1 for _ in rows)} rows\n".encode())
    yield {
        "module": os.path.abspath(dicomlake.__file__),
        "python": sys.executable,
        "parquet_files": len(parquet),
        "parquet_bytes": sum(f.size for f in parquet),
        "wrote": target,
        "read_back": fs.read(target).decode(),
    }


def main(argv: list[str]) -> int:
    out, namenodes = argv
    spark = SparkSession.builder.appName("dicomlake-cluster-smoke").getOrCreate()
    try:
        # Spark's own Hadoop client writes and reads hdfs:// natively.
        spark.range(0, 1000, numPartitions=4).selectExpr("id", "id * id AS square").write.parquet(
            f"{out}/native"
        )
        native_sum = spark.read.parquet(f"{out}/native").selectExpr("sum(square)").first()[0]
        tasks = (
            spark.sparkContext.parallelize(range(40), 4)
            .mapPartitionsWithIndex(lambda i, rows: on_executor(i, rows, out, namenodes))
            .collect()
        )
        # ...and reads back what Python on the executors wrote through WebHDFS.
        lines = sorted(r.value for r in spark.read.text(f"{out}/from-executors").collect())
        result = {"native_sum": native_sum, "tasks": tasks, "lines": lines}
    finally:
        spark.stop()
    print("RESULT " + json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
