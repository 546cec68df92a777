"""Rebuild a lake as a snapshot saw it, byte for byte.

The files are written under a hidden sibling of the target and checked against their SHA-256 on
the way; only when all are there is the directory published into place by one rename, so a
failed restore never leaves a half-restored target. File mtimes are not restored (the storage
interface has no call to set them); contents and paths are.
"""

from __future__ import annotations

import dataclasses
import hashlib
import logging
import os
from typing import TYPE_CHECKING, Any

import pyarrow as pa

from dicomlake.backup import manifest
from dicomlake.backup.copy import CHUNK
from dicomlake.backup.layout import BackupLayout, require_backup, require_snapshot
from dicomlake.backup.places import check_target
from dicomlake.config import Config
from dicomlake.errors import (
    BackupError,
    ManifestAuthError,
    StorageError,
    UnauthenticatedManifestError,
)
from dicomlake.lake.lock import holding
from dicomlake.progress import track
from dicomlake.storage import FileSystem, filesystem_for, join, os_path

if TYPE_CHECKING:
    from dicomlake.crypto.keyring import Keyring

log = logging.getLogger(__name__)


@dataclasses.dataclass(frozen=True)
class RestoreResult:
    """What a restore wrote."""

    snapshot_id: str
    target: str
    files: int
    bytes: int

    def summary(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def restore(
    backup: str,
    snapshot_id: str,
    target: str,
    *,
    keyring: Keyring,
    config: Config,
    trust_unauthenticated: bool = False,
) -> RestoreResult:
    """Write the files of snapshot ``snapshot_id`` of ``backup`` into ``target``.

    ``backup`` must hold a backup and ``snapshot_id`` name one of its committed snapshots;
    ``target`` must be missing or an empty directory, outside every backup and lake
    (`places.check_target`): all checked before anything is read or written. Every manifest
    path must stay inside the target (`manifest.entry_problems`), checked before anything is
    written; every file's content is checked against its manifest's SHA-256 and size, and a
    mismatch names the file and object. Holds the backup's lock, so no retention removes the
    objects it reads.

    The manifest must authenticate under ``keyring`` (`manifest.read_manifest`), checked before
    anything is written. ``trust_unauthenticated`` restores one without an authentication code
    (format 1, written before manifests had one) all the same; never one that is altered,
    another snapshot's, or of another keyring.
    """
    bfs, tfs = filesystem_for(backup, config.hdfs), filesystem_for(target, config.hdfs)
    layout = BackupLayout(backup)
    require_backup(bfs, layout)
    require_snapshot(bfs, layout, snapshot_id)
    target = target.rstrip("/")
    _check_entry(target)
    check_target(tfs, target, backup, config.hdfs)
    _check_empty(tfs, target)
    with holding(bfs, backup, None, "restore", config.lock):
        rows = _authenticated_rows(bfs, layout, snapshot_id, keyring, trust_unauthenticated)
        return _restore_locked(bfs, tfs, layout, snapshot_id, rows, target)


def _authenticated_rows(
    fs: FileSystem, layout: BackupLayout, sid: str, keyring: Keyring, trust_unauthenticated: bool
) -> pa.Table:
    """The rows of ``sid``'s manifest once it has passed `manifest.read_manifest`."""
    try:
        read = manifest.read_manifest(fs, layout, sid, keyring, legacy=trust_unauthenticated)
    except UnauthenticatedManifestError as exc:
        raise UnauthenticatedManifestError(
            f"{exc}: nothing restored; if nobody else could have written to the backup, "
            "restore it with --trust-unauthenticated (trust_unauthenticated=True)"
        ) from exc
    except ManifestAuthError as exc:
        raise type(exc)(
            f"{exc}: nothing restored (not even with --trust-unauthenticated, which only "
            "admits manifests without a code)"
        ) from exc
    if read.problem:
        log.warning("%s: restored as asked (--trust-unauthenticated)", read.problem)
    return read.rows


def _restore_locked(
    bfs: FileSystem,
    tfs: FileSystem,
    layout: BackupLayout,
    snapshot_id: str,
    rows: pa.Table,
    target: str,
) -> RestoreResult:
    entries = rows.select(["path", "size", "sha256", "object"]).to_pylist()
    _check_entries(snapshot_id, layout.manifest(snapshot_id), entries)
    parent, name = target.rsplit("/", 1) if "/" in target else (".", target)
    staging = join(parent, f".{name}.restore-{snapshot_id}")
    tfs.delete(staging, recursive=True)  # a killed restore's leftovers
    tfs.makedirs(staging)
    total = 0
    try:
        for row in track(entries, len(entries), f"restore {snapshot_id}"):
            _restore_file(bfs, tfs, layout, snapshot_id, row, join(staging, row["path"]))
            total += row["size"]
    except BaseException:
        tfs.delete(staging, recursive=True)
        raise
    local = os_path(target)
    mode = os.stat(local).st_mode & 0o7777 if local and os.path.isdir(local) else None
    if tfs.exists(target):
        tfs.delete(target)  # the empty directory, so the rename below can take its place
    tfs.publish(staging, target)
    if local is not None and mode is not None:  # the directory the operator made keeps its mode
        os.chmod(local, mode)
    log.info("restored snapshot %s into %s: %d files", snapshot_id, target, rows.num_rows)
    return RestoreResult(snapshot_id, target, rows.num_rows, total)


def _check_entries(sid: str, uri: str, entries: list[dict[str, Any]]) -> None:
    """Refuse, before anything is written, a manifest with a row a restore cannot write
    (`manifest.entry_problems`)."""
    bad = [f"{entries[n]['path']!r} ({why})" for n, why in manifest.entry_problems(entries).items()]
    if bad:
        raise BackupError(
            f"snapshot {sid}: manifest {uri} has {len(bad)} entries a restore cannot write, "
            f"nothing restored: {'; '.join(bad[:5])}{' ...' if len(bad) > 5 else ''}"
        )


def _check_entry(target: str) -> None:
    """Refuse a local target that is a link (the restore replaces the target's entry: the link
    would go, the directory it names be left empty), no directory, or a mount point (which
    cannot be replaced: found only after the whole copy was written beside it)."""
    local = os_path(target)
    if local is None:
        return
    if os.path.islink(local):
        raise BackupError(f"restore target {target} is a symbolic link: name the directory itself")
    if os.path.lexists(local) and not os.path.isdir(local):
        raise BackupError(f"restore target {target} is not a directory: name a new one")
    if os.path.ismount(local):
        raise BackupError(
            f"restore target {target} is a mount point, which a restore cannot put in place: "
            f"name a new directory in it (e.g. {target}/lake)"
        )


def _check_empty(fs: FileSystem, target: str) -> None:
    if fs.status(target) is None:
        return
    if next(iter(fs.list_files(target)), None) is not None or fs.list_dirs(target):
        raise BackupError(f"restore target {target} is not empty: restore into a new directory")


def _restore_file(
    bfs: FileSystem, tfs: FileSystem, layout: BackupLayout, sid: str, row: dict[str, Any], dst: str
) -> None:
    h = hashlib.sha256()
    size = 0
    try:
        with bfs.open_read(layout.uri(row["object"])) as src, tfs.open_write(dst) as out:
            while chunk := src.read(CHUNK):
                h.update(chunk)
                size += len(chunk)
                out.write(chunk)
    except StorageError as exc:
        raise BackupError(
            f"snapshot {sid}: cannot restore {row['path']} from object {row['object']}: {exc}"
        ) from exc
    if (h.hexdigest(), size) != (row["sha256"], row["size"]):
        raise BackupError(
            f"snapshot {sid}: object {row['object']} of {row['path']} is damaged "
            f"(sha256 {h.hexdigest()}, {size} bytes; expected {row['sha256']}, "
            f"{row['size']} bytes): run verify"
        )
