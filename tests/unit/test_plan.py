"""Planning: files are split into tasks of about equal work, every file in exactly one task."""

from __future__ import annotations

from dicomlake.ingest.plan import is_candidate, plan_landing, split_tasks
from dicomlake.lake.ledger import Ledger
from dicomlake.lake.paths import path_id
from dicomlake.storage import FileInfo

MB = 1_000_000


def _files(sizes: list[int]) -> list[FileInfo]:
    return [FileInfo(f"/landing/f{i:05d}.dcm", size, 0) for i, size in enumerate(sizes)]


def test_every_file_once_and_task_count() -> None:
    files = _files([3 * MB] * 40 + [100_000] * 500)
    tasks = split_tasks(files, task_bytes=64 * MB, min_tasks=2)
    assert sorted(f for t in tasks for f in t) == sorted(files)
    assert len(tasks) == -(-(40 * 3 * MB + 500 * 100_000) // (64 * MB))  # 3 tasks of <= 64 MB
    assert all(t == sorted(t, key=lambda f: f.path) for t in tasks)


def test_small_files_weigh_more_than_their_bytes() -> None:
    # Three big files and many small ones on two cores: split by bytes alone, one task would
    # get ten times the files of the other. Each file's fixed work (about half a megabyte of
    # pixel data's worth) must balance the tasks instead.
    files = _files([10 * MB] * 3 + [50_000] * 300)
    tasks = split_tasks(files, task_bytes=256 * MB, min_tasks=2)
    assert len(tasks) == 2
    costs = [sum(f.size + 512 * 1024 for f in t) for t in tasks]
    assert max(costs) / min(costs) < 1.02, costs


def test_at_least_min_tasks_but_not_more_tasks_than_files() -> None:
    assert len(split_tasks(_files([1000] * 5), task_bytes=256 * MB, min_tasks=2)) == 2
    assert len(split_tasks(_files([1000]), task_bytes=256 * MB, min_tasks=2)) == 1
    assert split_tasks([], task_bytes=256 * MB, min_tasks=2) == []


def test_candidates_skip_temporaries_and_hidden_files() -> None:
    assert is_candidate("/landing/a/IM0001.dcm", "/landing")
    for name in ("x._COPYING_", ".hidden", "_SUCCESS", "x.tmp", "x.part", "x.crdownload", "x.dcm~"):
        assert not is_candidate(f"/landing/a/{name}", "/landing"), name


def test_a_listing_is_sorted_into_work_hidden_and_settling_entries() -> None:
    now = 1_700_000_000_000
    seen = FileInfo("/landing/seen.dcm", 10, now - 99_000)
    listing = [
        FileInfo("/landing/old.dcm", 10, now - 60_000),
        FileInfo("/landing/fresh.dcm", 10, now - 1_000),  # written 1 s ago
        FileInfo("/landing/.hidden", 10, now - 60_000),
        FileInfo("/landing/x.dcm._COPYING_", 10, now - 1_000),
        FileInfo("/landing/_temporary/0/part.dcm", 10, now - 60_000),
        FileInfo("/landing/" + "n" * 201, 10, now - 60_000),
        FileInfo("/landing/" + "é" * 100, 10, now - 60_000),  # 200 bytes: still fine
        FileInfo("/landing/fifo", 0, now - 1_000, "not_regular_file"),  # no settling: not read
        seen,
    ]
    secret = b"\1" * 32
    ledger = Ledger({path_id(secret, seen.path): (seen.size, seen.mtime_ms)}, frozenset(), secret)
    planned = plan_landing(listing, "/landing", ledger, settled_ms=now - 30_000)
    assert [(f.path.rsplit("/", 1)[-1][:3], f.problem) for f in planned.work] == [
        ("old", None),
        ("nnn", "name_too_long"),
        ("ééé", None),
        ("fif", "not_regular_file"),
    ]
    assert (planned.listed, planned.hidden, planned.settling) == (6, 3, 1)
    # Without a settling time every file is work at once
    assert plan_landing(listing, "/landing", ledger).settling == 0
