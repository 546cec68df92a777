"""Choose the filesystem for a URI by its scheme."""

from __future__ import annotations

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
    (see `LocalFileSystem`).
    """
    parts = urlsplit(uri)
    scheme = parts.scheme
    if scheme in ("", "file"):
        from dicomlake.storage.local import LocalFileSystem

        return LocalFileSystem(follow_links=not landing)
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
