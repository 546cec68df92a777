"""Hidden and temporary names: one rule for every listing dicomlake reads.

A name starting with ``.`` or ``_`` is hidden (Hadoop's rule, which Spark and Parquet readers
follow: ``.crc`` files, ``_SUCCESS``, ``_temporary/``, ``.snapshot``). A name with one of
`TEMPORARY_SUFFIXES` is a file still being written: ``hdfs dfs -put``'s ``._COPYING_``,
downloads' ``.part`` and ``.crdownload``, ``.tmp``, and editors' ``~`` backups.
"""

from __future__ import annotations

HIDDEN_PREFIXES = (".", "_")
TEMPORARY_SUFFIXES = ("._COPYING_", ".tmp", ".part", ".crdownload", "~")


def is_hidden(name: str) -> bool:
    """Whether a name (one path component) is hidden."""
    return name.startswith(HIDDEN_PREFIXES)


def is_temporary(name: str) -> bool:
    """Whether a file name is that of a file still being written."""
    return name.endswith(TEMPORARY_SUFFIXES)


def is_skipped(name: str) -> bool:
    """Whether a file of this name is left out of a listing's work: hidden or temporary."""
    return is_hidden(name) or is_temporary(name)
