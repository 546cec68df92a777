"""The filesystem interface every part of dicomlake uses for its own I/O.

Paths given to a :class:`FileSystem` are the full URIs the caller was given (``hdfs://nn:8020/x``,
``file:///x`` or ``/x``), so they can be passed around and logged as they are.
"""

from __future__ import annotations

import abc
import contextlib
import errno
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import BinaryIO, NamedTuple

from dicomlake.errors import StorageError
from dicomlake.vocab import RejectReason

CALLS_AT_ONCE = 8
"""Calls a remote filesystem makes at once, in `FileSystem.run_all` and in listings (HdfsCLI's
session keeps 10 connections per host)."""


class FileInfo(NamedTuple):
    """A listed entry: its URI, size in bytes and modification time by the filesystem's clock.

    ``problem`` is None for a regular file. Otherwise it is why the entry cannot be read (one
    of `ENTRY_PROBLEMS`); ``path`` is then a printable form of the entry's name (bytes that are
    not UTF-8 escaped as ``\\xNN``) and size and mtime are those of the entry itself.
    """

    path: str
    size: int
    mtime_ms: int
    problem: RejectReason | None = None


ENTRY_PROBLEMS: dict[RejectReason, str] = {
    RejectReason.NOT_REGULAR_FILE: "not a regular file (a FIFO, socket or device): not opened",
    RejectReason.SYMLINK: "a symbolic link: not followed (ingest.follow_symlinks is off)",
    RejectReason.SYMLINK_OUTSIDE: "a symbolic link whose real target is outside the landing zone",
    RejectReason.SYMLINK_LOOP: "a symbolic link that leads round in a loop",
    RejectReason.DANGLING_SYMLINK: "a symbolic link to nothing",
    RejectReason.UNREADABLE_DIR: "a directory that cannot be listed: its files are not known yet",
    RejectReason.BAD_NAME: "a name that is not valid UTF-8 (shown with its bytes escaped)",
    RejectReason.NAME_TOO_LONG: (
        "a name or path too long for the lake to record and name a copy after"
    ),
}
"""The reason codes of listed entries that are not read, with the message they are recorded
with (no part of the entry's name or content)."""


class ReadStream:
    """What `FileSystem.open_read` gives: ``read`` only, and a failed read is a StorageError
    naming the file, as with `FileSystem.read` (only reads: the caller's own writes to another
    file, in the same block, keep their own errors)."""

    def __init__(self, raw: BinaryIO, path: str, failures: tuple[type[Exception], ...]) -> None:
        self._raw, self._path, self._failures = raw, path, failures

    def read(self, size: int = -1) -> bytes:
        """Up to ``size`` bytes (all the rest when negative); b"" at the end."""
        try:
            return self._raw.read() if size < 0 else self._raw.read(size)
        except self._failures as exc:
            raise failure("read", self._path, exc) from exc


def failure(action: str, path: str, exc: BaseException) -> StorageError:
    """The StorageError of ``action`` on ``path`` failing with ``exc``; its `detail` is the
    errno's name and text (an OSError's text quotes the path, escaped: no mask finds it), or
    the remote exception's class, and its message that and the path."""
    if isinstance(exc, OSError) and exc.errno:
        detail = f"{errno.errorcode.get(exc.errno, exc.errno)}: {exc.strerror}"
        said: object = detail
    else:
        detail, said = getattr(exc, "exception", None) or type(exc).__name__, exc
    return StorageError(f"cannot {action} {path}: {said}", detail=detail)


class FileSystem(abc.ABC):
    """Read with ranges, write new files, publish by rename, list, delete; and, where the
    filesystem has them, take read-only snapshots of a directory (`create_snapshot`)."""

    scheme: str
    remote: bool = False
    """Whether every call waits on the network: ingest then reads ahead and writes in parallel."""

    @abc.abstractmethod
    def list_entries(self, path: str, follow_symlinks: bool = False) -> Iterator[FileInfo]:
        """Every entry below ``path`` (recursive) that is not a directory, or ``path`` itself
        if it is not one: regular files, and the entries that cannot be read as one, each with
        its `FileInfo.problem`. ``path`` itself is always followed if it is a link.

        With ``follow_symlinks``, a link whose real target is a file or directory inside
        ``path`` is taken as that target, listed once under its real path, however many links
        lead to it; other links are listed with their problem. A missing ``path`` lists nothing.
        """

    def list_files(self, path: str) -> Iterator[FileInfo]:
        """Every regular file below ``path`` (recursive), or ``path`` itself if it is a file:
        `list_entries` without the entries that have a problem."""
        return (f for f in self.list_entries(path) if f.problem is None)

    @abc.abstractmethod
    def list_dirs(self, path: str) -> list[str]:
        """The immediate subdirectories of ``path`` as URIs, sorted (empty when it is missing)."""

    @abc.abstractmethod
    def status(self, path: str) -> FileInfo | None:
        """The file or directory at ``path``, or None when there is nothing there."""

    @abc.abstractmethod
    def read(self, path: str, offset: int = 0, length: int | None = None) -> bytes:
        """``length`` bytes from ``offset`` (all the rest when None); raises if the file is gone."""

    @abc.abstractmethod
    def open_read(
        self, path: str, offset: int = 0
    ) -> contextlib.AbstractContextManager[ReadStream]:
        """The file as a stream from ``offset`` on, for reading big files piece by piece."""

    @abc.abstractmethod
    def open_write(self, path: str) -> contextlib.AbstractContextManager[BinaryIO]:
        """A new file at ``path`` (parents made; an existing one is replaced).

        Writers write to a private staging path and :meth:`publish` it into place.
        """

    @abc.abstractmethod
    def publish(self, src: str, dst: str) -> None:
        """Atomically rename ``src`` to ``dst`` (parents made); fails if ``dst`` exists."""

    @abc.abstractmethod
    def delete(self, path: str, recursive: bool = False) -> None:
        """Remove a file, or a directory with ``recursive``; a missing path is not an error."""

    @abc.abstractmethod
    def makedirs(self, path: str) -> None:
        """Make a directory and its parents; an existing one is fine."""

    def create_snapshot(self, path: str, name: str) -> str | None:
        """A read-only snapshot, named ``name``, of the directory ``path``: the URI to read it
        at, or None when there is none to take, and the caller reads ``path`` live.

        Optional: a filesystem without snapshots (the default) takes none; HDFS takes one of a
        directory an administrator made snapshottable. Each one taken is dropped with
        `delete_snapshot`.
        """
        return None

    def delete_snapshot(self, path: str, name: str) -> None:
        """Drop the snapshot ``name`` of ``path`` that `create_snapshot` took."""
        raise StorageError(f"{self.scheme}: no snapshot {name} of {path} (snapshots not supported)")

    def write_bytes(self, path: str, data: bytes) -> None:
        """Write ``data`` as a new file at ``path``."""
        with self.open_write(path) as out:
            out.write(data)

    @abc.abstractmethod
    def write_private(self, path: str, data: bytes) -> None:
        """Write ``data`` at ``path``, replacing what is there, whole or not at all, readable
        and writable by its owner only from the moment it exists (a keyring)."""

    @abc.abstractmethod
    def mode(self, path: str) -> int:
        """The permission bits of the file at ``path`` (``0o644``, say)."""

    def exists(self, path: str) -> bool:
        """Whether anything is at ``path``."""
        return self.status(path) is not None

    def run_all(self, calls: Iterable[Callable[[], object]]) -> None:
        """Make independent calls on this filesystem: several at once on a remote one, where
        each mostly waits (on HDFS a new file's close alone waits ~0.4 s for the NameNode), one
        after another on a local one. The first failure is raised (on a remote filesystem,
        once every call has ended)."""
        if not self.remote:
            for call in calls:
                call()
            return
        with ThreadPoolExecutor(CALLS_AT_ONCE, thread_name_prefix="dicomlake-io") as pool:
            done = [pool.submit(call) for call in calls]
        for future in done:
            future.result()
