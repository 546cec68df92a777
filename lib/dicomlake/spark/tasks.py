"""Splitting a job's work into Spark tasks of about equal cost (ingest's files, a snapshot's
copies). Plain Python: the driver plans with it before any task runs."""

from __future__ import annotations

import heapq
from collections.abc import Callable, Sequence
from typing import TypeVar

T = TypeVar("T")


def bin_pack(
    items: Sequence[T],
    *,
    size: Callable[[T], int],
    cost: Callable[[T], int],
    task_bytes: int,
    min_tasks: int,
) -> list[list[T]]:
    """Greedy bin-packing: each item, costliest first (ties in the given order), onto the task
    with the least cost so far.

    There are about ``total size / task_bytes`` tasks for a large job, and at least
    ``min_tasks`` (the cores) when there are that many items, so a small job still keeps every
    core busy; never more tasks than items.
    """
    if not items:
        return []
    total = sum(size(i) for i in items)
    n = min(len(items), max(min_tasks, -(-total // task_bytes)))
    heap = [(0, k) for k in range(n)]
    tasks: list[list[T]] = [[] for _ in range(n)]
    for item in sorted(items, key=lambda i: -cost(i)):
        load, k = heapq.heappop(heap)
        tasks[k].append(item)
        heapq.heappush(heap, (load + cost(item), k))
    return tasks
