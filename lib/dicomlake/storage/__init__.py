"""One small filesystem interface, chosen by URI scheme (``file://``, plain paths, ``hdfs://``)."""

from dicomlake.storage.base import ENTRY_PROBLEMS, FileInfo, FileSystem, ReadStream
from dicomlake.storage.registry import (
    below,
    canonical_uri,
    filesystem_for,
    join,
    os_path,
    overlap,
    remote_parts,
    self_and_parents,
)

__all__ = [
    "ENTRY_PROBLEMS",
    "FileInfo",
    "FileSystem",
    "ReadStream",
    "below",
    "canonical_uri",
    "filesystem_for",
    "join",
    "os_path",
    "overlap",
    "remote_parts",
    "self_and_parents",
]
