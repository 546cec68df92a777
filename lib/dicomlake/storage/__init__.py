"""One small filesystem interface, chosen by URI scheme (``file://``, plain paths, ``hdfs://``)."""

from dicomlake.storage.base import ENTRY_PROBLEMS, FileInfo, FileSystem, ReadStream
from dicomlake.storage.registry import filesystem_for, join

__all__ = ["ENTRY_PROBLEMS", "FileInfo", "FileSystem", "ReadStream", "filesystem_for", "join"]
