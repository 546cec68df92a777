"""Choose the filesystem for a URI by its scheme."""

from __future__ import annotations

import os
from collections.abc import Iterator
from urllib.parse import urlsplit

from dicomlake.config import HdfsConfig
from dicomlake.errors import ConfigError
from dicomlake.storage.base import FileSystem


def filesystem_for(
    uri: str, hdfs: HdfsConfig | None = None, *, landing: bool = False
) -> FileSystem:
    """The filesystem that serves ``uri``: local for plain paths and ``file://``, WebHDFS for ``hdfs://``.

    An ``hdfs://`` URI whose authority has no WebHDFS address in ``hdfs.namenodes`` is a
    ConfigError here, before any I/O. A ``landing`` zone's local reads refuse symbolic links
    below its root (see `LocalFileSystem`).
    """
    parts = urlsplit(uri)
    scheme = parts.scheme
    if scheme in ("", "file"):
        from dicomlake.storage.local import LocalFileSystem

        return LocalFileSystem(beneath=uri if landing else None)
    if scheme == "hdfs":
        from dicomlake.storage.hdfs import WebHdfsFileSystem

        hdfs = hdfs or HdfsConfig()
        hdfs.webhdfs_urls(parts.netloc)
        return WebHdfsFileSystem(hdfs)
    raise ConfigError(
        f"unsupported URI scheme {scheme!r} in {uri!r}: use a path, file:// or hdfs://"
    )


def join(base: str, *parts: str) -> str:
    """Join URI path parts with '/', whatever the scheme."""
    out = base.rstrip("/")
    for part in parts:
        out += "/" + part.strip("/")
    return out


def canonical_uri(uri: str) -> str:
    """One spelling per place: local paths (plain or ``file://``) absolute and plain, other URIs
    without a trailing '/'. Executors and the driver then agree, and a landing zone named
    either way lists the same paths (which the ledger and the path ids are keyed on)."""
    parts = urlsplit(uri)
    if parts.scheme == "file":
        uri = parts.path
    elif parts.scheme:
        return uri.rstrip("/")
    return os.path.abspath(uri)


def os_path(uri: str) -> str | None:
    """The absolute OS path of a local ``uri`` (plain or ``file://``); None for a remote one."""
    canonical = canonical_uri(uri)
    return None if urlsplit(canonical).scheme else canonical


def below(path: str, root: str) -> str | None:
    """The part of ``path`` below ``root`` ("" for the root itself), None when it is not
    there (``/data/landing-2`` is not below ``/data/landing``)."""
    root = root.rstrip("/")
    if path.rstrip("/") == root:
        return ""
    return path[len(root) + 1 :] if path.startswith(root + "/") else None


def self_and_parents(uri: str) -> Iterator[str]:
    """``uri``, then each directory above it up to its filesystem's root."""
    path = urlsplit(uri).path
    head = uri[: len(uri) - len(path)]
    while True:
        yield head + path
        if path in ("", "/"):
            return
        path = path.rsplit("/", 1)[0] or "/"


def overlap(a: str, b: str) -> bool:
    """Whether one of two canonical URIs is the other or below it (local paths by their real
    paths, so a link does not hide it)."""
    pa, pb = urlsplit(a), urlsplit(b)
    if (pa.scheme, pa.netloc) != (pb.scheme, pb.netloc):
        return False
    x, y = (os.path.realpath(p) if not pa.scheme else p for p in (pa.path, pb.path))
    return below(x, y) is not None or below(y, x) is not None
