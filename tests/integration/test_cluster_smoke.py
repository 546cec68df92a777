"""The standalone cluster end to end: shipped code, hdfs:// through Spark, WebHDFS on executors."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from dicomlake.storage.hdfs import WebHdfsFileSystem

APPS = Path(__file__).resolve().parent / "apps"
SOURCE_TREE = Path(__file__).resolve().parents[2] / "lib"

pytestmark = [pytest.mark.cluster, pytest.mark.hdfs, pytest.mark.slow]


def test_job_runs_on_the_cluster_with_the_shipped_package(
    spark_cluster, hdfs_cluster, hdfs_root: str
) -> None:
    out = f"{hdfs_root}/smoke"
    proc = spark_cluster.spark_submit(
        APPS / "cluster_smoke.py",
        out,
        json.dumps(hdfs_cluster.hdfs_config.namenodes),
        conf={"spark.hadoop.fs.defaultFS": hdfs_cluster.uri},
    )
    assert proc.returncode == 0, proc.stderr[-5000:]
    (line,) = [x for x in proc.stdout.splitlines() if x.startswith("RESULT ")]
    result = json.loads(line[len("RESULT ") :])

    assert result["native_sum"] == sum(i * i for i in range(1000))
    tasks = result["tasks"]
    assert len(tasks) == 4
    for task in tasks:
        # dicomlake came from the shipped zip, not from the source tree or the venv.
        assert ".zip/dicomlake/" in task["module"], task
        assert not Path(task["module"]).is_relative_to(SOURCE_TREE), task
        assert task["python"] == spark_cluster.executor_python
        assert task["parquet_files"] >= 1 and task["parquet_bytes"] > 0
        assert task["read_back"].startswith("partition ")
    assert result["lines"] == [f"partition {i}: 10 rows" for i in range(4)]

    # What the executors wrote is on HDFS, seen from here too.
    fs = WebHdfsFileSystem(hdfs_cluster.hdfs_config)
    written = sorted(f.path for f in fs.list_files(f"{out}/from-executors"))
    assert written == sorted(t["wrote"] for t in tasks)
