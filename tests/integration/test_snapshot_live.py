"""A live snapshot while an ingest or a maintenance commits during its walk restores a lake that
was once the lake: a run whole or not at all, every file its tables' logs name.

The walk is made to meet the other command at one place: the lake's listing goes on, directory
by directory, after the ingest or `maintain` ran to its end, so the places before were listed
before it and those after it after, as a long walk of a busy lake lists them.
"""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from deltalake import DeltaTable
from ingest_helpers import dangling_references, table
from pydicom.data import get_testdata_file

from dicomlake.backup import restore, take_snapshot
from dicomlake.config import LockConfig
from dicomlake.ingest.job import run_ingest
from dicomlake.lake.export import export_instances
from dicomlake.lake.lock import holding
from dicomlake.lake.maintain import maintain_lake
from dicomlake.storage.local import LocalFileSystem

FIRST = ["CT_small.dcm", "MR_small.dcm"]
SECOND = ["SC_rgb.dcm", "JPEG2000.dcm"]
# Where the walk is when the other command runs: the pixels and the first tables listed before
MEETS = "/tables/frames/"


def _landing(root: Path, names: list[str]) -> Path:
    root.mkdir(parents=True)
    for name in names:
        shutil.copy(get_testdata_file(name), root / name)
    return root


def _meeting(monkeypatch, lake: Path, other) -> list[bool]:
    """Make the walk of ``lake`` run ``other`` once, when it reaches `MEETS`."""
    real, ran = LocalFileSystem.list_entries, []

    def list_entries(fs, path, follow_symlinks=False):
        for info in real(fs, path, follow_symlinks):
            if path.rstrip("/") == str(lake) and MEETS in info.path and not ran:
                ran.append(True)
                other()
            yield info

    monkeypatch.setattr(LocalFileSystem, "list_entries", list_entries)
    return ran


def _restored(tmp_path: Path, lake: Path, config, keyring, name: str) -> Path:
    snap = take_snapshot(
        str(lake), str(tmp_path / f"backup-{name}"), "full", config=config, keyring=keyring
    )
    target = tmp_path / f"restored-{name}"
    restore(
        str(tmp_path / f"backup-{name}"),
        snap.snapshot_id,
        str(target),
        keyring=keyring,
        config=config,
    )
    return target


def _sha256s(folder: Path) -> set[str]:
    return {hashlib.sha256(p.read_bytes()).hexdigest() for p in folder.iterdir()}


def _exported(lake: Path, keyring, config, out: Path) -> set[str]:
    export_instances(str(lake), keyring, config, out, where="true")
    return _sha256s(out)


@pytest.fixture
def one_run(tmp_path, sc, config, keyring) -> tuple[Path, Path, Path]:
    """A lake of one run (of `FIRST`), that run's landing zone, and the next one's; the lake's
    path is one a URI would percent-encode."""
    lake = tmp_path / "lake #1 é"
    first = _landing(tmp_path / "first", FIRST)
    second = _landing(tmp_path / "second", SECOND)
    run_ingest(sc, str(first), str(lake), config, keyring)
    return lake, first, second


def test_a_run_committed_during_the_walk_is_in_the_snapshot_whole(
    tmp_path, sc, config, keyring, monkeypatch, one_run
):
    lake, first, second = one_run
    ran = _meeting(
        monkeypatch, lake, lambda: run_ingest(sc, str(second), str(lake), config, keyring)
    )
    restored = _restored(tmp_path, lake, config, keyring, "ingest")
    monkeypatch.undo()
    assert ran == [True]
    assert dangling_references(restored) == []
    # The run completed before the snapshot's cut: it is there, every file of it
    assert {r["run_id"] for r in table(restored, "runs").to_pylist()} == {
        r["run_id"] for r in table(lake, "runs").to_pylist()
    }
    for name in ("instances", "frames", "elements", "sources", "packs"):
        assert table(restored, name).num_rows == table(lake, name).num_rows, name
    landing = _sha256s(first) | _sha256s(second)
    assert _exported(restored, keyring, config, tmp_path / "out") == landing


def test_a_compaction_during_the_walk_leaves_a_readable_snapshot(
    tmp_path, sc, config, keyring, monkeypatch
):
    lake = tmp_path / "lake"
    for n, names in enumerate((FIRST, SECOND)):  # two runs: files for compaction to merge
        run_ingest(sc, str(_landing(tmp_path / f"landing-{n}", names)), str(lake), config, keyring)

    def maintain() -> None:
        with holding(LocalFileSystem(), str(lake), None, "maintain", LockConfig()) as lock:
            maintain_lake(str(lake), config, lock)

    tables = ("instances", "frames", "elements", "sources", "packs", "runs")
    before = {n: DeltaTable(str(lake / "tables" / n)).version() for n in tables}
    ran = _meeting(monkeypatch, lake, maintain)
    restored = _restored(tmp_path, lake, config, keyring, "maintain")
    monkeypatch.undo()
    assert ran == [True]
    after = {n: DeltaTable(str(lake / "tables" / n)).version() for n in tables}
    assert any(after[n] > before[n] for n in tables), after  # a compaction was committed
    assert dangling_references(restored) == []
    for name in tables:
        assert table(restored, name).num_rows == table(lake, name).num_rows, name
    landing = _sha256s(tmp_path / "landing-0") | _sha256s(tmp_path / "landing-1")
    assert _exported(restored, keyring, config, tmp_path / "out") == landing


def test_a_run_stopped_mid_commit_during_the_walk_is_left_out_whole(
    tmp_path, sc, config, keyring, monkeypatch, one_run
):
    lake, first, second = one_run
    before = {n: table(lake, n).num_rows for n in ("instances", "frames", "sources", "runs")}
    real, made = DeltaTable.create_write_transaction, []

    def dies_after_two(self, *args, **kwargs):  # the process dies between two table commits
        real(self, *args, **kwargs)
        made.append(self.table_uri)
        if len(made) == 2:
            raise KeyboardInterrupt("killed")

    def stopped_run() -> None:
        with monkeypatch.context() as m:
            m.setattr(DeltaTable, "create_write_transaction", dies_after_two)
            with pytest.raises(KeyboardInterrupt):
                run_ingest(sc, str(second), str(lake), config, keyring)

    ran = _meeting(monkeypatch, lake, stopped_run)
    restored = _restored(tmp_path, lake, config, keyring, "stopped")
    monkeypatch.undo()
    assert ran == [True] and len(made) == 2
    assert dangling_references(restored) == []
    for name, rows in before.items():  # the lake before the stopped run
        assert table(restored, name).num_rows == rows, name
    assert _exported(restored, keyring, config, tmp_path / "out") == _sha256s(first)


@pytest.mark.parametrize(
    "named", ["../../pixels/planted.parquet", "part-lost.parquet", "PLANTED_ABSOLUTE"]
)
def test_a_log_naming_what_its_table_cannot_hold_is_copied_as_walked(
    tmp_path, config, keyring, one_run, caplog, named
):
    """A log is lake content like any other: a commit naming a file that climbs out of its
    table, or one that is gone (a damaged lake), leaves the table as walked, with a warning;
    the snapshot is taken, and no manifest path leaves the lake."""
    lake, _, _ = one_run
    planted = lake / "pixels" / "planted.parquet"
    planted.write_bytes(b"not the table's")
    named = planted.as_uri() if named == "PLANTED_ABSOLUTE" else named  # Delta allows URIs
    log_dir = lake / "tables" / "sources" / "_delta_log"
    walked = {str(p.relative_to(lake)) for p in (lake / "tables" / "sources").rglob("*")}
    version = max(int(p.name[:20]) for p in log_dir.glob("*.json")) + 1
    add = {"path": named, "partitionValues": {}, "size": 15, "modificationTime": 0}
    commit = [{"commitInfo": {"operation": "WRITE"}}, {"add": {**add, "dataChange": True}}]
    (log_dir / f"{version:020d}.json").write_text("\n".join(json.dumps(a) for a in commit))
    backup = tmp_path / "backup"
    snap = take_snapshot(str(lake), str(backup), "full", config=config, keyring=keyring)
    paths = set(
        pq.read_table(backup / "manifests" / f"{snap.snapshot_id}.parquet")["path"].to_pylist()
    )
    assert all(".." not in p.split("/") for p in paths)
    assert "pixels/planted.parquet" in paths  # a file of the lake, walked
    sources = {p for p in paths if p.startswith("tables/sources/")}
    assert sources == {p for p in walked if (lake / p).is_file()} | {
        f"tables/sources/_delta_log/{version:020d}.json"
    }
    assert "table sources is copied as walked" in caplog.text
