"""One contender of the ingest benchmark, run in its own process (fresh JVM, own caches).

    .venv/bin/python bench/ingest_runs.py dicomlake --landing L --out DIR --result R.json
    .venv/bin/python bench/ingest_runs.py baseline  --landing L --out DIR --result R.json
    .venv/bin/python bench/ingest_runs.py profile   --landing L --out DIR --result R.json --mb 64

``--landing`` and ``--out`` may be ``hdfs://`` URIs, with ``--webhdfs`` the WebHDFS address of
their NameNode: dicomlake reads and writes them over WebHDFS, the baseline through Spark's Hadoop
client.
``--set section.key=value`` (repeatable) changes a dicomlake setting of conf/local.yaml for the
run, e.g. ``--set pixels.verify=false``.

bench/ingest_bench.py starts these and samples their process tree's memory; by hand they are
useful to look at one contender. Both Spark contenders get the same Spark context: dicomlake's
``spark_context`` built from conf/local.yaml with the master from ``--master`` (local[2]); the
baseline builds its SparkSession on it, before the clock starts.
The timed part starts after Spark is up, its Python workers too (their start is the result's
``python_workers_seconds``), and ends when the output is written (dicomlake:
``run_ingest`` returned, so committed; baseline: the Parquet write finished). The figures in
the result that need reading the output back (pixel ratios) are computed after the clock stops.
"""

from __future__ import annotations

import argparse
import cProfile
import json
import os
import pstats
import time
from collections import defaultdict
from collections.abc import Sequence
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

ROOT = Path(__file__).resolve().parent.parent


def tree_cpu_seconds() -> float:
    """User + system CPU seconds of this process and its live descendants (JVM, workers)."""
    import psutil

    me = psutil.Process()
    total = 0.0
    for proc in [me, *me.children(recursive=True)]:
        try:
            t = proc.cpu_times()
        except psutil.Error:
            continue
        total += t.user + t.system
    return total


def _config(master: str, namenodes: str | None = None, settings: Sequence[str] = ()):
    """conf/local.yaml with the master, ``hdfs.namenodes`` and ``section.key=value`` settings."""
    from dicomlake.config import ENV_PREFIX, load_config

    env = {"DICOMLAKE_CONF": str(ROOT / "conf" / "local.yaml"), "DICOMLAKE_SPARK_MASTER": master}
    if namenodes:
        env["DICOMLAKE_HDFS_NAMENODES"] = namenodes
    for setting in settings:
        key, sep, value = setting.partition("=")
        if not sep or "." not in key:
            raise SystemExit(f"--set {setting!r}: expected section.key=value")
        env[ENV_PREFIX + key.replace(".", "_").upper()] = value
    return load_config(env=env)


def _context(master: str, namenodes: str | None = None, settings: Sequence[str] = ()):
    """The config, a started context, and the seconds its Python workers took to start.

    Both are started before the clock, as Orthanc is started before it is fed: the executors'
    Python workers too (`start_python_workers`), whose start the result reports on its own."""
    from dicomlake.spark.context import spark_context
    from dicomlake.spark.workers import start_python_workers

    config = _config(master, namenodes, settings)
    sc = spark_context(config, submitted=False)
    sc.setLogLevel("ERROR")
    started = time.perf_counter()
    start_python_workers(sc).join()
    return config, sc, time.perf_counter() - started


def _parquet_columns(config, root: str, columns: list[str]):
    """The ``columns`` of every Parquet file under ``root`` (a local path or ``hdfs://`` URI):
    the baseline's output, a plain Parquet directory."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from dicomlake.storage import filesystem_for

    fs = filesystem_for(root, config.hdfs)
    parts = [
        pq.read_table(pa.BufferReader(fs.read(f.path)), columns=columns)
        for f in fs.list_files(root)
        if f.path.endswith(".parquet")
    ]
    return pa.concat_tables(parts)


def _tree_bytes(config, root: str) -> int:
    """Bytes of every file under ``root``, a local path or ``hdfs://`` URI."""
    from dicomlake.storage import filesystem_for

    return sum(f.size for f in filesystem_for(root, config.hdfs).list_files(root))


def run_dicomlake(
    landing: str, out: str, master: str, namenodes: str | None, settings: Sequence[str]
) -> dict[str, Any]:
    import pyarrow.compute as pc

    from dicomlake.crypto.keyring import Keyring
    from dicomlake.ingest.job import run_ingest
    from dicomlake.lake.delta_read import read_snapshot
    from dicomlake.lake.layout import LakeLayout
    from dicomlake.storage import filesystem_for

    config, sc, workers_seconds = _context(master, namenodes, settings)
    cpu0, t0 = tree_cpu_seconds(), time.perf_counter()
    summary = run_ingest(sc, landing, out, config, Keyring.generate())
    wall = time.perf_counter() - t0
    cpu = tree_cpu_seconds() - cpu0
    doc = summary.as_dict()
    tasks = spark_task_times(sc)
    sc.stop()
    lake_bytes = _tree_bytes(config, out)  # the whole lake: tables, packs, log
    table = read_snapshot(
        filesystem_for(out, config.hdfs),
        LakeLayout(out),
        "instances",
        ["raw_pixel_bytes", "stored_pixel_bytes", "pixel_codec"],
    )
    native = pc.not_equal(pc.fill_null(table["pixel_codec"], ""), "store")
    ratios: dict[str, Any] = {}
    for label, rows in (("all", table), ("native", table.filter(native))):
        raw = pc.sum(rows["raw_pixel_bytes"]).as_py() or 0
        stored = pc.sum(rows["stored_pixel_bytes"]).as_py() or 0
        ratios[label] = {"raw": raw, "stored": stored, "ratio": raw / stored if stored else None}
    codecs: dict[str, int] = defaultdict(int)
    for codec, raw in zip(
        table["pixel_codec"].to_pylist(), table["raw_pixel_bytes"].to_pylist(), strict=True
    ):
        codecs[str(codec)] += raw or 0
    return {
        "contender": "dicomlake",
        "seconds": wall,
        "cpu_seconds_timed": cpu,
        "python_workers_seconds": workers_seconds,
        "spark_tasks": tasks,
        "summary": {k: v for k, v in doc.items() if k != "tables"},
        "files": doc["files_seen"],
        "bytes_read": doc["bytes_read"],
        "stored_bytes": lake_bytes,
        "pixels": ratios,
        "raw_pixel_bytes_by_codec": dict(codecs),
    }


def spark_task_times(sc) -> dict[str, Any] | None:
    """Durations of the tasks of the context's completed stages, from Spark's REST API."""
    import urllib.request

    base = f"{sc.uiWebUrl}/api/v1/applications/{sc.applicationId}"
    try:
        with urllib.request.urlopen(f"{base}/stages?status=complete", timeout=10) as r:
            stages = json.load(r)
        out = []
        for stage in stages:
            url = f"{base}/stages/{stage['stageId']}/{stage['attemptId']}/taskList?length=100000"
            with urllib.request.urlopen(url, timeout=10) as r:
                tasks = json.load(r)
            out.append(
                {
                    "stage": stage["stageId"],
                    "name": stage.get("name", ""),
                    "durations": sorted(t.get("duration", 0) / 1000 for t in tasks),
                    "deserialize": sum(
                        t.get("taskMetrics", {}).get("executorDeserializeTime", 0) for t in tasks
                    )
                    / 1000,
                }
            )
        return {"stages": out}
    except (OSError, ValueError, KeyError) as exc:  # the UI may be off; the figure is optional
        return {"error": str(exc)}


# --- the naive baseline -----------------------------------------------------------------------

_BASELINE_SCHEMA = (
    "path string, sop_instance_uid string, metadata_json string, pixels binary, nonce binary, "
    "raw_pixel_bytes long, zlib_bytes long, encapsulated boolean, error string, "
    "t_parse double, t_json double, t_zlib double, t_aes double"
)


def _baseline_partition(batches):
    """mapInPandas body: pydicom parse, DICOM JSON without pixels, zlib-6, AES-256-GCM."""
    import io
    import os as _os
    import time as _time
    import warnings
    import zlib

    import pandas as pd
    import pydicom
    from cryptography.hazmat.primitives.ciphers.aead import AESGCM

    aead = AESGCM(AESGCM.generate_key(bit_length=256))  # one random key per partition
    for pdf in batches:
        out: dict[str, list[Any]] = defaultdict(list)
        for path, content in zip(pdf["path"], pdf["content"], strict=True):
            row: dict[str, Any] = dict.fromkeys(
                ("sop_instance_uid", "metadata_json", "pixels", "nonce", "error"), None
            )
            row.update(raw_pixel_bytes=0, zlib_bytes=0, encapsulated=False)
            t_parse = t_json = t_zlib = t_aes = 0.0
            try:
                t = _time.perf_counter()
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")
                    ds = pydicom.dcmread(io.BytesIO(content))
                    pixels = ds.get("PixelData")
                    pixels = bytes(pixels) if pixels is not None else b""
                    row["encapsulated"] = bool(ds.file_meta.TransferSyntaxUID.is_compressed)
                    if "PixelData" in ds:
                        del ds.PixelData
                    row["sop_instance_uid"] = str(ds.get("SOPInstanceUID", ""))
                t_parse = _time.perf_counter() - t
                t = _time.perf_counter()
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")
                    row["metadata_json"] = ds.to_json()
                t_json = _time.perf_counter() - t
                t = _time.perf_counter()
                packed = zlib.compress(pixels, 6)
                t_zlib = _time.perf_counter() - t
                t = _time.perf_counter()
                nonce = _os.urandom(12)
                row["pixels"] = aead.encrypt(nonce, packed, None)
                row["nonce"] = nonce
                t_aes = _time.perf_counter() - t
                row["raw_pixel_bytes"] = len(pixels)
                row["zlib_bytes"] = len(packed)
            except Exception as exc:  # the baseline records what it cannot read and goes on
                row["error"] = f"{type(exc).__name__}: {exc}"
            out["path"].append(path)
            for key, value in row.items():
                out[key].append(value)
            for key, value in (
                ("t_parse", t_parse),
                ("t_json", t_json),
                ("t_zlib", t_zlib),
                ("t_aes", t_aes),
            ):
                out[key].append(value)
        yield pd.DataFrame(out)


def run_baseline(landing: str, out: str, master: str, namenodes: str | None) -> dict[str, Any]:
    import pyarrow.compute as pc
    from pyspark.sql import SparkSession

    config, _, workers_seconds = _context(master, namenodes)
    spark = SparkSession.builder.getOrCreate()  # on dicomlake's context, with its settings
    cpu0, t0 = tree_cpu_seconds(), time.perf_counter()
    files = (
        spark.read.format("binaryFile")
        .option("recursiveFileLookup", "true")
        .load(landing)
        .select("path", "content")
    )
    files.mapInPandas(_baseline_partition, _BASELINE_SCHEMA).write.mode("overwrite").parquet(out)
    wall = time.perf_counter() - t0
    cpu = tree_cpu_seconds() - cpu0
    spark.stop()
    table = _parquet_columns(
        config,
        out,
        [
            "raw_pixel_bytes",
            "zlib_bytes",
            "encapsulated",
            "error",
            "t_parse",
            "t_json",
            "t_zlib",
            "t_aes",
        ],
    )
    ratios: dict[str, Any] = {}
    for label, rows in (
        ("all", table),
        ("native", table.filter(pc.invert(table["encapsulated"]))),
    ):
        raw = pc.sum(rows["raw_pixel_bytes"]).as_py() or 0
        stored = pc.sum(rows["zlib_bytes"]).as_py() or 0
        ratios[label] = {"raw": raw, "stored": stored, "ratio": raw / stored if stored else None}
    stages = {
        name: pc.sum(table[f"t_{name}"]).as_py() or 0.0 for name in ("parse", "json", "zlib", "aes")
    }
    bytes_read = _tree_bytes(config, landing)
    return {
        "contender": "baseline",
        "seconds": wall,
        "cpu_seconds_timed": cpu,
        "python_workers_seconds": workers_seconds,
        "files": table.num_rows,
        "errors": table.num_rows - pc.sum(pc.is_null(table["error"])).as_py(),
        "bytes_read": bytes_read,
        "pixels": ratios,
        "stage_seconds": stages,
    }


# --- profile of dicomlake's worker outside Spark ----------------------------------------------

# Functions whose cumulative time splits the worker's stages further (name -> label).
PROFILED = {
    ("dicomlake/storage/local.py", "read"): "read",
    ("dicomlake/dicom/split.py", "split_instance"): "parse: split_instance",
    ("dicomlake/dicom/header.py", "header_records"): "header (JSON, rows, de-id)",
    ("dicomlake/dicom/header.py", "_reference"): "  of which by pydicom (declined)",
    ("dicomlake/dicom/promote.py", "promoted_values"): "  of which promoted_values",
    ("dicomlake/dicom/deid.py", "deidentify"): "  of which deidentify",
    ("dicomlake/pixels/codecs.py", "encode"): "encode (incl. verify)",
    ("dicomlake/pixels/codecs.py", "decode"): "  of which verify decode",
    ("dicomlake/crypto/envelope.py", "seal"): "encrypt (AES-GCM seal)",
    ("dicomlake/pixels/pack.py", "_write"): "pack write",
    ("dicomlake/lake/parquet.py", "write_table"): "write: table fragments",
}


def run_profile(landing: str, out: str, megabytes: float) -> dict[str, Any]:
    """``process_task`` on the first ``megabytes`` of the landing zone, under cProfile."""
    from dicomlake.crypto.keyring import Keyring
    from dicomlake.ingest.worker import TaskContext, process_task
    from dicomlake.storage import filesystem_for

    config = _config("local[1]")
    listing = sorted(filesystem_for(landing, config.hdfs).list_files(landing))
    # Every k-th file, so the sample keeps the landing zone's mix.
    total = sum(f.size for f in listing)
    step = max(1, int(total / (megabytes * 1e6)))
    files = listing[::step]
    ctx = TaskContext(
        run_id="profile",
        lake=out,
        config=config,
        keyring=Keyring.generate().to_bytes(),
        started_ms=int(time.time() * 1000),
    )
    # A first task on a few files, not profiled: the imports and first calls a worker makes once
    # (codec libraries, Parquet) are not a stage of the ingest.
    process_task(1, 0, files[:4], landing, ctx, frozenset())
    profiler = cProfile.Profile()
    t0 = time.perf_counter()
    profiler.enable()
    result = process_task(0, 0, files, landing, ctx, frozenset())
    profiler.disable()
    wall = time.perf_counter() - t0
    stats = pstats.Stats(profiler)
    by_label: dict[str, float] = {}
    for (filename, _line, func), (_cc, _nc, _tt, cumulative, _callers) in stats.stats.items():
        for (suffix, name), label in PROFILED.items():
            if func == name and filename.endswith(suffix):
                by_label[label] = by_label.get(label, 0.0) + cumulative
    top = sorted(stats.stats.items(), key=lambda kv: -kv[1][2])[:15]
    return {
        "contender": "profile",
        "seconds": wall,
        "files": len(files),
        "bytes_read": result.bytes_read,
        "task_seconds": dict(result.seconds),
        "profiled_seconds": by_label,
        "top_self_seconds": [
            {
                "function": f"{Path(fn).name}:{line}:{func}",
                "self": tt,
                "cumulative": ct,
                "calls": nc,
            }
            for (fn, line, func), (_cc, nc, tt, ct, _callers) in top
        ],
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("contender", choices=("dicomlake", "baseline", "profile"))
    parser.add_argument("--landing", required=True)
    parser.add_argument("--out", required=True, help="lake / output directory (must not exist)")
    parser.add_argument("--result", required=True, help="where to write the result JSON")
    parser.add_argument("--master", default="local[2]")
    parser.add_argument("--mb", type=float, default=64.0, help="profile: MB of input to sample")
    parser.add_argument("--webhdfs", help="WebHDFS URL of the NameNode, for hdfs:// paths")
    parser.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="SECTION.KEY=VALUE",
        help="dicomlake: a config setting over conf/local.yaml, e.g. pixels.verify=false",
    )
    args = parser.parse_args(argv)
    landing, out = (p if "://" in p else os.path.abspath(p) for p in (args.landing, args.out))
    # hdfs.namenodes (YAML, here as JSON): the authority of each hdfs:// path -> --webhdfs
    namenodes = args.webhdfs and json.dumps(
        {urlsplit(p).netloc: args.webhdfs for p in (landing, out) if p.startswith("hdfs://")}
    )
    if args.contender == "dicomlake":
        result = run_dicomlake(landing, out, args.master, namenodes, args.set)
    elif args.contender == "baseline":
        result = run_baseline(landing, out, args.master, namenodes)
    else:
        result = run_profile(landing, out, args.mb)
    Path(args.result).write_text(json.dumps(result, indent=1, default=str))
    return 0


if __name__ == "__main__":
    from dicomlake.cli import exit_now

    exit_now(main())  # not sys.exit: see exit_now
