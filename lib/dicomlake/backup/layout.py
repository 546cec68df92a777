"""Where everything lives in a backup, and how snapshots are named.

::

    <backup>/objects/ab/cdef...           file contents, named by their SHA-256 (stored once)
    <backup>/manifests/<snapshot>.parquet  one per committed snapshot: the snapshot exists iff
                                           its manifest does (published by rename, last)
    <backup>/_tmp/<snapshot>/              work area of a snapshot in progress (object and
                                           manifest temp files); its presence blocks object GC

Snapshot ids are ``<label>-<mode>`` with a UTC label ``YYYYMMDDTHHMMSSZ``, so they sort by time.
A backup is a directory holding ``objects/`` or ``manifests/``; a command given a snapshot id
takes only the id of a committed snapshot (`require_snapshot`), and no path is ever made of
anything else.
"""

from __future__ import annotations

import contextlib
import logging
import re
from dataclasses import dataclass
from datetime import datetime, timezone

from dicomlake.errors import BackupError, StorageError
from dicomlake.storage import FileSystem, below, join
from dicomlake.storage.names import is_hidden
from dicomlake.vocab import SnapshotMode

log = logging.getLogger(__name__)

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
        parse_snapshot_id(snapshot_id)  # a path is made of a snapshot id only
        return join(self.tmp, snapshot_id)

    def manifest(self, snapshot_id: str) -> str:
        parse_snapshot_id(snapshot_id)
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
    label_time(label)
    return f"{label}-{snapshot_mode(mode)}"


def parse_snapshot_id(sid: str) -> tuple[datetime, SnapshotMode]:
    """The time and mode a snapshot id names."""
    m = _SNAPSHOT_ID.fullmatch(sid)
    if m:
        with contextlib.suppress(BackupError):
            return label_time(m.group(1)), SnapshotMode(m.group(2))
    raise BackupError(f"bad snapshot id {sid!r}: expected e.g. 20261127T031500Z-incremental")


def label_time(label: str) -> datetime:
    """The UTC time a label names; a BackupError names a label of another form or no time."""
    try:
        if _LABEL.fullmatch(label):
            return datetime.strptime(label, "%Y%m%dT%H%M%SZ").replace(tzinfo=timezone.utc)
    except ValueError:
        pass  # a month 13, say
    raise BackupError(
        f"bad snapshot label {label!r}: expected UTC YYYYMMDDTHHMMSSZ, e.g. 20261127T031500Z"
    )


def label_of(ms: int) -> str:
    """The label of a filesystem time in milliseconds since the epoch (UTC)."""
    return datetime.fromtimestamp(ms / 1000, tz=timezone.utc).strftime("%Y%m%dT%H%M%SZ")


def committed_ids(fs: FileSystem, layout: BackupLayout) -> list[str]:
    """Ids of the committed snapshots, oldest first: the files ``<snapshot id>.parquet`` right
    in ``manifests/``. Anything else there (a subdirectory's files, another name) is no
    snapshot: skipped with a warning naming it; hidden names (``.``, ``_``) silently. A
    manifest's name on what is no regular file (a link, a folder, a FIFO) is a BackupError:
    passed over, its snapshot would be lost to retention, which deletes the objects only it
    names."""
    ids, odd = [], []
    for f in fs.list_entries(layout.manifests):
        name = below(f.path, layout.manifests)
        if not name or is_hidden(name):
            continue
        sid = name.removesuffix(".parquet")
        try:
            parse_snapshot_id(sid)
        except BackupError:
            log.warning("%s is no snapshot manifest (manifests/<snapshot id>.parquet)", f.path)
            continue
        if f.problem is None:
            ids.append(sid)
        else:
            odd.append(f"{f.path} ({f.problem})")
    for folder in fs.list_dirs(layout.manifests):
        name = below(folder, layout.manifests) or ""
        if name.endswith(".parquet") and _SNAPSHOT_ID.fullmatch(name.removesuffix(".parquet")):
            odd.append(f"{folder} (a folder)")
    if odd:
        raise BackupError(
            f"{odd[0]} is no regular file, named as a snapshot's manifest: put the manifest "
            "itself there, or delete it if it is no snapshot"
        )
    return sorted(ids)


def require_snapshot(fs: FileSystem, layout: BackupLayout, sid: str) -> None:
    """BackupError unless ``sid`` is the id of a committed snapshot of the backup: the one check
    of a snapshot id a command is given, made before anything is read by it or written."""
    parse_snapshot_id(sid)
    ids = committed_ids(fs, layout)
    if sid not in ids:
        known = ", ".join(ids) or "none"
        raise BackupError(f"no snapshot {sid} in {layout.root} (snapshots: {known})")


def backup_problem(fs: FileSystem, layout: BackupLayout) -> str:
    """Why ``layout.root`` holds no backup, or "" when it does (``objects/`` or ``manifests/``,
    each a directory where there)."""
    try:
        present = [p for p in (layout.manifests, layout.objects) if fs.exists(p)]
        if not present:
            return "neither manifests/ nor objects/ there"
        dirs = {d.rstrip("/").rsplit("/", 1)[-1] for d in fs.list_dirs(layout.root)}
    except StorageError as exc:  # the root is a file, say
        return f"neither manifests/ nor objects/ there: {exc}"
    files = [p for p in present if p.rstrip("/").rsplit("/", 1)[-1] not in dirs]
    return f"{files[0]} is not a directory" if files else ""


def require_backup(fs: FileSystem, layout: BackupLayout) -> None:
    """BackupError unless ``layout.root`` holds a backup: a command on a mistyped backup would
    otherwise find no snapshot, report nothing wrong and succeed, and its lock would make the
    directory."""
    if problem := backup_problem(fs, layout):
        raise BackupError(f"no backup at {layout.root} ({problem})")


def require_backup_or_new(fs: FileSystem, layout: BackupLayout) -> None:
    """BackupError unless ``layout.root`` holds a backup or nothing yet: missing, or a directory
    with hidden entries only (a lock, a killed first snapshot's work area). A first snapshot
    then makes a backup in a place of its own, never in a file or among other files."""
    if not backup_problem(fs, layout):
        return
    for f in fs.list_entries(layout.root):
        inside = below(f.path, layout.root)
        if not inside or not is_hidden(inside.split("/")[0]):
            what = "a file" if not inside else f"a directory of other files ({f.path})"
            raise BackupError(
                f"no backup at {layout.root} and it is {what}: give a backup, or a new or "
                "empty directory"
            )
