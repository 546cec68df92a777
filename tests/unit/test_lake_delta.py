"""Reading the lake's Delta tables as of a version or a time, and the settings of their upkeep."""

from __future__ import annotations

import time
from datetime import datetime, timedelta, timezone

import pytest
from test_commit import _commit, _stage

from dicomlake.config import load_config
from dicomlake.errors import ConfigError, LakeError
from dicomlake.lake import delta
from dicomlake.lake.layout import LakeLayout
from dicomlake.storage.local import LocalFileSystem


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("0", 0),
        ("12", 12),
        ("2026-11-28T00:00:00Z", datetime(2026, 11, 28, tzinfo=timezone.utc)),
        ("2026-11-28T01:30:00+01:00", datetime(2026, 11, 28, 0, 30, tzinfo=timezone.utc)),
        ("2026-11-28", datetime(2026, 11, 28, tzinfo=timezone.utc)),  # no zone: UTC
    ],
)
def test_as_of_is_a_version_or_a_time(text, expected):
    assert delta.parse_as_of(text) == expected


@pytest.mark.parametrize("text", ["-1", "yesterday", "2026-13-01", ""])
def test_a_bad_as_of_names_the_value(text):
    with pytest.raises(ConfigError, match=f"--as-of {text!r}"):
        delta.parse_as_of(text)


def test_snapshots_as_of_versions_and_times(tmp_path):
    fs, layout = LocalFileSystem(), LakeLayout(str(tmp_path))
    before_all = datetime.now(timezone.utc) - timedelta(seconds=1)
    times = []
    for run in ("r1", "r2", "r3"):
        _commit(fs, layout, run, _stage(fs, layout, run))
        times.append(datetime.now(timezone.utc))
        time.sleep(0.05)

    def runs(as_of):
        return sorted(delta.read_snapshot(layout, "runs", ["run_id"], as_of)["run_id"].to_pylist())

    assert runs(None) == ["r1", "r2", "r3"]
    assert runs(1) == ["r1"]  # version 0 created the table, each run added one
    assert runs(2) == ["r1", "r2"]
    assert runs(times[1]) == ["r1", "r2"]
    assert runs(times[0]) == ["r1"]
    assert runs(before_all) == []  # the table did not exist yet
    # Columns a table does not have read as null; the rows are cast to the lake's schema.
    got = delta.read_snapshot(layout, "sources", as_of=1)
    assert got.schema == delta.schemas.SOURCES
    assert got.num_rows == 2


def test_a_file_changed_under_the_log_is_a_lake_error_naming_the_table(tmp_path):
    fs, layout = LocalFileSystem(), LakeLayout(str(tmp_path))
    _commit(fs, layout, "r1", _stage(fs, layout, "r1"))
    changed = tmp_path / "tables" / "sources" / "part-r1-t0.parquet"
    changed.write_bytes(changed.read_bytes()[:-100])  # no Parquet footer any more
    with pytest.raises(LakeError, match=r"tables/sources has a file that is not as its log"):
        delta.read_snapshot(layout, "sources")


def test_a_missing_table_reads_empty(tmp_path):
    got = delta.read_snapshot(LakeLayout(str(tmp_path)), "frames")
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
