"""Reading a task's next landing files while the current one is processed.

A landing read mostly waits: on HDFS it is two HTTP round trips (NameNode, then DataNode) and
the transfer. One helper thread reads the files that follow, in task order, while the task
parses and encodes, so the wait overlaps the work. Only files of at most `limit` bytes are read
ahead, and at most `limit` bytes are held ahead at once, so a task's memory grows by no more
than that; larger files are read when their turn comes.
"""

from __future__ import annotations

import collections
from concurrent.futures import Future, ThreadPoolExecutor

from dicomlake.storage import FileInfo, FileSystem

READ_MARGIN = 1
"""Bytes read past a landing file's listed size: one more than it had tells a file that grew
(or a device reached somehow) without reading on."""


class ReadAhead:
    """Whole-file reads of ``files`` (in their order), started ahead of `read`.

    >>> with ReadAhead(landing_fs, files, 64 << 20) as reads:   # doctest: +SKIP
    ...     for info in files:
    ...         data = reads.read(info)   # raises what landing_fs.read raised for this file
    """

    def __init__(self, fs: FileSystem, files: list[FileInfo], limit: int) -> None:
        self._fs = fs
        self._limit = limit
        self._queue = collections.deque(f for f in files if f.size <= limit)
        self._ahead: dict[str, tuple[int, Future[bytes]]] = {}
        self._ahead_bytes = 0
        self._pool = ThreadPoolExecutor(1, thread_name_prefix="dicomlake-readahead")

    def __enter__(self) -> ReadAhead:
        self._fill()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._pool.shutdown(wait=True, cancel_futures=True)

    def read(self, info: FileInfo) -> bytes:
        """The bytes of ``info`` (at most its listed size + `READ_MARGIN`): read ahead if it was
        queued, else read now."""
        ahead = self._ahead.pop(info.path, None)
        if ahead is None:
            return _read_listed(self._fs, info)
        size, future = ahead
        self._ahead_bytes -= size
        self._fill()  # the next reads start before this one's bytes are handed over
        return future.result()

    def _fill(self) -> None:
        while self._queue and self._ahead_bytes + self._queue[0].size <= self._limit:
            info = self._queue.popleft()
            self._ahead[info.path] = (info.size, self._pool.submit(_read_listed, self._fs, info))
            self._ahead_bytes += info.size


def _read_listed(fs: FileSystem, info: FileInfo) -> bytes:
    return fs.read(info.path, 0, info.size + READ_MARGIN)
