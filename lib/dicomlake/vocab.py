"""The words the lake's tables and a backup's manifests store, one `StrEnum` per vocabulary.

Each value is written into a table as a plain string and keeps its meaning forever: a value may
be added, never renamed. A member is its value (``SourceOutcome.INGESTED == "ingested"``, same
hash, same text in f-strings and JSON), so rows read back as strings compare with members, and
a misspelled member fails where a misspelled string would not. Imports nothing: the pure
packages may use it (tests/unit/test_layering.py).
"""

from __future__ import annotations

from enum import StrEnum


class RejectReason(StrEnum):
    """An ``errors`` row's ``reason``: why a landing entry was not ingested (README "Bad input")."""

    # The listing's problems (`dicomlake.storage.FileInfo.problem`): the entry is never opened.
    NOT_REGULAR_FILE = "not_regular_file"
    SYMLINK = "symlink"
    SYMLINK_OUTSIDE = "symlink_outside"
    SYMLINK_LOOP = "symlink_loop"
    DANGLING_SYMLINK = "dangling_symlink"
    UNREADABLE_DIR = "unreadable_dir"
    BAD_NAME = "bad_name"
    NAME_TOO_LONG = "name_too_long"
    # Reading the file.
    UNREADABLE = "unreadable"
    CHANGED_WHILE_READING = "changed_while_reading"
    TOO_LARGE = "too_large"
    # Its content (`dicomlake.errors.DicomParseError.reason`).
    EMPTY = "empty"
    NOT_DICOM = "not_dicom"
    TRUNCATED = "truncated"
    CORRUPT = "corrupt"
    TOO_DEEP = "too_deep"
    DICOMDIR = "dicomdir"
    NO_SOP_INSTANCE_UID = "no_sop_instance_uid"
    # Anything else that went wrong with this one file (the task goes on).
    INTERNAL_ERROR = "internal_error"


RETRIED = frozenset({RejectReason.UNREADABLE_DIR})
"""Refusals recorded as ``failed``, so the next run looks again; the other refusals of an entry
are ``skipped``: recorded once per (path, size, mtime), like a file."""


class SourceOutcome(StrEnum):
    """A ``sources`` (ledger) row's ``outcome``: what a run did with a landing file."""

    INGESTED = "ingested"
    DUPLICATE = "duplicate"
    """Its content is in the lake already (same SHA-256)."""
    QUARANTINED = "quarantined"
    """Rejected for what it holds, for good: with an encrypted copy in the lake, unless it is
    over ``ingest.quarantine_max_bytes`` (its errors row has no ``quarantine_path`` then; the
    next run does not read it again)."""
    FAILED = "failed"
    """Rejected without a copy: the next run tries it again."""
    SKIPPED = "skipped"
    """An entry the listing found unreadable as a file, recorded once per path, size, mtime."""


class ChunkKind(StrEnum):
    """A pack chunk's kind (``chunks.chunk_kind``, and bound into its associated data)."""

    PREFIX = "prefix"
    """The header: everything before the pixel data's value."""
    FRAME = "frame"
    SUFFIX = "suffix"
    """What follows the pixel data (trailing padding, signatures)."""
    QUARANTINE = "quarantine"
    """A block of a quarantined file's bytes (`dicomlake.lake.quarantine`)."""


class SnapshotMode(StrEnum):
    """A snapshot's ``mode`` (its id's suffix and its manifest's footer)."""

    FULL = "full"
    INCREMENTAL = "incremental"
    """Compared with the last snapshot of any kind."""
    DIFFERENTIAL = "differential"
    """Compared with the last full snapshot."""


class ScanReason(StrEnum):
    """A manifest row's ``reason``: why a snapshot read the file, or ``unchanged`` when it took
    the base's entry over (`dicomlake.backup.scan`)."""

    UNCHANGED = "unchanged"
    NEW = "new"
    RENAMED_IN = "renamed_in"
    MODIFIED = "modified"
    SIZE_CHANGED = "size_changed"
    LAG_WINDOW = "lag_window"
    FULL = "full"
    OBJECT_DAMAGED = "object_damaged"
    """Unchanged since the base, whose object for it is missing or of another size."""
