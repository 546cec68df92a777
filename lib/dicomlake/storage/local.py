"""The local filesystem, for the embedded default and tests (``file://`` URIs and plain paths)."""

from __future__ import annotations

import contextlib
import os
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO

from dicomlake.errors import PublishConflictError, StorageError
from dicomlake.storage.base import FileInfo, FileSystem, ReadStream


def local_path(uri: str) -> str:
    """The OS path of a ``file://`` URI or plain path."""
    if uri.startswith("file://"):
        uri = uri[len("file://") :]
    return uri


class LocalFileSystem(FileSystem):
    scheme = "file"

    def __repr__(self) -> str:
        return "LocalFileSystem()"

    def _uri(self, template: str, os_path: str) -> str:
        # Keep the caller's spelling: a file:// root lists file:// children.
        return "file://" + os_path if template.startswith("file://") else os_path

    def list_files(self, path: str) -> Iterator[FileInfo]:
        root = local_path(path)
        if os.path.isfile(root):
            st = os.stat(root)
            yield FileInfo(path, st.st_size, st.st_mtime_ns // 1_000_000)
            return
        for dirpath, dirnames, filenames in os.walk(root, onerror=None):
            dirnames.sort()
            for name in sorted(filenames):
                full = os.path.join(dirpath, name)
                try:
                    st = os.stat(full)
                except FileNotFoundError:  # deleted while listing
                    continue
                yield FileInfo(self._uri(path, full), st.st_size, st.st_mtime_ns // 1_000_000)

    def list_dirs(self, path: str) -> list[str]:
        root = local_path(path)
        try:
            names = sorted(e.name for e in os.scandir(root) if e.is_dir())
        except FileNotFoundError:
            return []
        return [self._uri(path, os.path.join(root, n)) for n in names]

    def status(self, path: str) -> FileInfo | None:
        try:
            st = os.stat(local_path(path))
        except FileNotFoundError:
            return None
        return FileInfo(path, st.st_size, st.st_mtime_ns // 1_000_000)

    def read(self, path: str, offset: int = 0, length: int | None = None) -> bytes:
        try:
            with open(local_path(path), "rb") as f:
                f.seek(offset)
                return f.read() if length is None else f.read(length)
        except OSError as exc:
            raise StorageError(f"cannot read {path}: {exc}") from exc

    @contextlib.contextmanager
    def open_read(self, path: str, offset: int = 0) -> Iterator[ReadStream]:
        try:
            f = open(local_path(path), "rb")  # noqa: SIM115 - closed below; open errors wrapped
        except OSError as exc:
            raise StorageError(f"cannot open {path}: {exc}") from exc
        with f:
            f.seek(offset)
            yield ReadStream(f, path, (OSError,))

    @contextlib.contextmanager
    def open_write(self, path: str) -> Iterator[BinaryIO]:
        p = Path(local_path(path))
        p.parent.mkdir(parents=True, exist_ok=True)
        with open(p, "wb") as f:
            yield f
            f.flush()
            os.fsync(f.fileno())

    def publish(self, src: str, dst: str) -> None:
        s, d = local_path(src), local_path(dst)
        os.makedirs(os.path.dirname(d) or ".", exist_ok=True)
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
            raise StorageError(f"cannot publish {src} to {dst}: {exc}") from exc
        os.unlink(s)

    def delete(self, path: str, recursive: bool = False) -> None:
        p = local_path(path)
        if os.path.isdir(p) and not os.path.islink(p):
            try:
                if recursive:
                    shutil.rmtree(p)
                else:
                    os.rmdir(p)
            except OSError as exc:
                raise StorageError(f"cannot delete {path}: {exc}") from exc
        else:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(p)

    def makedirs(self, path: str) -> None:
        os.makedirs(local_path(path), exist_ok=True)
