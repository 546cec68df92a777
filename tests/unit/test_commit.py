"""The commit protocol on a real local filesystem: crash before, during and after publishing."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from dicomlake.config import LockConfig
from dicomlake.errors import LakeError
from dicomlake.lake.commit import commit, recover, staged
from dicomlake.lake.layout import LakeLayout
from dicomlake.lake.lock import holding
from dicomlake.storage.local import LocalFileSystem

FILES = [
    "pixels/r1/p.pack",
    "tables/instances/Modality=CT/study_year=2020/part-r1.parquet",
    "tables/sources/part-r1.parquet",
    "tables/runs/part-r1.parquet",
]


def _stage(fs, layout, run="r1"):
    for rel in FILES:
        fs.write_bytes(staged(layout, run, rel), rel.encode())


@pytest.fixture
def lock(tmp_path):
    """The lake's lock, held as run "r1" (commit) or a later run (recover)."""
    with holding(LocalFileSystem(), str(tmp_path), "r1", "test", LockConfig()) as held:
        yield held


@pytest.fixture
def later(tmp_path):
    with holding(LocalFileSystem(), str(tmp_path), "r2", "test", LockConfig()) as held:
        yield held


def _published(root: Path) -> set[str]:
    return {
        p.relative_to(root).as_posix()
        for p in root.rglob("*")
        if p.is_file() and not p.relative_to(root).as_posix().startswith("_")
    }


def test_commit_publishes_everything_and_cleans_up(tmp_path, lock):
    fs, layout = LocalFileSystem(), LakeLayout(str(tmp_path))
    _stage(fs, layout)
    commit(fs, layout, lock, FILES)
    assert _published(tmp_path) == set(FILES)
    assert (tmp_path / FILES[1]).read_bytes() == FILES[1].encode()
    assert not (tmp_path / "_staging" / "r1").exists()
    assert not list((tmp_path / "_commits").iterdir())


def test_runs_record_must_be_last(tmp_path, lock):
    fs, layout = LocalFileSystem(), LakeLayout(str(tmp_path))
    with pytest.raises(LakeError, match="runs record must be the last"):
        commit(fs, layout, lock, list(reversed(FILES)))


def test_crash_before_commit_point_is_discarded(tmp_path, later):
    fs, layout = LocalFileSystem(), LakeLayout(str(tmp_path))
    _stage(fs, layout)
    assert recover(fs, layout, later) == ([], ["r1"])
    assert _published(tmp_path) == set()
    assert not (tmp_path / "_staging" / "r1").exists()


def test_recover_keeps_the_lock_holders_own_staging(tmp_path, later):
    fs, layout = LocalFileSystem(), LakeLayout(str(tmp_path))
    _stage(fs, layout, "r2")
    assert recover(fs, layout, later) == ([], [])
    assert (tmp_path / "_staging" / "r2" / FILES[0]).exists()


@pytest.mark.parametrize("moved", [0, 1, 3, 4])
def test_crash_after_commit_point_rolls_forward(tmp_path, moved, later):
    fs, layout = LocalFileSystem(), LakeLayout(str(tmp_path))
    _stage(fs, layout)
    # What commit() does up to a crash after `moved` renames.
    intent = staged(layout, "r1", "_intent.json")
    fs.write_bytes(intent, json.dumps({"run_id": "r1", "files": FILES}).encode())
    fs.publish(intent, layout.commit_intent("r1"))
    for rel in FILES[:moved]:
        fs.publish(staged(layout, "r1", rel), layout.absolute(rel))
    assert recover(fs, layout, later) == (["r1"], [])
    assert _published(tmp_path) == set(FILES)
    for rel in FILES:
        assert (tmp_path / rel).read_bytes() == rel.encode()


def test_a_staged_file_gone_before_its_move_stops_the_roll_forward(tmp_path, later):
    fs, layout = LocalFileSystem(), LakeLayout(str(tmp_path))
    _stage(fs, layout)
    intent = staged(layout, "r1", "_intent.json")
    fs.write_bytes(intent, json.dumps({"run_id": "r1", "files": FILES}).encode())
    fs.publish(intent, layout.commit_intent("r1"))
    fs.delete(staged(layout, "r1", FILES[1]))  # neither staged nor in place

    with pytest.raises(LakeError, match=f"staged file .*{FILES[1]} is missing"):
        recover(fs, layout, later)
    # The runs record is never published without every other file of the run
    assert not (tmp_path / FILES[-1]).exists()


def test_publish_never_overwrites(tmp_path):
    fs = LocalFileSystem()
    a, b = tmp_path / "a", tmp_path / "b"
    a.write_bytes(b"new")
    b.write_bytes(b"old")
    from dicomlake.errors import PublishConflictError

    with pytest.raises(PublishConflictError):
        fs.publish(str(a), str(b))
    assert b.read_bytes() == b"old" and a.read_bytes() == b"new"
