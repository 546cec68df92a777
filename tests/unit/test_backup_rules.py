"""The pure decisions of snapshots: what is backed up, why a file is read, what retention keeps."""

from __future__ import annotations

import datetime as dt
import re

import pytest

from dicomlake.backup.layout import (
    BackupLayout,
    object_key,
    parse_snapshot_id,
    sha_of_key,
    snapshot_id,
)
from dicomlake.backup.manifest import entry_problems
from dicomlake.backup.retention import select_kept
from dicomlake.backup.scan import Entry, Listed, classify, is_backed_up
from dicomlake.errors import BackupError


@pytest.mark.parametrize(
    ("path", "kept"),
    [
        ("tables/instances/Modality=CT/study_year=2020/part-0.parquet", True),
        ("pixels/r1/p.pack", True),
        ("quarantine/r1/a.dcm", True),
        ("_staging/r1/pixels/r1/p.pack", False),
        ("_commits/r1.json", False),
        ("pixels/r1/p.pack._COPYING_", False),
        ("tables/frames/.part-0.parquet.crc", False),
        ("tables/frames/_temporary/0/part-0.parquet", False),
        ("tables/frames/_SUCCESS", False),
        ("tables/frames/_delta_log/00000000000000000003.json", True),
        ("tables/frames/_delta_log/00000000000000000010.checkpoint.parquet", True),
        ("tables/frames/_delta_log/_last_checkpoint", False),
        ("tables/frames/_delta_log/_commit_5f1e.json.tmp", False),
        ("quarantine/r1/x.tmp", False),
        ("quarantine/r1/x~", False),
        ("quarantine/r1/x.part", False),
        ("quarantine/r1/x.crdownload", False),
        (".snapshot/s1/pixels/r1/p.pack", False),
        ("restricted/identities/part-r1.parquet", True),
        ("keyring-binding.json", True),
        ("keyring-binding.next.json", True),  # a rotation's record, rolled forward on restore
        # No part of the lake, kept in its folder: keys and identified files among them
        ("keyring.json", False),
        ("exported/1.2.3.dcm", False),
        ("notes/keyring-binding.json", False),
    ],
)
def test_what_is_backed_up(path, kept):
    assert is_backed_up(path) is kept


def test_each_reason_a_file_is_read():
    base = {
        "same": Entry(10, 1000, "a" * 64, "objects/aa/x"),
        "touched": Entry(10, 1000, "b" * 64, "objects/bb/x"),
        "older": Entry(10, 1000, "c" * 64, "objects/cc/x"),
        "grown": Entry(10, 1000, "d" * 64, "objects/dd/x"),
        "near": Entry(10, 5000, "e" * 64, "objects/ee/x"),
        "gone": Entry(10, 1000, "f" * 64, "objects/ff/x"),
    }
    files = {
        p: Listed(p, s, m)
        for p, s, m in [
            ("same", 10, 1000),
            ("touched", 10, 6000),
            ("older", 10, 900),
            ("grown", 11, 1000),
            ("near", 10, 5000),
            ("fresh", 5, 6000),
            ("moved", 5, 100),
        ]
    }
    plan = classify(files, base, scan_from_ms=4000, latest=base)
    reasons = {t.file.path: t.reason for t in plan.to_read}
    assert reasons == {
        "touched": "modified",
        "older": "modified",
        "grown": "size_changed",
        "near": "lag_window",
        "fresh": "new",
        "moved": "renamed_in",
    }
    assert set(plan.unchanged) == {"same"} and plan.deleted == ("gone",)
    hints = {t.file.path: t.hint for t in plan.to_read}
    assert hints["near"] == "e" * 64 and hints["touched"] is None


def test_a_full_reads_everything_with_hints():
    latest = {"a": Entry(1, 1, "a" * 64, "objects/aa/x")}
    plan = classify({"a": Listed("a", 1, 1), "b": Listed("b", 2, 2)}, None, None, latest)
    assert [(t.file.path, t.reason, t.hint) for t in plan.to_read] == [
        ("a", "full", "a" * 64),
        ("b", "full", None),
    ]
    assert plan.deleted == ()


def test_retention_picks_newest_per_day_and_week():
    ids = [
        "20261102T010000Z-full",
        "20261103T010000Z-incremental",
        "20261106T010000Z-incremental",
        "20261110T010000Z-differential",
        "20261113T010000Z-incremental",
        "20261113T120000Z-incremental",
        "20261120T010000Z-incremental",
    ]  # after "today": kept, not counted
    kept = select_kept(ids, keep_daily=2, keep_weekly=2, today=dt.date(2026, 11, 13))
    assert kept == {
        "20261113T120000Z-incremental",
        "20261110T010000Z-differential",
        "20261106T010000Z-incremental",
        "20261120T010000Z-incremental",
    }
    assert select_kept(ids[:1], 1, 0, dt.date(2030, 1, 1)) == {ids[0]}  # stale but kept


def test_names():
    digest = "ab" + "c" * 62
    assert object_key(digest) == "objects/ab/" + "c" * 62
    assert sha_of_key(object_key(digest)) == digest
    assert sha_of_key("objects/ab/zz") is None
    assert snapshot_id("20261127T031500Z", "incremental") == "20261127T031500Z-incremental"
    assert parse_snapshot_id("20261127T031500Z-full")[0] == dt.datetime(
        2026, 11, 27, 3, 15, tzinfo=dt.timezone.utc
    )
    for bad in (("2026-11-27", "full"), ("20261127T031500Z", "weekly")):
        with pytest.raises(BackupError, match="bad snapshot"):
            snapshot_id(*bad)


@pytest.mark.parametrize(
    "sid",
    [
        "20261399T010000Z-full",  # no such month
        "20261127T031500Z-weekly",
        "../20261127T031500Z-full",
        "20261127T031500Z-full/..",
        "notes",
    ],
)
def test_only_snapshot_ids_name_paths(sid):
    with pytest.raises(BackupError, match=f"bad snapshot id {re.escape(repr(sid))}"):
        parse_snapshot_id(sid)
    for path_of in (BackupLayout("/b").manifest, BackupLayout("/b").work):
        with pytest.raises(BackupError, match="bad snapshot id"):
            path_of(sid)


def test_a_label_must_name_a_time():
    with pytest.raises(BackupError, match="bad snapshot label '20261399T010000Z'"):
        snapshot_id("20261399T010000Z", "full")


def test_rows_a_restore_cannot_write():
    def row(path, sha="a" * 64):
        return {"path": path, "sha256": sha, "object": f"objects/{sha[:2]}/{sha[2:]}"}

    rows = [
        row("a/b"),
        row("a/b/c"),  # below a file
        row("a/b"),  # twice
        row("a/bc"),  # beside it: fine
        row("../x"),
        {**row("k"), "object": "objects/aa/" + "b" * 62},  # key of another hash
    ]
    assert entry_problems(rows) == {
        1: "path below 'a/b', which another row writes as a file",
        2: "path listed twice",
        4: "empty, '.' or '..' component in path",
        5: f"object key does not name the recorded sha256 {'a' * 64}",
    }
