"""Reading the lake's Delta tables as of a version or a time, damaged tables, and the settings of
their upkeep."""

from __future__ import annotations

import os
import shutil
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from deltalake import DeltaTable
from ingest_helpers import date_back_removals
from test_commit import _commit, _stage

from dicomlake.cli import main
from dicomlake.config import load_config
from dicomlake.errors import ConfigError, LakeError
from dicomlake.lake import delta, delta_read
from dicomlake.lake.layout import TABLES, LakeLayout
from dicomlake.lake.lock import holding
from dicomlake.lake.maintain import maintain_lake
from dicomlake.storage.local import LocalFileSystem


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("0", 0),
        ("12", 12),
        ("2026-11-28T00:00:00Z", datetime(2026, 11, 28, tzinfo=timezone.utc)),
        ("2026-11-28T01:30:00+01:00", datetime(2026, 11, 28, 0, 30, tzinfo=timezone.utc)),
        ("2026-11-28", datetime(2026, 11, 28, tzinfo=timezone.utc)),  # no zone: UTC
        ("20261128T013000Z", datetime(2026, 11, 28, 1, 30, tzinfo=timezone.utc)),  # basic format
    ],
)
def test_as_of_is_a_version_or_a_time(text, expected):
    assert delta_read.parse_as_of(text) == expected


@pytest.mark.parametrize(
    "text", ["-1", "yesterday", "2026-13-01", "", "１２", "٣", "²", "２０２６-１２-０７", "12 "]
)
def test_a_bad_as_of_names_the_value(text):
    with pytest.raises(ConfigError, match=f"--as-of {text!r} is neither"):
        delta_read.parse_as_of(text)


def test_digits_that_are_also_a_date_are_refused_naming_both_readings():
    with pytest.raises(
        ConfigError, match=r"'20261207' is ambiguous: table version 20261207 or the date 2026-12-07"
    ):
        delta_read.parse_as_of("20261207")


def test_snapshots_as_of_versions_and_times(tmp_path):
    fs, layout = LocalFileSystem(), LakeLayout(str(tmp_path))
    before_all = datetime.now(timezone.utc) - timedelta(seconds=1)
    times = []
    for run in ("r1", "r2", "r3"):
        _commit(fs, layout, run, _stage(fs, layout, run))
        times.append(datetime.now(timezone.utc))
        time.sleep(0.05)

    def runs(as_of):
        return sorted(
            delta_read.read_snapshot(fs, layout, "runs", ["run_id"], as_of)["run_id"].to_pylist()
        )

    assert runs(None) == ["r1", "r2", "r3"]
    assert runs(1) == ["r1"]  # version 0 created the table, each run added one
    assert runs(2) == ["r1", "r2"]
    assert runs(times[1]) == ["r1", "r2"]
    assert runs(times[0]) == ["r1"]
    assert runs(before_all) == []  # the table did not exist yet
    # Columns a table does not have read as null; the rows are cast to the lake's schema.
    got = delta_read.read_snapshot(fs, layout, "sources", as_of=1)
    assert got.schema == delta.schemas.SOURCES
    assert got.num_rows == 2


def test_times_resolve_by_the_commit_times_in_the_log_not_by_file_mtimes(tmp_path):
    fs, lake = LocalFileSystem(), tmp_path / "lake"
    between = {}  # a time after each run's commit, and the runs committed by then
    for n, run in enumerate(("r1", "r2", "r3"), 1):
        _commit(fs, LakeLayout(str(lake)), run, _stage(fs, LakeLayout(str(lake)), run))
        time.sleep(0.05)
        between[datetime.now(timezone.utc)] = [f"r{i}" for i in range(1, n + 1)]
        time.sleep(0.05)
    # A copy (a restore, a move) gives every file a new modification time.
    copy = tmp_path / "copy"
    shutil.copytree(lake, copy)
    for path in copy.rglob("*"):
        os.utime(path)

    for root in (lake, copy):
        for when, runs in between.items():
            got = delta_read.read_snapshot(fs, LakeLayout(str(root)), "runs", ["run_id"], when)
            assert sorted(got["run_id"].to_pylist()) == runs, (root, when)


def test_a_version_past_the_latest_is_a_lake_error_naming_the_latest(tmp_path):
    fs, layout = LocalFileSystem(), LakeLayout(str(tmp_path))
    _commit(fs, layout, "r1", _stage(fs, layout, "r1"))
    with pytest.raises(LakeError, match=r"tables/runs has no version 99: the latest is 1"):
        delta_read.read_snapshot(fs, layout, "runs", as_of=99)


def _versions(root: Path) -> dict[str, int]:
    return {name: DeltaTable(str(root / "tables" / name)).version() for name in TABLES}


def test_a_data_file_missing_from_the_latest_version_is_named_and_stops_writers(tmp_path, caplog):
    fs, layout = LocalFileSystem(), LakeLayout(str(tmp_path))
    for run in ("r1", "r2"):
        _commit(fs, layout, run, _stage(fs, layout, run))
    gone = tmp_path / "tables" / "sources" / "part-r1-t1.parquet"
    gone.unlink()
    versions = _versions(tmp_path)

    for reading in (
        lambda: delta_read.read_snapshot(fs, layout, "sources"),
        lambda: delta_read.require_readable(fs, layout),  # what maintain does first
    ):
        with pytest.raises(LakeError) as caught:
            reading()
        message = str(caught.value)
        assert f"{tmp_path}/tables/sources: {gone}, which version 2 of its log holds" in message
        assert "vacuum" not in message and "retention" not in message

    assert main(["maintain", "--lake", str(tmp_path)]) == 1  # an error, no DeltaError raised
    assert str(gone) in caplog.text
    assert _versions(tmp_path) == versions  # nothing compacted, nothing committed


@pytest.mark.parametrize(
    ("version", "damage"),
    [(2, lambda b: b[: len(b) // 2]), (3, lambda b: b"garbage\n")],  # truncated; a new one
)
def test_a_damaged_log_file_is_named(tmp_path, caplog, version, damage):
    fs, layout = LocalFileSystem(), LakeLayout(str(tmp_path))
    for run in ("r1", "r2"):
        _commit(fs, layout, run, _stage(fs, layout, run))
    entry = tmp_path / delta.log_entry("sources", version)
    entry.write_bytes(damage(entry.read_bytes() if entry.exists() else b""))

    expected = f"{tmp_path}/tables/sources: its log file {entry} is damaged"
    for reading in (
        lambda: delta_read.read_snapshot(fs, layout, "sources"),
        lambda: delta_read.require_logs(fs, layout),  # what ingest does first
        lambda: delta_read.require_readable(fs, layout),
    ):
        with pytest.raises(LakeError, match=expected):
            reading()
    assert main(["maintain", "--lake", str(tmp_path)]) == 1
    assert str(entry) in caplog.text


def _maintain(root: Path, hours: float) -> dict:
    config = load_config(env={"DICOMLAKE_MAINTAIN_RETENTION_HOURS": str(hours)})
    with holding(LocalFileSystem(), str(root), None, "maintain", config.lock) as lock:
        return maintain_lake(str(root), config, lock)


def _data_files(table_dir: Path) -> set[str]:
    return {p.name for p in table_dir.glob("*.parquet")}


def test_vacuum_keeps_files_younger_than_a_fractional_retention(tmp_path):
    fs, layout = LocalFileSystem(), LakeLayout(str(tmp_path))
    for run in ("r1", "r2", "r3"):
        _commit(fs, layout, run, _stage(fs, layout, run))
    sources = tmp_path / "tables" / "sources"
    before, version = _data_files(sources), DeltaTable(str(sources)).version()
    rows = DeltaTable(str(sources)).to_pyarrow_table().num_rows
    _maintain(tmp_path, 1.9)  # compacts: the six files are replaced by one
    assert before < _data_files(sources)

    date_back_removals(sources, hours=1.5)
    assert _maintain(tmp_path, 1.9)["sources"]["files_vacuumed"] == 0
    assert before < _data_files(sources)
    assert DeltaTable(str(sources), version=version).to_pyarrow_table().num_rows == rows

    date_back_removals(sources, hours=1.95)
    assert _maintain(tmp_path, 1.9)["sources"]["files_vacuumed"] == len(before)
    assert not before & _data_files(sources)
    with pytest.raises(LakeError, match=f"version {version} of .* needs .*vacuum has deleted"):
        delta_read.read_snapshot(fs, layout, "sources", as_of=version)


def test_tables_keep_tombstones_and_log_as_long_as_the_retention(tmp_path):
    fs, layout = LocalFileSystem(), LakeLayout(str(tmp_path))
    sources = tmp_path / "tables" / "sources"
    DeltaTable.create(str(sources), delta.schemas.SOURCES)  # as a dicomlake before the setting
    for run in ("r1", "r2", "r3"):
        _commit(fs, layout, run, _stage(fs, layout, run))
    week = "interval 604800 seconds"  # the default 168 hours, set where the run made the table
    for name in ("runs", "frames"):
        assert DeltaTable(str(tmp_path / "tables" / name)).metadata().configuration == {
            "delta.deletedFileRetentionDuration": week,
            "delta.logRetentionDuration": week,
        }
    assert DeltaTable(str(sources)).metadata().configuration == {}

    replaced = _data_files(sources)
    _maintain(tmp_path, 200)  # over Delta's default of a week
    assert DeltaTable(str(sources)).metadata().configuration == {
        "delta.deletedFileRetentionDuration": "interval 720000 seconds",
        "delta.logRetentionDuration": "interval 720000 seconds",
    }
    # Eight days on, the next checkpoint still holds the compaction's removals, so the vacuum
    # that comes once 200 hours have passed finds them.
    date_back_removals(sources, hours=192)
    assert _maintain(tmp_path, 200)["sources"]["files_vacuumed"] == 0
    checkpoint = max((sources / "_delta_log").glob("*.checkpoint.parquet"))
    removes = pq.read_table(checkpoint, columns=["remove"])["remove"].to_pylist()
    assert {r["path"] for r in removes if r} == replaced


def test_a_file_changed_under_the_log_is_a_lake_error_naming_the_table(tmp_path):
    fs, layout = LocalFileSystem(), LakeLayout(str(tmp_path))
    _commit(fs, layout, "r1", _stage(fs, layout, "r1"))
    changed = tmp_path / "tables" / "sources" / "part-r1-t0.parquet"
    changed.write_bytes(changed.read_bytes()[:-100])  # no Parquet footer any more
    with pytest.raises(LakeError, match=r"tables/sources has a file that is not as its log"):
        delta_read.read_snapshot(fs, layout, "sources")


def test_a_missing_table_reads_empty(tmp_path):
    got = delta_read.read_snapshot(LocalFileSystem(), LakeLayout(str(tmp_path)), "frames")
    assert got.num_rows == 0 and got.schema == delta.schemas.FRAMES


def test_vacuum_retention_must_cover_the_snapshot_lag():
    with pytest.raises(
        ConfigError, match=r"retention_hours=1.0 is shorter than snapshot.lag_seconds=7200.0"
    ):
        load_config(
            env={
                "DICOMLAKE_MAINTAIN_RETENTION_HOURS": "1",
                "DICOMLAKE_SNAPSHOT_LAG_SECONDS": "7200",
            }
        )
    with pytest.raises(ConfigError, match="maintain.retention_hours has a bad value 0.5"):
        load_config(env={"DICOMLAKE_MAINTAIN_RETENTION_HOURS": "0.5"})


@pytest.mark.parametrize("database", ["", "1db", "imaging; drop table x", "a.b", "名"])
def test_a_catalog_database_must_be_a_plain_identifier(database):
    from dicomlake.lake.catalog import register_tables

    with pytest.raises(ConfigError, match="not a plain SQL identifier"):
        register_tables(None, "/lake", database)  # refused before any SQL


def test_an_object_stores_error_is_named_without_java_frames_or_colours():
    error = OSError(
        "Generic HdfsObjectStore error: \x1b[31m↳ org.apache.hadoop.security."
        "AccessControlException: Permission denied: user=bob, access=WRITE\n"
        "\tat org.apache.hadoop.hdfs.server.namenode.FSPermissionChecker.check(X.java:506)\n"
        "\tat org.apache.hadoop.ipc.Server$Handler.run(Server.java:3198)\n\t... 12 more\x1b[0m"
    )
    assert delta._cause(error) == (
        "Generic HdfsObjectStore error: ↳ org.apache.hadoop.security.AccessControlException: "
        "Permission denied: user=bob, access=WRITE"
    )
