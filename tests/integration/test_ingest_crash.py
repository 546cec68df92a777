"""A run killed with SIGKILL leaves nothing visible; a run killed between its tables' commits
never shows an instance without what it refers to; the next run accounts for each file once. A
damaged table stops a run before it does any work."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import time
from pathlib import Path

import pytest
from ingest_helpers import dangling_references, ingest_command, landing_files, table, with_paths
from test_commit import dies_after

from dicomlake.config import load_config
from dicomlake.crypto.keyring import Keyring
from dicomlake.errors import LakeError
from dicomlake.ingest.job import run_ingest
from dicomlake.keyring_file import save_keyring
from dicomlake.lake.commit import recover
from dicomlake.lake.layout import LakeLayout
from dicomlake.lake.lock import holding
from dicomlake.samples import sample_files
from dicomlake.storage.local import LocalFileSystem

pytestmark = [pytest.mark.spark, pytest.mark.slow]


def _visible_rows(lake: Path) -> dict[str, int]:
    return {
        name: table(lake, name).num_rows
        for name in ("instances", "frames", "elements", "errors", "sources", "runs")
    }


def _wait_for(predicate, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.05)
    return False


def test_kill_mid_run_then_rerun(tmp_path, sc):
    config = load_config()  # a lock goes stale after 600 s
    landing, lake = tmp_path / "landing", tmp_path / "lake"
    for name, src in sample_files()[:80]:
        target = landing / name
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(src, target)
    keyring = Keyring.generate("symmetric")
    keyring_path = tmp_path / "keyring.json"
    save_keyring(str(keyring_path), keyring, config)
    env = {
        **os.environ,
        "DICOMLAKE_SPARK_MASTER": "local[1]",
        # Small tasks and packs so the run is mid-write for a while.
        "DICOMLAKE_INGEST_TASK_BYTES": "1000000",
        "DICOMLAKE_PIXELS_PACK_BYTES": "1000000",
    }
    proc = subprocess.Popen(
        ingest_command(landing, lake, keyring_path),
        env=env,
        start_new_session=True,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    try:
        # Kill once a task has staged a pack: the run is writing but has not committed.
        staged = lambda: any((lake / "_staging").rglob("*.pack"))  # noqa: E731
        assert _wait_for(staged, 240), proc.stderr.read().decode() if proc.poll() else "no pack"
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    # No wait: the killed run's process is gone, so the next run takes its lock over at once
    assert not (lake / "_commits").exists() or not any((lake / "_commits").iterdir())
    assert all(n == 0 for n in _visible_rows(lake).values()), _visible_rows(lake)
    assert not list(lake.glob("pixels/**/*.pack"))

    summary = run_ingest(sc, str(landing), str(lake), config, keyring)
    files = landing_files(landing)
    assert summary.files_seen == len(files)
    sources = with_paths(table(lake, "sources").to_pylist(), keyring, files)
    assert sorted(r["source_path"] for r in sources) == sorted(files)
    # The new run leaves no staging behind. (Python workers of the killed run live in their own
    # process group and may still write into its discarded staging area for a moment: that is
    # never committed, and the next run clears it.)
    assert not (lake / "_staging" / summary.run_id).exists()
    instances = table(lake, "instances").to_pylist()
    assert len({r["source_path_id"] for r in instances}) == len(instances) == summary.ingested
    # Every frame row points into a published pack.
    for row in table(lake, "frames").to_pylist():
        assert (lake / row["pack_path"]).exists()


def _land(landing: Path, files: list[tuple[str, Path]]) -> None:
    for name, src in files:
        target = landing / name
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(src, target)


def test_a_run_killed_between_its_table_commits_never_shows_an_instance_in_part(
    tmp_path, sc, config, keyring, monkeypatch
):
    landing, lake = tmp_path / "landing", tmp_path / "lake"
    _land(landing, sample_files()[:6])
    dies_after(monkeypatch, 1)
    with pytest.raises(KeyboardInterrupt):
        run_ingest(sc, str(landing), str(lake), config, keyring)
    monkeypatch.undo()
    assert dangling_references(lake) == []
    (intent,) = (lake / "_commits").iterdir()
    killed = intent.stem
    # Each roll-forward dies after one more table's commit, until one finds none left.
    fs, layout = LocalFileSystem(), LakeLayout(str(lake))
    for _ in range(7):
        dies_after(monkeypatch, 1)
        try:
            with holding(fs, str(lake), None, "test", config.lock) as lock:
                recover(fs, layout, lock)
            break
        except KeyboardInterrupt:
            assert dangling_references(lake) == []
        finally:
            monkeypatch.undo()
    assert not (lake / "_commits").exists() or not any((lake / "_commits").iterdir())

    summary = run_ingest(sc, str(landing), str(lake), config, keyring)
    assert summary.files_seen == 0  # the killed run holds every file
    assert dangling_references(lake) == []
    assert table(lake, "runs")["run_id"].to_pylist() == [killed]
    sources = table(lake, "sources").to_pylist()
    ingested = {r["instance_id"] for r in sources if r["outcome"] == "ingested"}
    assert sorted(table(lake, "instances")["instance_id"].to_pylist()) == sorted(ingested)


def test_a_damaged_table_log_stops_the_next_run_before_any_work(tmp_path, sc, config, keyring):
    """(A data file gone is maintenance's to find: it checks every file, an ingest only the
    logs, which costs a stat per file of the lake.)"""
    landing, lake = tmp_path / "landing", tmp_path / "lake"
    _land(landing, sample_files()[:3])
    run_ingest(sc, str(landing), str(lake), config, keyring)
    frames = lake / "tables" / "frames"
    named = frames / "_delta_log" / f"{1:020d}.json"
    named.write_bytes(named.read_bytes()[:-20])
    versions = {p.name: len(list((p / "_delta_log").glob("*.json"))) for p in lake.glob("tables/*")}
    packs = set(lake.glob("pixels/*"))

    _land(landing, sample_files()[3:6])
    with pytest.raises(LakeError, match=f"{frames}: .*{named.name}"):
        run_ingest(sc, str(landing), str(lake), config, keyring)
    assert not (lake / "_staging").exists() or not any((lake / "_staging").iterdir())
    assert set(lake.glob("pixels/*")) == packs
    assert {
        p.name: len(list((p / "_delta_log").glob("*.json"))) for p in lake.glob("tables/*")
    } == versions
