"""Copying lake files into content-addressed objects, in-process or on Spark executors.

Each file is streamed once: read, hashed and written to a temp file in the snapshot's work area,
then published under its hash. If that object exists already (same content under another path,
an earlier snapshot, or a killed run's leftovers) the publish fails and the temp file is dropped:
content is stored once; an object of another size than its content's (damaged, replaced, not a
file) is replaced, so a new snapshot never refers to it. (Damage that keeps the size is found by
``verify``.) When the file's content is probably known (a ``hint``), it is only hashed
and nothing is written if the hash matches. Bytes never pass through the Spark driver: each task
opens both filesystems itself and returns only small rows.
"""

from __future__ import annotations

import hashlib
import logging
import uuid
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, BinaryIO

from dicomlake.backup.layout import BackupLayout, object_key
from dicomlake.backup.scan import ToRead
from dicomlake.config import HdfsConfig
from dicomlake.errors import PublishConflictError, StorageError
from dicomlake.spark.tasks import bin_pack
from dicomlake.storage import FileSystem, filesystem_for, join

if TYPE_CHECKING:
    from pyspark import SparkContext

log = logging.getLogger(__name__)

CHUNK = 4 << 20
# Bytes of input per Spark task: many small files share a task, a big pack gets its own.
TASK_BYTES = 512 << 20


@dataclass(frozen=True)
class Copied:
    """What became of one file: its content's hash and size, and whether it was stored now."""

    path: str
    sha256: str | None  # None when the file vanished before it could be read
    size: int
    stored: bool


@dataclass(frozen=True)
class CopyJob:
    """Where to copy from and to; small and picklable, shipped to executors."""

    source_root: str
    backup: str
    work: str
    hdfs: HdfsConfig


def copy_files(job: CopyJob, items: list[ToRead], sc: SparkContext | None = None) -> list[Copied]:
    """Copy ``items``: in this process without ``sc``, else spread over the executors.

    Returns one result per item, in the order of ``items``.
    """
    if sc is None or not items:
        return list(_copy_many(job, items))
    bins = bin_pack(
        items,
        size=_size,
        cost=_size,
        task_bytes=TASK_BYTES,
        min_tasks=max(sc.defaultParallelism, 1),
    )
    rdd = sc.parallelize(bins, len(bins))
    done = {c.path: c for c in rdd.flatMap(lambda b: _copy_many(job, b)).collect()}
    return [done[i.file.path] for i in items]


def _size(item: ToRead) -> int:
    return item.file.size


def _copy_many(job: CopyJob, items: Iterable[ToRead]) -> Iterator[Copied]:
    src_fs = filesystem_for(job.source_root, job.hdfs)
    dst_fs = filesystem_for(job.backup, job.hdfs)
    layout = BackupLayout(job.backup)
    for item in items:
        yield _copy_one(src_fs, dst_fs, layout, job, item)


def _copy_one(
    src_fs: FileSystem, dst_fs: FileSystem, layout: BackupLayout, job: CopyJob, item: ToRead
) -> Copied:
    src = join(job.source_root, item.file.path)
    try:
        held = None if item.hint is None else dst_fs.status(layout.uri(object_key(item.hint)))
        if held is not None:
            digest, size = _stream(src_fs, src, None)
            if digest == item.hint and held.size == size:
                return Copied(item.file.path, digest, size, False)
        tmp = join(job.work, "objects", uuid.uuid4().hex)
        with dst_fs.open_write(tmp) as out:
            digest, size = _stream(src_fs, src, out)
    except StorageError:
        if src_fs.status(src) is None:  # deleted since the listing
            return Copied(item.file.path, None, 0, False)
        raise
    target = layout.uri(object_key(digest))
    try:
        dst_fs.publish(tmp, target)
    except PublishConflictError:
        held = dst_fs.status(target)
        if held is not None and held.size == size:
            dst_fs.delete(tmp)
            return Copied(item.file.path, digest, size, False)
        # Not this content (damaged, or not a file): a snapshot never refers to it again
        log.warning(
            "object %s holds %s bytes, not the %d of its content: stored again",
            target,
            "no" if held is None else held.size,
            size,
        )
        dst_fs.delete(target)
        dst_fs.publish(tmp, target)
    return Copied(item.file.path, digest, size, True)


def _stream(fs: FileSystem, uri: str, out: BinaryIO | None) -> tuple[str, int]:
    """SHA-256 and length of a file, copying it to ``out`` on the way when given."""
    h = hashlib.sha256()
    size = 0
    with fs.open_read(uri) as f:
        while chunk := f.read(CHUNK):
            h.update(chunk)
            size += len(chunk)
            if out is not None:
                out.write(chunk)
    return h.hexdigest(), size
