"""One writer at a time with real commands: two `dicomlake ingest` on one lake, and the lock on
the real HDFS taken by real processes."""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time

import pytest
from ingest_helpers import ingest_command, landing_files, table, with_paths
from snapshot_helpers import make_lake

from dicomlake.crypto.keyring import Keyring
from dicomlake.keyring_file import save_keyring
from dicomlake.samples import sample_files
from dicomlake.storage.hdfs import WebHdfsFileSystem
from lock_helpers import first_line, kill, start_takers, start_together, wait_all

SNAPSHOT = [sys.executable, "-m", "dicomlake.cli", "snapshot"]


def _landing(tmp_path, count: int):
    landing = tmp_path / "landing"
    for name, src in sample_files()[:count]:
        target = landing / name
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(src, target)
    return landing


def _ingest(landing, lake, keyring_path, **env):
    return subprocess.Popen(
        ingest_command(landing, lake, keyring_path),
        env={**os.environ, "DICOMLAKE_SPARK_MASTER": "local[1]", **env},
        start_new_session=True,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


@pytest.mark.spark
@pytest.mark.slow
def test_two_ingests_started_together_store_each_file_once(tmp_path, config):
    landing, lake = _landing(tmp_path, 30), tmp_path / "lake"
    keyring_path = tmp_path / "keyring.json"
    keyring = Keyring.generate("symmetric")
    save_keyring(str(keyring_path), keyring, config)

    procs = [_ingest(landing, lake, keyring_path) for _ in range(2)]
    outs = [p.communicate(timeout=600) for p in procs]
    codes = sorted(p.returncode for p in procs)
    assert codes == [0, 4], outs
    busy = outs[[p.returncode for p in procs].index(4)]
    assert "is busy: locked by run" in busy[1] and "(ingest on" in busy[1]
    files = landing_files(landing)
    sources = with_paths(table(lake, "sources").to_pylist(), keyring, files)
    assert sorted(r["source_path"] for r in sources) == sorted(files)
    assert table(lake, "runs").num_rows == 1

    # Staggered: the second starts while the first is mid-run (stopped once it has staged a
    # pack), finds the lake busy and leaves the first's staging area alone.
    more = _landing(tmp_path / "more", 60)
    first = _ingest(
        more,
        lake,
        keyring_path,
        DICOMLAKE_INGEST_TASK_BYTES="200000",
        DICOMLAKE_PIXELS_PACK_BYTES="200000",
    )
    staging = lake / "_staging"
    deadline = time.monotonic() + 300
    while not any(staging.rglob("*.pack")) and time.monotonic() < deadline:
        assert first.poll() is None, first.communicate()
        time.sleep(0.02)
    os.killpg(first.pid, signal.SIGSTOP)
    try:
        staged = sorted(p.relative_to(lake) for p in staging.rglob("*.pack"))
        second = _ingest(more, lake, keyring_path)
        out2 = second.communicate(timeout=600)
        assert second.returncode == 4, out2
        assert set(staged) <= {p.relative_to(lake) for p in staging.rglob("*.pack")}
    finally:
        os.killpg(first.pid, signal.SIGCONT)
    out1 = first.communicate(timeout=600)
    assert first.returncode == 0, out1
    assert table(lake, "runs").num_rows == 2
    sources = table(lake, "sources").to_pylist()
    assert len(sources) == len(files) + len(landing_files(more))
    assert not any(staging.iterdir())


@pytest.mark.hdfs
@pytest.mark.spark
@pytest.mark.slow
def test_two_ingests_into_an_hdfs_lake_started_together(hdfs_cluster, hdfs_root, tmp_path, config):
    landing, lake = _landing(tmp_path, 20), f"{hdfs_root}/lake"
    keyring_path = tmp_path / "keyring.json"
    save_keyring(str(keyring_path), Keyring.generate("symmetric"), config)
    webhdfs = {
        "DICOMLAKE_HDFS_NAMENODES": f"{{'{hdfs_cluster.authority}': {hdfs_cluster.webhdfs_url}}}"
    }
    procs = [_ingest(landing, lake, keyring_path, **webhdfs) for _ in range(2)]
    outs = [p.communicate(timeout=600) for p in procs]
    assert sorted(p.returncode for p in procs) == [0, 4], outs
    fs = WebHdfsFileSystem(hdfs_cluster.hdfs_config)
    runs = [f for f in fs.list_files(f"{lake}/tables/runs") if f.path.endswith(".parquet")]
    assert len(runs) == 1
    sources = [f for f in fs.list_files(f"{lake}/tables/sources") if f.path.endswith(".parquet")]
    assert len(sources) == 1
    summary = json.loads(outs[[p.returncode for p in procs].index(0)][0].splitlines()[-1])
    assert summary["files_seen"] == len(landing_files(landing))
    assert not fs.exists(f"{lake}/_lock")


@pytest.mark.hdfs
def test_the_lock_on_hdfs_one_of_many_and_stale_takeover(hdfs_cluster, hdfs_root, tmp_path):
    fs = WebHdfsFileSystem(hdfs_cluster.hdfs_config)
    lake, start, webhdfs = f"{hdfs_root}/lake", tmp_path / "go", hdfs_cluster.webhdfs_url
    procs = start_takers(lake, start, 4, hold=2.0, webhdfs=webhdfs)
    start_together(start, procs)
    codes = wait_all(procs)
    assert sorted(codes) == [0, 4, 4, 4], [p.stderr.read() for p in procs]
    assert not fs.exists(f"{lake}/_lock")

    (holder,) = start_takers(lake, start, 1, hold=60, stale=2.0, heartbeat=0.5, webhdfs=webhdfs)
    dead = first_line(holder)["held"]
    assert json.loads(fs.read(f"{lake}/_lock"))["run_id"] == dead
    kill(holder)
    # As if it had run on another machine: only its heartbeat's age tells it is dead
    record = json.loads(fs.read(f"{lake}/_lock"))
    record["process"]["boot_id"] = "another-machine"
    fs.write_bytes(f"{lake}/_lock", json.dumps(record).encode())
    assert wait_all(
        start_takers(lake, start, 1, hold=0, stale=2.0, heartbeat=0.5, webhdfs=webhdfs)
    ) == [4]
    time.sleep(2.5)
    again = tmp_path / "go-again"  # four at once, again
    # The winner holds longer than a loser's rounds of trying (a new file takes ~0.4 s to
    # close on HDFS): one that outlasted it would take the lock after it, as it may
    takers = start_takers(lake, again, 4, hold=4.0, stale=2.0, heartbeat=0.5, webhdfs=webhdfs)
    start_together(again, takers)
    codes = wait_all(takers)
    assert sorted(codes) == [0, 4, 4, 4], [p.stderr.read() for p in takers]
    logs = [p.stderr.read() for p in takers]
    taken = f"taking over the stale lock of run {dead} .*: no heartbeat for"
    assert sum(bool(re.search(taken, log)) for log in logs) == 1, logs
    assert not fs.exists(f"{lake}/_lock")
    assert list(fs.list_files(f"{lake}/_locks")) == []


@pytest.mark.spark
@pytest.mark.slow
def test_a_snapshot_while_another_holds_the_backup(tmp_path, config):
    lake, backup = tmp_path / "lake", tmp_path / "backup"
    make_lake(lake)
    keyring_path = tmp_path / "keyring.json"
    save_keyring(str(keyring_path), Keyring.generate("symmetric"), config)

    def snapshot(label: str) -> subprocess.Popen:
        return subprocess.Popen(
            [
                *SNAPSHOT,
                *("--lake", str(lake), "--backup", str(backup), "--mode", "full"),
                *("--label", label, "--keyring", str(keyring_path)),
            ],
            env={**os.environ, "DICOMLAKE_SPARK_MASTER": "local[1]"},
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            start_new_session=True,
        )

    first = snapshot("20261101T010000Z")
    deadline = time.monotonic() + 300
    while not (backup / "_lock").exists() and time.monotonic() < deadline:
        assert first.poll() is None, first.communicate()
        time.sleep(0.005)
    os.killpg(first.pid, signal.SIGSTOP)  # mid-snapshot, holding the lock
    try:
        second = snapshot("20261102T010000Z")
        out2 = second.communicate(timeout=600)
        assert second.returncode == 4, out2
        assert "is busy: locked by run" in out2[1] and "(snapshot on" in out2[1]
    finally:
        os.killpg(first.pid, signal.SIGCONT)
    out1 = first.communicate(timeout=600)
    assert first.returncode == 0, out1
    assert [p.name for p in (backup / "manifests").glob("*.parquet")] == [
        "20261101T010000Z-full.parquet"
    ]
    assert not (backup / "_lock").exists()
