"""The commit protocol on a real local filesystem with real Delta tables: crash before, during
and after publishing, and during the tables' commits."""

from __future__ import annotations

import io
import json
import math
import threading
from datetime import datetime, timezone
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from deltalake import DeltaTable
from ingest_helpers import dangling_references

from dicomlake.config import LockConfig
from dicomlake.errors import LakeError, LockLostError, PublishConflictError
from dicomlake.lake import delta, delta_read, schemas
from dicomlake.lake.commit import _roll_forward as roll_forward
from dicomlake.lake.commit import commit, recover, staged
from dicomlake.lake.layout import TABLES, LakeLayout
from dicomlake.lake.lock import holding
from dicomlake.storage.local import LocalFileSystem

NOW = datetime(2026, 1, 2, 3, 4, 5, tzinfo=timezone.utc)
RETENTION_HOURS = 168.0
SOURCES = {
    "source_path_id": ["id-a", "id-b"],
    "source_size": [10, 20],
    "source_mtime": [NOW, NOW],
    "source_sha256": ["aa", "bb"],
    "outcome": ["ingested", "quarantined"],
    "instance_id": ["aa", None],
    "SOPInstanceUID": ["1.2.3", None],
    "seen_at": [NOW, NOW],
}
RUNS = {
    "landing": ["file"],
    "landing_path_id": ["id-landing"],
    "started_at": [NOW],
    "committed_at": [NOW],
    **{k: [n] for n, k in enumerate(["files_listed", "files_seen", "ingested"], 1)},
    **{k: [0] for k in ["duplicates", "quarantined", "bytes_read", "bytes_stored"]},
    **{k: [0] for k in ["failed", "skipped", "files_hidden", "files_settling"]},
    "packs_written": [1],
    "watermark": [NOW],
    "dicomlake_version": ["0"],
    "deid_options": [None],
}


def _parquet(columns: dict, schema: pa.Schema) -> bytes:
    sink = io.BytesIO()
    pq.write_table(pa.Table.from_pydict(columns, schema=schema), sink)
    return sink.getvalue()


def _files(run: str) -> dict[str, bytes]:
    """A run's files: a pack, two sources rows in two files, a runs row (last)."""
    one = {k: v[:1] for k, v in SOURCES.items()} | {"ingest_run_id": [run]}
    two = {k: v[1:] for k, v in SOURCES.items()} | {"ingest_run_id": [run]}
    return {
        f"pixels/{run}/p.pack": b"sealed chunks",
        f"tables/sources/part-{run}-t0.parquet": _parquet(one, schemas.SOURCES),
        f"tables/sources/part-{run}-t1.parquet": _parquet(two, schemas.SOURCES),
        f"tables/runs/part-{run}.parquet": _parquet({"run_id": [run], **RUNS}, schemas.RUNS),
    }


def _referring_files(run: str) -> dict[str, bytes]:
    """A run that writes every table, its rows referring to each other as an ingest's do: an
    instance with its frames and elements rows in a pack, a rejected file's quarantine copy
    (an errors row), both packs' rows, the sources rows; the instance's file comes first, as
    the tasks' files come before the driver's in an intent."""

    def rows(schema: pa.Schema, *given: dict) -> bytes:
        filled = [
            {f.name: row.get(f.name, None if f.nullable else _filler(f.type)) for f in schema}
            for row in given
        ]
        return _parquet(pa.Table.from_pylist(filled, schema).to_pydict(), schema)

    pack, copy, instance = f"pixels/{run}/p.pack", f"quarantine/{run}/e.pack", f"i-{run}"
    own = {"ingest_run_id": run}
    in_file = pa.schema([f for f in schemas.INSTANCES if f.name not in schemas.INSTANCE_PARTITIONS])
    return {
        pack: b"sealed chunks",
        copy: b"sealed copy",
        f"tables/instances/Modality=CT/study_year=2020/part-{run}-t0.parquet": rows(
            in_file, {"instance_id": instance, "pack_path": pack, **own}
        ),
        f"tables/frames/part-{run}-t0.parquet": rows(
            schemas.FRAMES, {"instance_id": instance, "pack_path": pack, **own}
        ),
        f"tables/elements/part-{run}-t0.parquet": rows(
            schemas.ELEMENTS, {"instance_id": instance, **own}
        ),
        f"tables/errors/part-{run}.parquet": rows(schemas.ERRORS, {"quarantine_path": copy, **own}),
        f"tables/packs/part-{run}.parquet": rows(
            schemas.PACKS, {"pack_path": pack, **own}, {"pack_path": copy, **own}
        ),
        f"tables/sources/part-{run}.parquet": rows(
            schemas.SOURCES, {"instance_id": instance, "outcome": "ingested", **own}
        ),
        f"tables/runs/part-{run}.parquet": _parquet({"run_id": [run], **RUNS}, schemas.RUNS),
    }


def _filler(kind: pa.DataType) -> object:
    """Some value of a non-nullable column's type."""
    if pa.types.is_timestamp(kind):
        return NOW
    return 0 if pa.types.is_integer(kind) else "x"


def _stage(fs, layout, run="r1", files=_files) -> list[str]:
    for rel, data in files(run).items():
        fs.write_bytes(staged(layout, run, rel), data)
    return list(files(run))


def _commit(fs, layout, run: str, files: list[str]) -> None:
    """What run ``run`` does: commit its files while holding the lake's lock."""
    with holding(fs, layout.root, run, "test", LockConfig()) as lock:
        commit(fs, layout, lock, files, RETENTION_HOURS)


def _recover(fs, layout, run: str = "r9") -> tuple[list[str], list[str]]:
    """What a later run ``run`` does first, holding the lake's lock."""
    with holding(fs, layout.root, run, "test", LockConfig()) as lock:
        return recover(fs, layout, lock)


def _rows(root: Path, name: str) -> list[str]:
    """The run ids of a table's rows, as deltalake reads the table on its own."""
    path = root / "tables" / name
    if not DeltaTable.is_deltatable(str(path)):
        return []
    column = "run_id" if name == "runs" else "ingest_run_id"
    return sorted(DeltaTable(str(path)).to_pyarrow_table()[column].to_pylist())


def _in_place(root: Path) -> set[str]:
    return {
        p.relative_to(root).as_posix()
        for p in root.rglob("*")
        if p.is_file() and not any(part.startswith("_") for part in p.relative_to(root).parts)
    }


def test_commit_publishes_everything_and_cleans_up(tmp_path):
    fs, layout = LocalFileSystem(), LakeLayout(str(tmp_path))
    files = _stage(fs, layout)
    _commit(fs, layout, "r1", files)
    assert _in_place(tmp_path) == set(files)
    assert _rows(tmp_path, "sources") == ["r1", "r1"]
    assert _rows(tmp_path, "runs") == ["r1"]
    assert not (tmp_path / "_staging" / "r1").exists()
    assert not list((tmp_path / "_commits").iterdir())
    # Every table exists, and the run's sequence number is in the tables it wrote.
    for name in ("instances", "frames", "elements", "errors", "packs"):
        assert DeltaTable(str(tmp_path / "tables" / name)).version() == 0
    for name in ("sources", "runs"):
        assert DeltaTable(str(tmp_path / "tables" / name)).transaction_version(delta.APP_ID) == 1


def test_each_run_is_one_commit_per_table_with_the_next_sequence(tmp_path):
    fs, layout = LocalFileSystem(), LakeLayout(str(tmp_path))
    for run in ("r1", "r2", "r3"):
        _commit(fs, layout, run, _stage(fs, layout, run))
    sources = DeltaTable(str(tmp_path / "tables" / "sources"))
    assert sources.version() == 3  # created, then one commit per run
    assert sources.transaction_version(delta.APP_ID) == 3
    assert _rows(tmp_path, "sources") == ["r1", "r1", "r2", "r2", "r3", "r3"]
    # Each version adds one run: the table as of version 2 holds r1 and r2.
    as_of = DeltaTable(str(tmp_path / "tables" / "sources"), version=2).to_pyarrow_table()
    assert sorted(set(as_of["ingest_run_id"].to_pylist())) == ["r1", "r2"]


def test_a_run_without_a_runs_record_is_refused(tmp_path):
    fs, layout = LocalFileSystem(), LakeLayout(str(tmp_path))
    files = _stage(fs, layout)
    with pytest.raises(LakeError, match="runs record"):
        _commit(fs, layout, "r1", files[:-1])
    assert not (tmp_path / "_commits").exists() or not list((tmp_path / "_commits").iterdir())


def test_crash_before_commit_point_is_discarded(tmp_path):
    fs, layout = LocalFileSystem(), LakeLayout(str(tmp_path))
    _stage(fs, layout)
    assert _recover(fs, layout) == ([], ["r1"])
    assert _in_place(tmp_path) == set()
    assert not (tmp_path / "_staging" / "r1").exists()


def test_recover_keeps_the_lock_holders_own_staging(tmp_path):
    fs, layout = LocalFileSystem(), LakeLayout(str(tmp_path))
    files = _stage(fs, layout, "r2")
    assert _recover(fs, layout, "r2") == ([], [])
    assert (tmp_path / "_staging" / "r2" / files[0]).exists()


def _publish_intent(fs, layout, run, files, version=2):
    """What commit() does up to its commit point (docs/FORMATS.md's intent, written again)."""
    versions, sequence = delta.prepare(fs, layout, RETENTION_HOURS)
    intent = staged(layout, run, "_intent.json")
    body = {"run_id": run, "files": files, "sequence": sequence, "versions": versions}
    if version is not None:  # v1 intents had no version
        body["version"] = version
    fs.write_bytes(intent, json.dumps(body).encode())
    fs.publish(intent, layout.commit_intent(run))


@pytest.mark.parametrize("moved", [0, 1, 3, 4])
def test_crash_after_commit_point_rolls_forward(tmp_path, moved):
    fs, layout = LocalFileSystem(), LakeLayout(str(tmp_path))
    files = _stage(fs, layout)
    _publish_intent(fs, layout, "r1", files)
    for rel in files[:moved]:
        fs.publish(staged(layout, "r1", rel), layout.absolute(rel))
    # Files in place but not committed are no part of their tables.
    assert _rows(tmp_path, "sources") == _rows(tmp_path, "runs") == []
    assert _recover(fs, layout) == (["r1"], [])
    assert _in_place(tmp_path) == set(files)
    assert _rows(tmp_path, "sources") == ["r1", "r1"]
    assert _rows(tmp_path, "runs") == ["r1"]


def dies_after(monkeypatch, commits: int) -> None:
    """The process dies (KeyboardInterrupt) right after the ``commits``-th table commit from now."""
    real = DeltaTable.create_write_transaction
    made = []

    def commit_then_maybe_die(table, *args, **kwargs):
        real(table, *args, **kwargs)
        made.append(table.table_uri)
        if len(made) == commits:
            raise KeyboardInterrupt("killed")

    monkeypatch.setattr(DeltaTable, "create_write_transaction", commit_then_maybe_die)


def test_crash_between_table_commits_commits_only_the_tables_behind(tmp_path, monkeypatch):
    fs, layout = LocalFileSystem(), LakeLayout(str(tmp_path))
    _commit(fs, layout, "r0", _stage(fs, layout, "r0"))
    files = _stage(fs, layout)
    dies_after(monkeypatch, 1)  # the process dies between two table commits
    with pytest.raises(KeyboardInterrupt):
        _commit(fs, layout, "r1", files)
    monkeypatch.undo()
    assert _rows(tmp_path, "sources") == ["r0", "r0", "r1", "r1"]
    assert _rows(tmp_path, "runs") == ["r0"]  # the run is not complete: runs comes last

    assert _recover(fs, layout) == (["r1"], [])
    assert _rows(tmp_path, "sources") == ["r0", "r0", "r1", "r1"]  # not added twice
    assert _rows(tmp_path, "runs") == ["r0", "r1"]
    assert DeltaTable(str(tmp_path / "tables" / "sources")).version() == 2
    assert _recover(fs, layout) == ([], [])


@pytest.mark.parametrize("survived", range(1, 7))
def test_no_reader_sees_what_a_row_refers_to_missing_after_a_crash(tmp_path, monkeypatch, survived):
    fs, layout = LocalFileSystem(), LakeLayout(str(tmp_path))
    _commit(fs, layout, "r0", _stage(fs, layout, "r0", _referring_files))
    files = _stage(fs, layout, "r1", _referring_files)

    dies_after(monkeypatch, survived)  # of the run's seven table commits
    with pytest.raises(KeyboardInterrupt):
        _commit(fs, layout, "r1", files)
    assert dangling_references(tmp_path) == []
    assert _rows(tmp_path, "runs") == ["r0"]
    monkeypatch.undo()

    dies_after(monkeypatch, 1)  # the roll-forward dies too, after one more table
    with pytest.raises(KeyboardInterrupt):
        _recover(fs, layout)
    assert dangling_references(tmp_path) == []
    monkeypatch.undo()

    assert _recover(fs, layout) == (["r1"], [])
    assert dangling_references(tmp_path) == []
    for name in TABLES:
        assert sorted(set(_rows(tmp_path, name))) == ["r0", "r1"], name
    assert len(_rows(tmp_path, "instances")) == 2  # each run's instance, once


def test_a_staged_file_gone_before_its_move_stops_the_roll_forward(tmp_path):
    fs, layout = LocalFileSystem(), LakeLayout(str(tmp_path))
    files = _stage(fs, layout)
    _publish_intent(fs, layout, "r1", files)
    fs.delete(staged(layout, "r1", files[1]))  # neither staged nor in place

    with pytest.raises(LakeError, match=f"staged file .*{files[1]} is missing"):
        _recover(fs, layout)
    # No table gets the run while one of its files is missing.
    assert _rows(tmp_path, "sources") == _rows(tmp_path, "runs") == []


@pytest.mark.parametrize("version", [None, 3])
def test_an_intent_of_another_version_is_left_alone(tmp_path, version):
    fs, layout = LocalFileSystem(), LakeLayout(str(tmp_path))
    files = _stage(fs, layout)
    _publish_intent(fs, layout, "r1", files, version)
    with pytest.raises(
        LakeError, match=f"has version {version or 1}; this dicomlake reads version 2"
    ):
        _recover(fs, layout)
    assert _in_place(tmp_path) == set()  # nothing moved
    assert (tmp_path / "_commits" / "r1.json").exists()


def test_a_lake_from_before_delta_lake_is_converted_on_its_next_run(tmp_path):
    fs, layout = LocalFileSystem(), LakeLayout(str(tmp_path))
    # Lake v1: a run's files in place, no logs; an instances partition with a null value.
    for rel, data in _files("r0").items():
        fs.write_bytes(layout.absolute(rel), data)
    columns = [f for f in schemas.INSTANCES if f.name not in schemas.INSTANCE_PARTITIONS]
    columns = [f for f in columns if f.name != "KVP"]  # not promoted yet then
    given = {"instance_id": "i0", "SOPInstanceUID": "1.2", "ingest_run_id": "r0"}
    row = {f.name: given.get(f.name, None if f.nullable else _filler(f.type)) for f in columns}
    directory = tmp_path / "tables/instances/Modality=__HIVE_DEFAULT_PARTITION__/study_year=2020"
    directory.mkdir(parents=True)
    pq.write_table(pa.Table.from_pylist([row], pa.schema(columns)), directory / "part-r0.parquet")

    _commit(fs, layout, "r1", _stage(fs, layout, "r1"))
    assert _rows(tmp_path, "sources") == ["r0", "r0", "r1", "r1"]
    assert _rows(tmp_path, "runs") == ["r0", "r1"]
    instances = delta_read.read_snapshot(fs, layout, "instances")
    assert instances.num_rows == 1 and instances.schema == schemas.INSTANCES
    row = instances.to_pylist()[0]
    assert (row["Modality"], row["study_year"], row["SOPInstanceUID"]) == (None, 2020, "1.2")
    assert row["KVP"] is None  # a column the v1 file never had


def test_statistics_in_the_log_match_the_rows(tmp_path):
    fs, layout = LocalFileSystem(), LakeLayout(str(tmp_path))
    _commit(fs, layout, "r1", _stage(fs, layout))
    log = tmp_path / "tables" / "sources" / "_delta_log" / f"{1:020d}.json"
    actions = [json.loads(line) for line in log.read_text().splitlines()]
    got = {a["add"]["path"]: json.loads(a["add"]["stats"]) for a in actions if "add" in a}
    one, two = got["part-r1-t0.parquet"], got["part-r1-t1.parquet"]
    assert one["numRecords"] == two["numRecords"] == 1
    assert one["minValues"]["source_path_id"] == one["maxValues"]["source_path_id"] == "id-a"
    assert two["nullCount"]["instance_id"] == 1 and one["nullCount"]["instance_id"] == 0
    assert "instance_id" not in two["minValues"]  # all null: no bounds
    assert one["minValues"]["source_size"] == 10 and two["maxValues"]["source_size"] == 20
    assert one["minValues"]["seen_at"] == "2026-01-02T03:04:05.000Z"


def test_statistics_leave_out_bounds_json_cannot_hold(tmp_path):
    path = tmp_path / "numbers.parquet"
    numbers = {"finite": [1.0, 2.5], "infinite": [1.0, math.inf], "below": [-math.inf, 0.0]}
    pq.write_table(pa.table(numbers), path)

    def refused(constant: str) -> None:
        raise AssertionError(f"{constant} in the log: not JSON (RFC 8259)")

    stats = json.loads(delta._stats(pq.read_metadata(path)), parse_constant=refused)
    assert stats["minValues"] == {"finite": 1.0} and stats["maxValues"] == {"finite": 2.5}
    assert stats["nullCount"] == {"finite": 0, "infinite": 0, "below": 0}


def test_publish_never_overwrites(tmp_path):
    fs = LocalFileSystem()
    a, b = tmp_path / "a", tmp_path / "b"
    a.write_bytes(b"new")
    b.write_bytes(b"old")
    with pytest.raises(PublishConflictError):
        fs.publish(str(a), str(b))
    assert b.read_bytes() == b"old" and a.read_bytes() == b"new"


def test_two_finishing_one_run_at_once_add_it_once_and_both_end_well(tmp_path, monkeypatch):
    """A stalled holder past its commit point and the command that took its lock over can be
    in the same step at once: both move its files and commit its tables."""
    fs, layout = LocalFileSystem(), LakeLayout(str(tmp_path))
    files = _stage(fs, layout)
    _publish_intent(fs, layout, "r1", files)
    real, together = DeltaTable.create_write_transaction, threading.Barrier(2, timeout=30)
    first = threading.local()

    def at_once(table, *args, **kwargs):
        if not getattr(first, "met", False):  # each one's first table commit: both at once
            first.met = True
            together.wait()
        return real(table, *args, **kwargs)

    monkeypatch.setattr(DeltaTable, "create_write_transaction", at_once)
    failures: list[BaseException] = []

    def finish() -> None:
        try:
            roll_forward(fs, layout, "r1")
        except BaseException as exc:  # noqa: BLE001 - reported by the test
            failures.append(exc)

    threads = [threading.Thread(target=finish) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert failures == []
    assert _in_place(tmp_path) == set(files)
    assert _rows(tmp_path, "sources") == ["r1", "r1"]  # once, not twice
    assert _rows(tmp_path, "runs") == ["r1"]
    assert DeltaTable(str(tmp_path / "tables" / "sources")).version() == 1
    assert not (tmp_path / "_staging" / "r1").exists()
    assert not list((tmp_path / "_commits").iterdir())


def test_a_holder_that_lost_its_lock_past_the_commit_point_stops_and_says_so(tmp_path):
    fs, layout = LocalFileSystem(), LakeLayout(str(tmp_path))
    files = _stage(fs, layout)
    with holding(fs, layout.root, "r1", "test", LockConfig()) as lock:
        real_publish = fs.publish

        def taken_over_at_the_commit_point(src, dst):
            real_publish(src, dst)
            if dst == layout.commit_intent("r1"):
                lock._lose("taken over by a test")  # as its heartbeat thread finds it

        fs.publish = taken_over_at_the_commit_point
        with pytest.raises(LockLostError, match="the run is committed: the command that took"):
            commit(fs, layout, lock, files, RETENTION_HOURS)
        fs.publish = real_publish
    assert _rows(tmp_path, "sources") == []  # it stopped before any table
    (tmp_path / "_lock").unlink()  # the taker's (the test's) removal of the lost lock
    assert _recover(fs, layout) == (["r1"], [])  # the next command finishes it
    assert _rows(tmp_path, "runs") == ["r1"]
