"""Ingest on the real stack: spark-submit to a standalone cluster, hdfs:// landing to hdfs:// lake.

The same guarantees as the local tests: every landing file accounted for once, tables readable
(by Spark and by deltalake from hdfs://), every instance exported byte for byte.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import re
import subprocess
import time
import uuid
from collections import Counter
from pathlib import Path

import pyarrow as pa
import pytest
from deltalake import DeltaTable
from ingest_helpers import with_paths

from dicomlake.config import load_config
from dicomlake.crypto.keyring import Keyring
from dicomlake.keyring_file import save_keyring
from dicomlake.lake.export import export_instances, version_key
from dicomlake.samples import build_sample_landing
from dicomlake.storage.hdfs import WebHdfsFileSystem

pytestmark = [pytest.mark.hdfs, pytest.mark.cluster, pytest.mark.slow]

JOB = Path(__file__).resolve().parents[2] / "jobs" / "ingest.py"
REGISTER = JOB.with_name("register.py")
APPS = Path(__file__).resolve().parent / "apps"
TABLES = ["instances", "frames", "elements", "errors", "sources", "runs", "packs"]


def _upload(fs: WebHdfsFileSystem, local: Path, uri: str) -> dict[str, Path]:
    """Copy a local tree to HDFS; the HDFS URI of each file -> its local original."""
    out = {}
    for path in sorted(local.rglob("*")):
        if path.is_file():
            target = f"{uri}/{path.relative_to(local).as_posix()}"
            fs.write_bytes(target, path.read_bytes())
            out[target] = path
    return out


def _table(lake: str, name: str) -> pa.Table:
    """A table as ``deltalake`` reads it through its log, over HDFS RPC."""
    return DeltaTable(f"{lake}/tables/{name}").to_pyarrow_table()


class Stack:
    def __init__(self, hdfs_cluster, spark_cluster, tmp: Path) -> None:
        self.hdfs, self.spark = hdfs_cluster, spark_cluster
        self.fs = WebHdfsFileSystem(hdfs_cluster.hdfs_config)
        self.root = f"{hdfs_cluster.uri}/cluster-tests/{uuid.uuid4().hex}"
        self.conf = tmp / "cluster.yaml"
        # Small tasks and packs, so this small corpus still makes several of each.
        self.conf.write_text(
            f"hdfs:\n  namenodes:\n    {hdfs_cluster.authority!r}: {hdfs_cluster.webhdfs_url}\n"
            "ingest:\n  task_bytes: 40000000\npixels:\n  pack_bytes: 16000000\n"
            # A job that dies with HDFS down cannot remove its lock: it goes stale quickly
            "lock:\n  stale_seconds: 2\n  heartbeat_seconds: 0.5\n"
        )
        self.config = load_config(self.conf, env={})
        self.keyring = Keyring.generate()
        self.keyring_path = tmp / "keyring.json"
        save_keyring(str(self.keyring_path), self.keyring, self.config)

    def ingest_command(self, landing: str, lake: str) -> tuple[list[str], dict[str, str]]:
        return self.spark.submit_command(
            JOB,
            "--conf",
            str(self.conf),
            "--landing",
            landing,
            "--lake",
            lake,
            "--keyring",
            str(self.keyring_path),
        )

    def ingest(self, landing: str, lake: str) -> dict:
        cmd, env = self.ingest_command(landing, lake)
        proc = subprocess.run(
            cmd, env=env, cwd=self.spark.workdir, capture_output=True, text=True, timeout=900
        )
        # The driver's log goes to stdout (spark-submit merges its stderr into it)
        assert proc.returncode == 0, (proc.stdout[-4000:], proc.stderr[-2000:])
        return json.loads(proc.stdout.strip().splitlines()[-1])


@pytest.fixture(scope="module")
def stack(hdfs_cluster, spark_cluster, tmp_path_factory):
    return Stack(hdfs_cluster, spark_cluster, tmp_path_factory.mktemp("stack"))


@pytest.fixture(scope="module")
def hdfs_lake(stack, tmp_path_factory):
    local = tmp_path_factory.mktemp("landing")
    build_sample_landing(local)
    landing, lake = f"{stack.root}/landing", f"{stack.root}/lake"
    files = _upload(stack.fs, local, landing)
    summary = stack.ingest(landing, lake)
    return files, lake, summary


def test_every_hdfs_landing_file_is_accounted_for_once(stack, hdfs_lake):
    files, lake, summary = hdfs_lake
    sources = with_paths(_table(lake, "sources").to_pylist(), stack.keyring, files)
    assert sorted(r["source_path"] for r in sources) == sorted(files)
    outcomes = {r["source_path"]: r["outcome"] for r in sources}
    instances = with_paths(_table(lake, "instances").to_pylist(), stack.keyring, files)
    errors = with_paths(_table(lake, "errors").to_pylist(), stack.keyring, files)
    assert sorted(r["source_path"] for r in instances) == sorted(
        p for p, o in outcomes.items() if o == "ingested"
    )
    assert sorted(r["source_path"] for r in errors) == sorted(
        p for p, o in outcomes.items() if o == "quarantined"
    )
    for row in instances:
        assert (
            row["source_sha256"]
            == hashlib.sha256(files[row["source_path"]].read_bytes()).hexdigest()
        )
    assert (
        summary["files_seen"]
        == len(files)
        == summary["ingested"] + summary["duplicates"] + summary["quarantined"]
    )


def test_spark_reads_the_tables_from_hdfs(spark, hdfs_lake):
    _, lake, summary = hdfs_lake
    instances = spark.read.format("delta").load(f"{lake}/tables/instances")
    assert instances.count() == summary["ingested"]
    modalities = {r["Modality"] for r in instances.select("Modality").distinct().collect()}
    assert "CT" in modalities and "MR" in modalities
    frames = spark.read.format("delta").load(f"{lake}/tables/frames")
    assert frames.where("chunk_kind = 'prefix'").count() == summary["ingested"]


def test_tables_registered_in_a_catalog_are_queried_by_name(
    stack, hdfs_lake, delta_spark, tmp_path
):
    """`jobs/register.py` on the cluster names the tables in a Hive metastore; another
    application finds them there by name and reads them with Spark SQL."""
    _, lake, summary = hdfs_lake
    conf = {
        **delta_spark,
        "spark.sql.catalogImplementation": "hive",
        "spark.hadoop.javax.jdo.option.ConnectionURL": (
            f"jdbc:derby:;databaseName={tmp_path / 'metastore_db'};create=true"
        ),
        "spark.sql.warehouse.dir": str(tmp_path / "warehouse"),
    }
    register = stack.spark.spark_submit(
        REGISTER, "--conf", str(stack.conf), "--lake", lake, "--database", "imaging", conf=conf
    )
    assert register.returncode == 0, register.stderr[-4000:]
    registered = json.loads(register.stdout.strip().splitlines()[-1])
    assert registered["tables"] == [f"imaging.{t}" for t in TABLES]

    query = stack.spark.spark_submit(APPS / "catalog_query.py", "imaging", conf=conf)
    assert query.returncode == 0, query.stderr[-4000:]
    result = json.loads(next(x for x in query.stdout.splitlines() if x.startswith("RESULT "))[7:])
    assert result["counts"] == {t: _table(lake, t).num_rows for t in TABLES}
    assert result["counts"]["instances"] == summary["ingested"]
    instances = _table(lake, "instances").to_pylist()
    expected = Counter(r["Modality"] for r in instances)
    assert sorted(map(tuple, result["modalities"]), key=str) == sorted(expected.items(), key=str)


def test_every_instance_exports_byte_exact_from_hdfs(stack, hdfs_lake, tmp_path):
    files, lake, _ = hdfs_lake
    instances = _table(lake, "instances").to_pylist()
    originals = {hashlib.sha256(p.read_bytes()).hexdigest() for p in files.values()}
    exported = set()
    studies = sorted({r["StudyInstanceUID"] for r in instances if r["StudyInstanceUID"]})
    selections = [{"study": s} for s in studies] + [
        {"sop": r["SOPInstanceUID"]} for r in instances if not r["StudyInstanceUID"]
    ]
    for n, selection in enumerate(selections):
        out = tmp_path / str(n)
        export_instances(lake, stack.keyring, stack.config, out, **selection)
        exported |= {hashlib.sha256(p.read_bytes()).hexdigest() for p in out.iterdir()}
    # Every stored version of every SOP UID that is the latest comes back as an original file.
    latest = {r["SOPInstanceUID"]: r["source_sha256"] for r in sorted(instances, key=version_key)}
    assert set(latest.values()) <= exported <= originals


def test_few_large_files_on_hdfs(stack, hdfs_lake):
    _, lake, summary = hdfs_lake
    packs = [f for f in stack.fs.list_files(f"{lake}/pixels") if f.path.endswith(".pack")]
    pack_bytes = stack.config.pixels.pack_bytes
    assert all(f.size <= pack_bytes for f in packs)
    # A task starts a new pack only when the next file (a streamed file: its next chunk) would
    # not fit in the open one, so no two consecutive packs of a task could have been one.
    frames = _table(lake, "frames").to_pylist()
    source_size = {
        r["instance_id"]: r["source_size"] for r in _table(lake, "instances").to_pylist()
    }
    first: dict[str, dict] = {}
    for row in frames:
        name = row["pack_path"].rsplit("/", 1)[-1]
        if name not in first or row["offset"] < first[name]["offset"]:
            first[name] = row
    by_task: dict[str, list] = {}
    for f in packs:
        task, seq = re.search(r"-(t\d+-a\d+)-(\d+)\.pack$", f.path).groups()
        by_task.setdefault(task, []).append((int(seq), f))
    for task_packs in by_task.values():
        ordered = [f for _, f in sorted(task_packs)]
        for closed, opened in itertools.pairwise(ordered):
            chunk = first[opened.path.rsplit("/", 1)[-1]]
            incoming = (
                source_size[chunk["instance_id"]]
                if chunk["chunk_kind"] == "prefix"
                else chunk["raw_length"]
            )
            assert closed.size + incoming > pack_bytes, (closed.path, closed.size, incoming)
    # Pixel bytes live in the packs, not in small files.
    assert sum(f.size for f in packs) >= 0.9 * summary["bytes_stored"]


def test_datanode_stopped_mid_job_then_rerun_loses_and_doubles_nothing(stack, tmp_path):
    local = tmp_path / "landing"
    build_sample_landing(local)
    landing, lake = f"{stack.root}/dn-landing", f"{stack.root}/dn-lake"
    files = _upload(stack.fs, local, landing)
    cmd, env = stack.ingest_command(landing, lake)
    proc = subprocess.Popen(
        cmd,
        env=env,
        cwd=stack.spark.workdir,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        deadline = time.monotonic() + 300
        while not stack.fs.exists(f"{lake}/_staging") and proc.poll() is None:
            assert time.monotonic() < deadline, "the job never started writing"
            time.sleep(0.2)
        stack.hdfs.stop_datanode()
        out, err = proc.communicate(timeout=600)
    finally:
        if proc.poll() is None:
            proc.kill()
        stack.hdfs.start_datanode()
    if proc.returncode != 0:  # failed cleanly: a message, not a stack trace, and no commit
        # The driver's log (spark-submit merges its stderr into stdout) says why
        assert "the Spark job failed" in out or "cannot" in out, (out[-3000:], err[-3000:])
        assert not stack.fs.exists(f"{lake}/tables/runs")
        # Its lock, left while the DataNode was down, is taken over once stale
        time.sleep(stack.config.lock.stale_seconds + 0.5)
    summary = stack.ingest(landing, lake)
    sources = with_paths(_table(lake, "sources").to_pylist(), stack.keyring, files)
    assert sorted(r["source_path"] for r in sources) == sorted(files)
    instances = _table(lake, "instances").to_pylist()
    assert len(instances) == len({r["source_sha256"] for r in instances})
    runs = _table(lake, "runs").to_pylist()
    assert sum(r["files_seen"] for r in runs) == len(files)
    assert summary["files_seen"] == (len(files) if proc.returncode != 0 else 0)
