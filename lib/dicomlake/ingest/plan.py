"""Planning an ingest run on the driver: what is new in the landing zone, and how to split it."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from dicomlake.lake.ledger import Ledger
from dicomlake.spark.tasks import bin_pack
from dicomlake.storage import FileInfo, below
from dicomlake.storage.names import is_hidden, is_skipped
from dicomlake.vocab import RejectReason

MAX_NAME_BYTES = 200
"""Longer landing names are refused (``name_too_long``): the lake names a quarantine copy after
its landing file, with a prefix, within the 255 bytes most filesystems (and HDFS) allow."""


def is_candidate(path: str, root: str) -> bool:
    """Whether a file below the landing zone ``root`` should be considered: not a temporary
    or hidden file, nor in a hidden directory below the root (Hadoop's rule, Spark's too: a
    job's half-written ``_temporary/``, a ``.Trash``); the root's own path may have any names."""
    inside = below(path, root) or path.rsplit("/", 1)[-1]  # a zone of one file: its name
    *directories, name = inside.split("/")
    return not is_skipped(name) and not any(map(is_hidden, directories))


@dataclass(frozen=True)
class Landing:
    """What a run does with a landing zone's listing."""

    work: list[FileInfo]
    """New or changed entries: files to read, and entries to record with their problem."""
    listed: int
    """Entries listed, hidden and temporary ones left out."""
    hidden: int
    """Hidden and temporary names (`is_candidate`), left out without a record."""
    settling: int
    """New or changed files modified too recently (``ingest.settle_seconds``): the next run's."""


def plan_landing(
    entries: Iterable[FileInfo], root: str, ledger: Ledger, settled_ms: int | None = None
) -> Landing:
    """Sort the listing of the landing zone ``root`` into work, hidden names and files still
    settling (modified after ``settled_ms``, by the filesystem's clock; none when None);
    entries the ledger has seen are left out."""
    work: list[FileInfo] = []
    listed = hidden = settling = 0
    for f in entries:
        if not is_candidate(f.path, root):
            hidden += 1
            continue
        listed += 1
        if f.problem is None and len(f.path.rsplit("/", 1)[-1].encode()) > MAX_NAME_BYTES:
            f = f._replace(problem=RejectReason.NAME_TOO_LONG)
        if not ledger.is_new(f.path, f.size, f.mtime_ms):
            continue
        if f.problem is None and settled_ms is not None and f.mtime_ms > settled_ms:
            settling += 1
            continue
        work.append(f)
    return Landing(work, listed, hidden, settling)


# A file's fixed work (header parse, de-identification, JSON and element rows: ~4-5 ms on one
# core) costs about as much as compressing this many bytes of pixel data.
FILE_COST_BYTES = 512 * 1024


def task_cost(f: FileInfo) -> int:
    """Estimated work of one file, in bytes of pixel data."""
    return f.size + FILE_COST_BYTES


def split_tasks(
    files: Iterable[FileInfo], *, task_bytes: int, min_tasks: int
) -> list[list[FileInfo]]:
    """Split files into tasks of about equal work (`dicomlake.spark.tasks.bin_pack`), each
    task's files in path order.

    Work is `task_cost`, so a task of many small files gets fewer bytes than one of big files.
    """
    by_path = sorted(files, key=lambda f: f.path)
    tasks = bin_pack(
        by_path, size=lambda f: f.size, cost=task_cost, task_bytes=task_bytes, min_tasks=min_tasks
    )
    for task in tasks:
        task.sort(key=lambda f: f.path)
    return tasks
