"""Bin-packing a job's work into Spark tasks: the task count follows the bytes, the balance
follows the cost, and every item lands in exactly one task."""

from __future__ import annotations

from dicomlake.spark.tasks import bin_pack


def test_task_count_follows_size_and_cores():
    sizes = [100] * 10
    assert len(bin_pack(sizes, size=int, cost=int, task_bytes=250, min_tasks=1)) == 4
    assert len(bin_pack(sizes, size=int, cost=int, task_bytes=10_000, min_tasks=3)) == 3
    assert len(bin_pack([5, 5], size=int, cost=int, task_bytes=1, min_tasks=1)) == 2
    assert bin_pack([], size=int, cost=int, task_bytes=1, min_tasks=4) == []


def test_balance_follows_cost_and_ties_keep_their_order():
    items = ["a", "bb", "cc", "dddd"]
    tasks = bin_pack(items, size=len, cost=len, task_bytes=1 << 20, min_tasks=2)
    assert tasks == [["dddd", "a"], ["bb", "cc"]]
    # by bytes alone the big item is one task and the eight small ones the other; a fixed
    # cost per item moves two small ones next to it
    sizes = [1] * 8 + [40]
    assert bin_pack(sizes, size=int, cost=int, task_bytes=1 << 20, min_tasks=2) == [[40], [1] * 8]
    tasks = bin_pack(sizes, size=int, cost=lambda n: n + 10, task_bytes=1 << 20, min_tasks=2)
    assert tasks == [[40, 1, 1], [1] * 6]
