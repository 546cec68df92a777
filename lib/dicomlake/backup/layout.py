"""Where everything lives in a backup, and how snapshots are named.

::

    <backup>/objects/ab/cdef...           file contents, named by their SHA-256 (stored once)
    <backup>/manifests/<snapshot>.parquet  one per committed snapshot: the snapshot exists iff
                                           its manifest does (published by rename, last)
    <backup>/_tmp/<snapshot>/              work area of a snapshot in progress (object and
                                           manifest temp files); its presence blocks object GC

Snapshot ids are ``<label>-<mode>`` with a UTC label ``YYYYMMDDTHHMMSSZ``, so they sort by time.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime, timezone

from dicomlake.errors import BackupError
from dicomlake.storage import join
from dicomlake.vocab import SnapshotMode

_LABEL = re.compile(r"\d{8}T\d{6}Z")
_SNAPSHOT_ID = re.compile(rf"(\d{{8}}T\d{{6}}Z)-({'|'.join(SnapshotMode)})")
_SHA256 = re.compile(r"[0-9a-f]{64}")


@dataclass(frozen=True)
class BackupLayout:
    """Paths of one backup, all as URIs under ``root``."""

    root: str

    @property
    def objects(self) -> str:
        return join(self.root, "objects")

    @property
    def manifests(self) -> str:
        return join(self.root, "manifests")

    @property
    def tmp(self) -> str:
        return join(self.root, "_tmp")

    def work(self, snapshot_id: str) -> str:
        """The temp area of one snapshot in progress."""
        return join(self.tmp, snapshot_id)

    def manifest(self, snapshot_id: str) -> str:
        return join(self.manifests, snapshot_id + ".parquet")

    def uri(self, key: str) -> str:
        """The URI of an object key (keys are relative to the backup root)."""
        return join(self.root, key)


def object_key(sha256_hex: str) -> str:
    """The key of the object holding content with this SHA-256: ``objects/ab/cdef...``."""
    if not _SHA256.fullmatch(sha256_hex):
        raise BackupError(f"not a SHA-256 hex digest: {sha256_hex!r}")
    return f"objects/{sha256_hex[:2]}/{sha256_hex[2:]}"


def sha_of_key(key: str) -> str | None:
    """The SHA-256 an object key names, or None when ``key`` is not an object key."""
    parts = key.split("/")
    if len(parts) != 3 or parts[0] != "objects":
        return None
    digest = parts[1] + parts[2]
    return digest if _SHA256.fullmatch(digest) and len(parts[1]) == 2 else None


def snapshot_mode(mode: str) -> SnapshotMode:
    """The `SnapshotMode` named ``mode``; a BackupError names the bad one."""
    try:
        return SnapshotMode(mode)
    except ValueError:
        names = ", ".join(SnapshotMode)
        raise BackupError(f"bad snapshot mode {mode!r}: must be one of {names}") from None


def snapshot_id(label: str, mode: str) -> str:
    """``<label>-<mode>``, after checking both."""
    if not _LABEL.fullmatch(label):
        raise BackupError(
            f"bad snapshot label {label!r}: expected UTC YYYYMMDDTHHMMSSZ, e.g. 20261127T031500Z"
        )
    return f"{label}-{snapshot_mode(mode)}"


def parse_snapshot_id(sid: str) -> tuple[datetime, SnapshotMode]:
    """The time and mode a snapshot id names."""
    m = _SNAPSHOT_ID.fullmatch(sid)
    if not m:
        raise BackupError(f"bad snapshot id {sid!r}: expected e.g. 20261127T031500Z-incremental")
    return label_time(m.group(1)), SnapshotMode(m.group(2))


def label_time(label: str) -> datetime:
    return datetime.strptime(label, "%Y%m%dT%H%M%SZ").replace(tzinfo=timezone.utc)


def label_of(ms: int) -> str:
    """The label of a filesystem time in milliseconds since the epoch (UTC)."""
    return datetime.fromtimestamp(ms / 1000, tz=timezone.utc).strftime("%Y%m%dT%H%M%SZ")
