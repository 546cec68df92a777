"""Planning an ingest run on the driver: what is new in the landing zone, and how to split it."""

from __future__ import annotations

import heapq
from collections.abc import Iterable

from dicomlake.storage import FileInfo

# Files still being written or not meant for us: HDFS `-put` temporaries, hidden and temp files.
_IGNORED_SUFFIXES = ("._COPYING_", ".tmp", ".part", ".crdownload")


def is_candidate(path: str) -> bool:
    """Whether a landing file should be considered (not a temporary or hidden file)."""
    name = path.rsplit("/", 1)[-1]
    return not name.startswith((".", "_")) and not name.endswith(_IGNORED_SUFFIXES)


def bin_pack(files: Iterable[FileInfo], task_bytes: int, min_tasks: int) -> list[list[FileInfo]]:
    """Split files into tasks of about equal bytes (largest first onto the lightest task).

    There are at least ``min_tasks`` tasks when there are that many files, so a small run
    still keeps every core busy, and about ``total / task_bytes`` tasks for a large one.
    """
    ordered = sorted(files, key=lambda f: (-f.size, f.path))
    if not ordered:
        return []
    total = sum(f.size for f in ordered)
    n = min(len(ordered), max(min_tasks, -(-total // task_bytes)))
    heap = [(0, i) for i in range(n)]
    tasks: list[list[FileInfo]] = [[] for _ in range(n)]
    for f in ordered:
        load, i = heapq.heappop(heap)
        tasks[i].append(f)
        heapq.heappush(heap, (load + f.size, i))
    for task in tasks:
        task.sort(key=lambda f: f.path)
    return tasks
