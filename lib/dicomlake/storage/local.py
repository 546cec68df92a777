"""The local filesystem, for the embedded default and tests (``file://`` URIs and plain paths)."""

from __future__ import annotations

import contextlib
import errno
import os
import secrets
import shutil
import stat
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO

from dicomlake.errors import PublishConflictError
from dicomlake.storage.base import FileInfo, FileSystem, ReadStream, failure
from dicomlake.storage.registry import below, local_path
from dicomlake.vocab import RejectReason


def _info(uri: str, st: os.stat_result) -> FileInfo:
    return FileInfo(uri, st.st_size, st.st_mtime_ns // 1_000_000)


def _os_problem(exc: OSError, otherwise: RejectReason) -> RejectReason:
    """The entry problem an OSError met while listing stands for."""
    return {
        errno.ENAMETOOLONG: RejectReason.NAME_TOO_LONG,
        errno.ELOOP: RejectReason.SYMLINK_LOOP,
    }.get(exc.errno or 0, otherwise)


class _Walk:
    """The entries of each directory of one listing, by lstat: nothing is opened, a link is
    followed only when asked and only to its real target inside ``root``."""

    def __init__(self, root: str, follow_symlinks: bool) -> None:
        self._root, self._follow = os.path.realpath(root), follow_symlinks
        self._spelling = root  # a link's target is named below the root as the caller named it
        self._taken: set[str] = set()  # files listed (below the root), when links are followed

    def entries(
        self, directory: str
    ) -> Iterator[tuple[str, os.stat_result | None, RejectReason | None]]:
        """(path, lstat or target's stat, problem) of each entry of ``directory``, by name; an
        unlistable directory is one entry with its problem."""
        try:
            with os.scandir(directory) as it:
                names = sorted(e.name for e in it)
        except FileNotFoundError:  # deleted while listing
            return
        except OSError as exc:
            yield directory, _lstat(directory), _os_problem(exc, RejectReason.UNREADABLE_DIR)
            return
        for name in names:
            full = os.path.join(directory, name)
            try:
                st = os.lstat(full)
            except FileNotFoundError:
                continue
            except OSError as exc:
                yield full, None, _os_problem(exc, RejectReason.UNREADABLE_DIR)
                continue
            if not _utf8(name):
                yield full, st, RejectReason.BAD_NAME
            elif stat.S_ISLNK(st.st_mode):
                yield from self._link(full, st)
            elif stat.S_ISDIR(st.st_mode):
                yield full, st, None
            elif stat.S_ISREG(st.st_mode):
                # Walked without passing a link: below the real root as below the named one
                if not self._seen(os.path.relpath(full, self._spelling)):
                    yield full, st, None
            else:
                yield full, st, RejectReason.NOT_REGULAR_FILE

    def _link(
        self, full: str, st: os.stat_result
    ) -> Iterator[tuple[str, os.stat_result | None, RejectReason | None]]:
        if not self._follow:
            yield full, st, RejectReason.SYMLINK
            return
        try:
            target = os.stat(full)
        except FileNotFoundError:
            yield full, st, RejectReason.DANGLING_SYMLINK
            return
        except OSError as exc:
            yield full, st, _os_problem(exc, RejectReason.DANGLING_SYMLINK)
            return
        real = os.path.realpath(full)
        if os.path.commonpath([self._root, real]) != self._root:
            yield full, st, RejectReason.SYMLINK_OUTSIDE
        elif stat.S_ISREG(target.st_mode):
            inside = os.path.relpath(real, self._root)
            if not self._seen(inside):
                yield os.path.join(self._spelling, inside), target, None
        elif not stat.S_ISDIR(target.st_mode):  # a directory inside is walked as itself
            yield full, st, RejectReason.NOT_REGULAR_FILE

    def _seen(self, inside: str) -> bool:
        """Whether the file at ``inside`` (relative to the root) was listed already, reached
        through a link; always False when links are not followed."""
        if not self._follow:
            return False
        if inside in self._taken:
            return True
        self._taken.add(inside)
        return False


def _open_regular(os_path: str, beneath: str | None) -> BinaryIO:
    """``os_path`` opened for reading if it is a regular file (see `_parent`).

    O_NONBLOCK: opening a FIFO never waits for a writer; the check after opening holds for
    what was opened, whatever the path names by then.
    """
    flags = os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC | (0 if beneath is None else os.O_NOFOLLOW)
    with _parent(os_path, beneath) as (parent, name):
        fd = os.open(name, flags, dir_fd=parent)
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise OSError(errno.EINVAL, "not a regular file")
        os.set_blocking(fd, True)
        return os.fdopen(fd, "rb")
    except BaseException:
        os.close(fd)
        raise


@contextlib.contextmanager
def _parent(os_path: str, beneath: str | None) -> Iterator[tuple[int | None, str]]:
    """(directory fd or None, name) to open or stat ``os_path`` by.

    Below ``beneath`` (a landing zone's root) the path is walked one directory at a time from
    the root, and no symbolic link is followed on the way or at its end: a directory swapped
    for a link after the listing cannot lead a read out of the landing zone (O_NOFOLLOW on
    the whole path would guard its last name only). ``beneath`` None: any path, links
    followed. A landing zone that is one file is that file, by the name it was given.
    """
    inside = None if beneath is None else below(os_path, beneath)
    if beneath is None or inside == "":
        yield None, os_path
        return
    if inside is None:
        raise OSError(errno.EXDEV, "not below the landing zone")
    *dirs, name = inside.split("/")
    if any(part in ("", ".", "..") for part in (*dirs, name)):
        raise OSError(errno.EINVAL, "not a plain path below the landing zone")
    fd = os.open(beneath, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        for part in dirs:
            step = os.open(part, _DIRECTORY_STEP, dir_fd=fd)
            os.close(fd)
            fd = step
        yield fd, name
    finally:
        os.close(fd)


# A directory below a landing root, opened only if it is one (no link, no FIFO)
_DIRECTORY_STEP = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC


def _lstat(path: str) -> os.stat_result | None:
    try:
        return os.lstat(path)
    except OSError:
        return None


def _utf8(name: str) -> bool:
    """Whether a name (decoded by Python with surrogate escapes) was valid UTF-8."""
    try:
        name.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


class LocalFileSystem(FileSystem):
    """Local files; with ``beneath`` (a landing zone's root) a read or stat of a path below it
    follows no symbolic link (see `_parent`), so a link put in place after the listing, for
    the file or any directory on its way, is not read through."""

    scheme = "file"

    def __init__(self, beneath: str | None = None) -> None:
        self._beneath = None if beneath is None else local_path(beneath)

    def __repr__(self) -> str:
        return f"LocalFileSystem(beneath={self._beneath!r})"

    def _uri(self, template: str, os_path: str) -> str:
        # Keep the caller's spelling: a file:// root lists file:// children.
        return "file://" + os_path if template.startswith("file://") else os_path

    def list_entries(self, path: str, follow_symlinks: bool = False) -> Iterator[FileInfo]:
        root = local_path(path)
        try:
            st = os.stat(root)
        except FileNotFoundError:
            return
        except OSError as exc:
            yield self._problem(path, root, None, _os_problem(exc, RejectReason.UNREADABLE_DIR))
            return
        if not stat.S_ISDIR(st.st_mode):
            problem = None if stat.S_ISREG(st.st_mode) else RejectReason.NOT_REGULAR_FILE
            yield self._problem(path, root, st, problem) if problem else _info(path, st)
            return
        walk = _Walk(root, follow_symlinks)
        # Depth first, each directory's files before its subdirectories, both sorted by name.
        pending = [root]
        while pending:
            directory = pending.pop()
            subdirs = []
            for full, entry, problem in walk.entries(directory):
                if problem is not None:
                    yield self._problem(path, full, entry, problem)
                    continue
                assert entry is not None  # an entry without a problem was stat'ed
                if stat.S_ISDIR(entry.st_mode):
                    subdirs.append(full)
                else:
                    yield _info(self._uri(path, full), entry)
            pending.extend(reversed(subdirs))

    def _problem(
        self, template: str, os_path: str, st: os.stat_result | None, problem: RejectReason
    ) -> FileInfo:
        """An entry that is not read, named so that any name can be stored and printed."""
        printable = os.fsencode(os_path).decode("utf-8", "backslashreplace")
        size, mtime = (st.st_size, st.st_mtime_ns // 1_000_000) if st else (0, 0)
        return FileInfo(self._uri(template, printable), size, mtime, problem)

    def list_dirs(self, path: str) -> list[str]:
        root = local_path(path)
        try:
            names = sorted(e.name for e in os.scandir(root) if e.is_dir())
        except FileNotFoundError:
            return []
        return [self._uri(path, os.path.join(root, n)) for n in names]

    def status(self, path: str) -> FileInfo | None:
        try:
            with _parent(local_path(path), self._beneath) as (parent, name):
                st = os.stat(name, dir_fd=parent, follow_symlinks=self._beneath is None)
        except FileNotFoundError:
            return None
        except OSError as exc:
            raise failure("stat", path, exc) from exc
        return FileInfo(path, st.st_size, st.st_mtime_ns // 1_000_000)

    def read(self, path: str, offset: int = 0, length: int | None = None) -> bytes:
        try:
            with _open_regular(local_path(path), self._beneath) as f:
                f.seek(offset)
                return f.read() if length is None else f.read(length)
        except OSError as exc:
            raise failure("read", path, exc) from exc

    @contextlib.contextmanager
    def open_read(self, path: str, offset: int = 0) -> Iterator[ReadStream]:
        try:
            f = _open_regular(local_path(path), self._beneath)
        except OSError as exc:
            raise failure("open", path, exc) from exc
        with f:
            f.seek(offset)
            yield ReadStream(f, path, (OSError,))

    @contextlib.contextmanager
    def open_write(self, path: str) -> Iterator[BinaryIO]:
        p = Path(local_path(path))
        try:  # a folder on the way that is a file, no permission, no space: named
            p.parent.mkdir(parents=True, exist_ok=True)
            f = open(p, "wb")  # noqa: SIM115 - closed by the with below
        except OSError as exc:
            raise failure("write", path, exc) from exc
        with f:
            yield f
            f.flush()
            os.fsync(f.fileno())

    def publish(self, src: str, dst: str) -> None:
        s, d = local_path(src), local_path(dst)
        try:
            os.makedirs(os.path.dirname(d) or ".", exist_ok=True)
        except OSError as exc:
            raise failure("publish", dst, exc) from exc
        try:
            # link() fails if dst exists, so a publish never replaces a file (rename would).
            os.link(s, d)
        except FileExistsError:
            raise PublishConflictError(f"cannot publish {src} to {dst}: target exists") from None
        except IsADirectoryError:
            raise PublishConflictError(f"cannot publish {src} to {dst}: target exists") from None
        except PermissionError:
            # Directories cannot be hard-linked: rename them, after checking the target.
            if os.path.exists(d):
                raise PublishConflictError(
                    f"cannot publish {src} to {dst}: target exists"
                ) from None
            os.rename(s, d)
            return
        except OSError as exc:
            raise failure(f"publish to {dst}:", src, exc) from exc
        os.unlink(s)

    def delete(self, path: str, recursive: bool = False) -> None:
        p = local_path(path)
        if os.path.isdir(p) and not os.path.islink(p):
            try:
                if recursive:
                    shutil.rmtree(p, onerror=_unless_gone)
                else:
                    os.rmdir(p)
            except OSError as exc:
                raise failure("delete", path, exc) from exc
        else:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(p)

    def makedirs(self, path: str) -> None:
        os.makedirs(local_path(path), exist_ok=True)

    def write_private(self, path: str, data: bytes) -> None:
        _write_private(local_path(path), data)

    def mode(self, path: str) -> int:
        try:
            return os.stat(local_path(path)).st_mode & 0o777
        except OSError as exc:
            raise failure("stat", path, exc) from exc


def _unless_gone(function: object, path: str, exc_info: tuple[type, BaseException, object]) -> None:
    """`shutil.rmtree`'s error handler: what another process removed meanwhile is not an
    error (deleting is idempotent); anything else is."""
    if not isinstance(exc_info[1], FileNotFoundError):
        raise exc_info[1]


@contextlib.contextmanager
def private_file(path: str | os.PathLike[str]) -> Iterator[tuple[str, BinaryIO]]:
    """A new file beside ``path``, open for writing, for the caller to rename over ``path``
    once complete: at a fresh random hidden name (never one that exists, nor a symlink: O_EXCL
    and O_NOFOLLOW), mode 0600 from its creation, whatever the umask, as it may hold PHI or
    keys. Removed if the block raises."""
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    tmp = os.path.join(folder, f".{os.path.basename(path)}.{secrets.token_hex(8)}.tmp")
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | getattr(os, "O_CLOEXEC", 0)
    fd = os.open(tmp, flags, 0o600)
    try:
        with os.fdopen(fd, "wb") as f:
            yield tmp, f
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def _write_private(path: str, data: bytes) -> None:
    """``data`` in a `private_file` renamed over ``path`` once synced."""
    with private_file(path) as (tmp, f):
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
        os.replace(tmp, path)
    folder = os.path.dirname(os.path.abspath(path))
    dir_fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(dir_fd)  # the rename itself survives a crash
    finally:
        os.close(dir_fd)
