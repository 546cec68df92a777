"""Choose the filesystem for a URI by its scheme."""

from __future__ import annotations

import os
import posixpath
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


def remote_parts(uri: str) -> tuple[str, str] | None:
    """(``scheme://authority``, path) of a URI that is not local, None for a local one. The
    path is every character after the authority: an HDFS name may hold '#', '?' or '%', which
    a URL parser takes for a fragment, a query or an escape."""
    scheme, sep, rest = uri.partition("://")
    if not sep or "/" in scheme or scheme == "file":
        return None
    authority, slash, tail = rest.partition("/")
    return f"{scheme}://{authority}", slash + tail


def canonical_uri(uri: str) -> str:
    """One spelling per place: local paths (plain or ``file://``) absolute and plain; other
    URIs with scheme and authority in lower case (as Hadoop compares them), '.', '..' and
    repeated '/' resolved, and no trailing '/'. Executors and the driver then agree, and a
    landing zone named either way lists the same paths (which the ledger and the path ids are
    keyed on)."""
    remote = remote_parts(uri)
    if remote is not None:
        head, path = remote
        path = posixpath.normpath("/" + path.lstrip("/")).lstrip("/") if path else ""
        return head.lower() + (f"/{path}" if path else "")
    return os.path.abspath(local_path(uri))


def local_path(uri: str) -> str:
    """The OS path of a plain path or ``file://`` URI: every character after ``file://`` (and
    an authority of ``localhost``), as for ``hdfs://`` (`remote_parts`): a local name may hold
    '#', '?' or '%' too. ConfigError for a ``file://`` URI naming another host."""
    if not uri.startswith("file://"):
        return uri
    rest = uri[len("file://") :]
    authority, slash, path = rest.partition("/")
    if authority not in ("", "localhost"):
        raise ConfigError(
            f"{uri!r} names the host {authority!r}: a file:// URI is a local path "
            "(file:///path); use hdfs:// for a remote filesystem"
        )
    return slash + path


def os_path(uri: str) -> str | None:
    """The absolute OS path of a local ``uri`` (plain or ``file://``); None for a remote one."""
    canonical = canonical_uri(uri)
    return None if remote_parts(canonical) else canonical


def below(path: str, root: str) -> str | None:
    """The part of ``path`` below ``root`` ("" for the root itself), None when it is not
    there (``/data/landing-2`` is not below ``/data/landing``)."""
    root = root.rstrip("/")
    if path.rstrip("/") == root:
        return ""
    return path[len(root) + 1 :] if path.startswith(root + "/") else None


def self_and_parents(uri: str) -> Iterator[str]:
    """``uri``, then each directory above it up to its filesystem's root."""
    head, path = remote_parts(uri) or ("", uri)
    while True:
        yield head + path
        if path in ("", "/"):
            return
        path = path.rsplit("/", 1)[0] or "/"


def overlap(a: str, b: str, hdfs: HdfsConfig | None = None) -> bool:
    """Whether one of two canonical URIs is the other or below it (local paths by their real
    paths, so a link does not hide it; with ``hdfs``, two authorities of one HDFS cluster as
    one, `HdfsConfig.same_cluster`)."""
    (ha, x), (hb, y) = (remote_parts(u) or ("", os.path.realpath(u)) for u in (a, b))
    if ha != hb:
        sa, _, na = ha.partition("://")
        sb, _, nb = hb.partition("://")
        if not (hdfs and sa == sb == "hdfs" and hdfs.same_cluster(na, nb)):
            return False
    return below(x, y) is not None or below(y, x) is not None
