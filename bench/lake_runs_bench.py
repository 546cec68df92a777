"""Many small runs, then `dicomlake maintain`: the tables' file counts and query times, against
the same rows written once.

    .venv/bin/python bench/lake_runs_bench.py                  # 365 runs of 20 instances
    .venv/bin/python bench/lake_runs_bench.py --runs 30 --spark  # and Spark SQL's times

Steps:

1. Ingests the sample landing zone (``dicomlake.samples``) once with ``run_ingest`` (Spark
   ``local[2]``): its ``instances`` rows are real (headers, DICOM JSON, lineage).
2. Commits ``--runs`` runs through the lake's own commit protocol (``lake.commit.commit``: staged
   fragments, intent, one Delta transaction per table), each of ``--rows-per-run`` of those rows
   with new instance ids, cut into ``--tasks`` fragments per partition as ingest tasks cut them.
   No Spark here: what is measured is the tables, not the ingest.
3. Measures the ``instances`` table: data files, and the best of ``--repeat`` times of two
   queries from opening the table (DuckDB over ``DeltaTable(...).to_pyarrow_dataset()``; with
   ``--spark``, Spark SQL over ``format("delta")``): a group-by over every row, and a selective
   filter on a column the log has statistics for.
4. Runs ``maintain_lake`` (compaction, checkpoint, vacuum) and measures again.
5. Measures the same rows written once (``write_deltalake``, one file per partition).

The last line is one JSON object with every figure. Target: after maintenance, each query within
1.5x of the single write.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import time
from collections import defaultdict
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import duckdb
import pyarrow as pa
from deltalake import DeltaTable, write_deltalake

from dicomlake.config import LockConfig, MaintainConfig, load_config
from dicomlake.crypto.keyring import Keyring
from dicomlake.ingest.job import run_ingest
from dicomlake.ingest.worker import partition_dir
from dicomlake.lake import schemas
from dicomlake.lake.commit import commit, staged
from dicomlake.lake.delta_read import read_snapshot
from dicomlake.lake.layout import LakeLayout
from dicomlake.lake.lock import holding
from dicomlake.lake.maintain import maintain_lake
from dicomlake.lake.parquet import write_table
from dicomlake.samples import build_sample_landing
from dicomlake.spark.context import spark_context
from dicomlake.storage.local import LocalFileSystem

QUERIES = {
    "group_by": "select Modality, count(*) as n, avg(Rows) as rows from instances group by 1",
    "selective": "select count(*) from instances where ingest_run_id = '{run}'",
}


def source_rows(work: Path, sc: Any) -> list[dict[str, Any]]:
    """The instances rows of one real ingest of the sample landing zone."""
    landing, lake = work / "landing", work / "source-lake"
    build_sample_landing(landing)
    run_ingest(sc, str(landing), str(lake), load_config(env={}), Keyring.generate())
    return read_snapshot(LocalFileSystem(), LakeLayout(str(lake)), "instances").to_pylist()


def commit_runs(lake: Path, rows: list[dict], runs: int, per_run: int, tasks: int) -> float:
    """Commit ``runs`` runs of ``per_run`` rows each; returns the seconds spent."""
    fs, layout = LocalFileSystem(), LakeLayout(str(lake))
    file_schema = pa.schema(
        [f for f in schemas.INSTANCES if f.name not in schemas.INSTANCE_PARTITIONS]
    )
    started = time.perf_counter()
    for n in range(runs):
        run_id = f"{n:05d}-bench"
        now = datetime.now(timezone.utc)
        batch = [
            {
                **rows[(n * per_run + i) % len(rows)],
                "instance_id": f"{n}-{i}",
                "ingest_run_id": run_id,
            }
            for i in range(per_run)
        ]
        by_task: dict[str, list[dict]] = defaultdict(list)
        for i, row in enumerate(batch):
            by_task[f"{partition_dir(row)}/part-{run_id}-t{i % tasks:05d}.parquet"].append(row)
        files = []
        for directory_name, part in by_task.items():
            relative = f"tables/instances/{directory_name}"
            write_table(
                fs, staged(layout, run_id, relative), pa.Table.from_pylist(part, file_schema)
            )
            files.append(relative)
        run_row = {
            "run_id": run_id, "landing": "/bench", "started_at": now, "committed_at": now,
            **dict.fromkeys(["files_listed", "files_seen", "ingested"], per_run),
            **dict.fromkeys(["duplicates", "quarantined", "bytes_read", "bytes_stored"], 0),
            "packs_written": 0, "watermark": now, "dicomlake_version": "bench",
        }  # fmt: skip
        relative = f"tables/runs/part-{run_id}.parquet"
        write_table(
            fs, staged(layout, run_id, relative), pa.Table.from_pylist([run_row], schemas.RUNS)
        )
        with holding(fs, layout.root, run_id, "bench", LockConfig()) as lock:
            commit(fs, layout, lock, [*files, relative], MaintainConfig().retention_hours)
    return time.perf_counter() - started


def measure(table: Path, repeat: int, spark: Any, run: str) -> dict[str, Any]:
    """Data files and best query times of one instances table."""
    out: dict[str, Any] = {"files": len(DeltaTable(str(table)).file_uris())}
    for name, sql in QUERIES.items():
        sql = sql.format(run=run)
        best = float("inf")
        for _ in range(repeat):
            t = time.perf_counter()
            instances = DeltaTable(str(table)).to_pyarrow_dataset()  # noqa: F841 (by name)
            duckdb.sql(sql).fetchall()
            best = min(best, time.perf_counter() - t)
        out[f"duckdb_{name}_s"] = round(best, 4)
        if spark is not None:
            best = float("inf")
            for _ in range(repeat):
                t = time.perf_counter()
                spark.read.format("delta").load(str(table)).createOrReplaceTempView("instances")
                spark.sql(sql).collect()
                best = min(best, time.perf_counter() - t)
            out[f"spark_{name}_s"] = round(best, 4)
    return out


def start_spark(delta: bool) -> Any:
    """A local[2] SparkSession, with Delta Lake's connector when Spark's times are asked for."""
    import subprocess

    from pyspark.sql import SparkSession

    os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
    if not delta:
        config = load_config(env={"DICOMLAKE_SPARK_MASTER": "local[2]"})
        return SparkSession(spark_context(config, submitted=False))

    repo = Path(__file__).resolve().parents[1]
    jars = subprocess.run(
        [sys.executable, str(repo / "dev" / "delta_jars.py")],
        check=True,
        capture_output=True,
        text=True,
    ).stdout.strip()
    catalog = "org.apache.spark.sql.delta.catalog.DeltaCatalog"
    return (
        SparkSession.builder.master("local[2]")
        .config("spark.jars", jars)
        .config("spark.sql.extensions", "io.delta.sql.DeltaSparkSessionExtension")
        .config("spark.sql.catalog.spark_catalog", catalog)
        .config("spark.ui.enabled", "false")
        .getOrCreate()
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=365)
    parser.add_argument("--rows-per-run", type=int, default=20)
    parser.add_argument("--tasks", type=int, default=2, help="fragments per partition and run")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--spark", action="store_true", help="also time Spark SQL")
    args = parser.parse_args(argv)
    work = Path(tempfile.mkdtemp(prefix="lake-runs-bench-"))
    try:
        session = start_spark(args.spark)
        rows = source_rows(work, session.sparkContext)
        lake = work / "lake"
        commit_seconds = commit_runs(lake, rows, args.runs, args.rows_per_run, args.tasks)
        spark = session if args.spark else None
        last = f"{args.runs - 1:05d}-bench"
        table = lake / "tables" / "instances"
        before = measure(table, args.repeat, spark, last)
        t = time.perf_counter()
        with holding(LocalFileSystem(), str(lake), None, "maintain", LockConfig()) as lock:
            maintain_lake(str(lake), load_config(env={}), lock)
        maintain_seconds = time.perf_counter() - t
        after = measure(table, args.repeat, spark, last)
        single = work / "single" / "instances"
        everything = read_snapshot(LocalFileSystem(), LakeLayout(str(lake)), "instances")
        write_deltalake(str(single), everything, partition_by=list(schemas.INSTANCE_PARTITIONS))
        once = measure(single, args.repeat, spark, last)
        session.stop()
    finally:
        shutil.rmtree(work, ignore_errors=True)
    ratios = {k: round(after[k] / once[k], 2) for k in after if k.endswith("_s") and once[k]}
    print(
        f"{args.runs} runs x {args.rows_per_run} instances ({everything.num_rows} rows), "
        f"committed in {commit_seconds:.1f} s, maintained in {maintain_seconds:.1f} s"
    )
    print(f"{'':<24}{'before':>12}{'after':>12}{'one write':>12}{'after/once':>12}")
    for key in before:
        print(f"{key:<24}{before[key]:>12}{after[key]:>12}{once[key]:>12}{ratios.get(key, ''):>12}")
    met = all(r <= 1.5 for r in ratios.values())
    print(f"target (after maintain within 1.5x of one write): {'met' if met else 'NOT met'}")
    result = {
        "runs": args.runs,
        "rows_per_run": args.rows_per_run,
        "rows": everything.num_rows,
        "commit_seconds": round(commit_seconds, 2),
        "maintain_seconds": round(maintain_seconds, 2),
        "before": before,
        "after": after,
        "single_write": once,
        "after_over_single": ratios,
        "target_met": met,
    }
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
