"""Planning: files are split into tasks of about equal work, every file in exactly one task."""

from __future__ import annotations

from dicomlake.ingest.plan import bin_pack, is_candidate
from dicomlake.storage import FileInfo

MB = 1_000_000


def _files(sizes: list[int]) -> list[FileInfo]:
    return [FileInfo(f"/landing/f{i:05d}.dcm", size, 0) for i, size in enumerate(sizes)]


def test_every_file_once_and_task_count() -> None:
    files = _files([3 * MB] * 40 + [100_000] * 500)
    tasks = bin_pack(files, task_bytes=64 * MB, min_tasks=2)
    assert sorted(f for t in tasks for f in t) == sorted(files)
    assert len(tasks) == -(-(40 * 3 * MB + 500 * 100_000) // (64 * MB))  # 3 tasks of <= 64 MB
    assert all(t == sorted(t, key=lambda f: f.path) for t in tasks)


def test_small_files_weigh_more_than_their_bytes() -> None:
    # Three big files and many small ones on two cores: split by bytes alone, one task would
    # get ten times the files of the other. Each file's fixed work (about half a megabyte of
    # pixel data's worth) must balance the tasks instead.
    files = _files([10 * MB] * 3 + [50_000] * 300)
    tasks = bin_pack(files, task_bytes=256 * MB, min_tasks=2)
    assert len(tasks) == 2
    costs = [sum(f.size + 512 * 1024 for f in t) for t in tasks]
    assert max(costs) / min(costs) < 1.02, costs


def test_at_least_min_tasks_but_not_more_tasks_than_files() -> None:
    assert len(bin_pack(_files([1000] * 5), task_bytes=256 * MB, min_tasks=2)) == 2
    assert len(bin_pack(_files([1000]), task_bytes=256 * MB, min_tasks=2)) == 1
    assert bin_pack([], task_bytes=256 * MB, min_tasks=2) == []


def test_candidates_skip_temporaries_and_hidden_files() -> None:
    assert is_candidate("/landing/a/IM0001.dcm")
    for name in ("x._COPYING_", ".hidden", "_SUCCESS", "x.tmp", "x.part", "x.crdownload"):
        assert not is_candidate(f"/landing/a/{name}"), name
