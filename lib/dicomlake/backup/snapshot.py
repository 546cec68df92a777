"""Take a full, incremental or differential snapshot of a lake into a backup.

A snapshot lists the lake, compares it with its base manifest (:mod:`dicomlake.backup.scan`
says what is read and why), copies what it must into content-addressed objects
(:mod:`dicomlake.backup.copy`), and commits by publishing its manifest, last. Until then nothing
a restore would use has changed; a killed run leaves objects in ``objects/`` (unreferenced) and
its work area under ``_tmp/``, which keeps retention from collecting them: the next run finds
those objects present and does not store them again.

One snapshot or retention run per backup at a time (the scheduler runs them in sequence).
"""

from __future__ import annotations

import dataclasses
import logging
import uuid
from collections import Counter
from datetime import datetime, timedelta, timezone
from typing import TYPE_CHECKING, Any

import pyarrow as pa
import pyarrow.compute as pc

from dicomlake.backup import manifest
from dicomlake.backup.copy import Copied, CopyJob, copy_files
from dicomlake.backup.layout import (
    BackupLayout,
    committed_ids,
    label_of,
    label_time,
    object_key,
    parse_snapshot_id,
    require_backup_or_new,
    snapshot_id,
    snapshot_mode,
)
from dicomlake.backup.manifest import SnapshotInfo
from dicomlake.backup.places import check_apart
from dicomlake.backup.scan import Listed, Plan, ToRead, classify, entries, list_lake
from dicomlake.config import Config
from dicomlake.errors import BackupError, ForeignManifestError
from dicomlake.lake import delta
from dicomlake.lake.keyring_binding import check_fingerprint
from dicomlake.lake.layout import LakeLayout
from dicomlake.lake.lock import holding
from dicomlake.storage import FileSystem, canonical_uri, filesystem_for, join
from dicomlake.vocab import ScanReason, SnapshotMode

if TYPE_CHECKING:
    from pyspark import SparkContext

    from dicomlake.crypto.keyring import Keyring

log = logging.getLogger(__name__)


@dataclasses.dataclass(frozen=True)
class SnapshotResult(SnapshotInfo):
    """The snapshot taken; ``already_committed`` when it existed before this call (a retry)."""

    already_committed: bool = False


def take_snapshot(
    lake: str,
    backup: str,
    mode: str,
    *,
    config: Config,
    keyring: Keyring,
    sc: SparkContext | None = None,
    now_label: str | None = None,
) -> SnapshotResult:
    """Snapshot ``lake`` into ``backup`` and commit its manifest.

    Parameters
    ----------
    mode
        ``full`` reads every file; ``incremental`` compares with the last snapshot of any kind;
        ``differential`` with the last full one. Without such a base the snapshot is a full.
    keyring
        Authenticates the manifest written (`manifest.encode`) and those read: the base and
        the latest snapshot's must pass `manifest.read_manifest`. One without an
        authentication code (format 1) is not compared with: the snapshot is a full, with
        ``base_unauthenticated`` naming it; an altered one, or one of another keyring, is an
        error naming it, and nothing is taken.
    sc
        None copies in this process (small lakes, tests); a Spark context spreads the copies
        over its executors.
    now_label
        The snapshot's UTC label ``YYYYMMDDTHHMMSSZ`` (e.g. the scheduler's data interval end).
        When absent, the backup filesystem's clock (the mtime of a probe file it writes) gives
        it, never the driver's clock. A label that has a committed snapshot of this lake and
        mode returns that snapshot (the call is idempotent); one of another lake or mode, a
        label older than the latest snapshot, or one later than this host's clock by more than
        `LABEL_AHEAD_HOURS`, is an error.

    The backup must be a backup or nothing yet (`layout.require_backup_or_new`), and apart from
    the lake (`places.check_apart`); ``keyring`` must be the lake's (`check_fingerprint`: its
    secret is the one the lake is bound to), or the manifests would not authenticate under it.
    """
    checked = snapshot_mode(mode)
    if now_label is not None:
        _check_not_ahead(now_label, "pass the time the snapshot is of")
    check_apart(lake, backup, config.hdfs)
    check_fingerprint(filesystem_for(lake, config.hdfs), LakeLayout(lake), keyring)
    bfs = filesystem_for(backup, config.hdfs)
    require_backup_or_new(bfs, BackupLayout(backup))
    with holding(bfs, backup, None, "snapshot", config.lock):
        return _take_locked(
            lake,
            bfs,
            BackupLayout(backup),
            mode=checked,
            config=config,
            keyring=keyring,
            sc=sc,
            now_label=now_label,
        )


@dataclasses.dataclass(frozen=True, kw_only=True)
class _Snapshot:
    """One snapshot being taken: what it reads, where it writes, and what it compares with."""

    lake: str
    lake_fs: FileSystem
    source_root: str | None
    """The filesystem's own snapshot of the lake, read instead of the live lake when taken."""
    bfs: FileSystem
    layout: BackupLayout
    sid: str
    base: manifest.Manifest | None
    """The manifest compared with (None for a full)."""
    latest: manifest.Manifest | None
    """The newest snapshot's manifest (hints, and the watermark an incremental keeps)."""
    base_unauthenticated: str | None
    started_ms: int
    """When the snapshot started, by the backup filesystem's clock."""
    config: Config
    keyring: Keyring
    sc: SparkContext | None

    @property
    def read_root(self) -> str:
        return self.source_root or self.lake


def _take_locked(
    lake: str,
    bfs: FileSystem,
    layout: BackupLayout,
    *,
    mode: SnapshotMode,
    config: Config,
    keyring: Keyring,
    sc: SparkContext | None,
    now_label: str | None,
) -> SnapshotResult:
    lake_fs = filesystem_for(lake, config.hdfs)
    ids = committed_ids(bfs, layout)
    started_ms = _clock_ms(bfs, layout)
    label = now_label
    if label is None:
        after_latest = int(label_time(ids[-1][:16]).timestamp() * 1000) + 1000 if ids else 0
        label = label_of(max(started_ms, after_latest))
        _check_not_ahead(
            label,
            f"the latest snapshot {ids[-1]} is labelled in the future (remove its manifest if "
            "that is a mistake)"
            if after_latest > started_ms
            else "the backup filesystem's clock is ahead of this host's: set them right",
        )
    snapshot_id(label, mode)  # checks the label's form before it is compared
    done = [sid for sid in ids if sid.startswith(label + "-")]
    if done:
        log.info("snapshot %s is committed already", done[0])
        info = manifest.read_manifest(bfs, layout, done[0], keyring).info
        _check_retry(info, lake, mode, [sid for sid in ids if sid < label])
        return SnapshotResult(**_fields(info), already_committed=True)
    if ids and label < ids[-1]:
        raise BackupError(f"snapshot label {label} is older than the latest snapshot {ids[-1]}")

    base_id = _base(ids, mode)
    latest_id = ids[-1] if ids else None
    latest = _compared(bfs, layout, latest_id, keyring, mode)
    base = latest if base_id == latest_id else _compared(bfs, layout, base_id, keyring, mode)
    for read in (latest, base):
        if read is not None and canonical_uri(read.info.lake) != canonical_uri(lake):
            raise BackupError(
                f"backup {layout.root} holds snapshots of lake {read.info.lake} (snapshot "
                f"{read.info.snapshot_id}); this is {lake}: no snapshot taken. Back each lake "
                "up into its own backup"
            )
    untrusted = next((m.info.snapshot_id for m in (base, latest) if m and m.problem), None)
    if untrusted is not None:
        latest = base = None  # not even for hints
        if mode != SnapshotMode.FULL:
            log.warning(
                "the manifest of snapshot %s has no authentication code (format 1): not "
                "compared with, this %s snapshot is a full one (every file is read)",
                untrusted,
                mode,
            )
    sid = snapshot_id(label, mode if base else SnapshotMode.FULL)
    work = layout.work(sid)
    bfs.makedirs(work)  # marks the snapshot in progress (see retention)
    fs_snapshot = f"dicomlake-{sid}"
    source_root = lake_fs.create_snapshot(lake, fs_snapshot)
    try:
        run = _Snapshot(
            lake=lake,
            lake_fs=lake_fs,
            source_root=source_root,
            bfs=bfs,
            layout=layout,
            sid=sid,
            base=base,
            latest=latest,
            base_unauthenticated=untrusted if mode != SnapshotMode.FULL else None,
            started_ms=started_ms,
            config=config,
            keyring=keyring,
            sc=sc,
        )
        info = _take(run)
    finally:
        if source_root is not None:
            lake_fs.delete_snapshot(lake, fs_snapshot)
    _drop_stale_work(bfs, layout, sid)
    log.info(
        "snapshot %s committed: %d files, %d objects copied (%d bytes)",
        sid,
        info.files,
        info.objects_copied,
        info.bytes_copied,
    )
    return SnapshotResult(**_fields(info))


def _take(run: _Snapshot) -> SnapshotInfo:
    bfs, layout, sid, base = run.bfs, run.layout, run.sid, run.base
    listing = list_lake(run.lake_fs, run.read_root, live=run.source_root is None)
    latest = entries(run.latest.rows) if run.latest else {}
    # An incremental's base is the latest snapshot: its entries, made once (a row per lake file)
    compared = None if base is None else latest if base is run.latest else entries(base.rows)
    scan_from = None
    if base is not None:
        base_wm = base.info.watermark_ms
        # Past this start, the base's watermark was raised by a file from the future (before
        # such files were kept out of it): no file can be trusted unchanged by it.
        if base_wm <= run.started_ms:
            scan_from = base_wm - int(run.config.snapshot.lag_seconds * 1000)
    plan = _objects_checked(classify(listing.files, compared, scan_from, latest), run)
    job = CopyJob(run.read_root, layout.root, layout.work(sid), run.config.hdfs)
    copied = copy_files(job, plan.to_read, run.sc)

    rows = _rows(plan, copied)
    previous_wm = 0  # a full starts afresh
    if base is not None and run.latest is not None:
        previous_wm = run.latest.info.watermark_ms
    reasons = Counter(
        t.reason for t, c in zip(plan.to_read, copied, strict=True) if c.sha256 is not None
    )
    read = [c for c in copied if c.sha256 is not None]
    info = SnapshotInfo(
        snapshot_id=sid,
        mode=parse_snapshot_id(sid)[1],
        created=parse_snapshot_id(sid)[0],
        base=base.info.snapshot_id if base else None,
        lake=run.lake,
        source="live" if run.source_root is None else "hdfs-snapshot",
        watermark_ms=_watermark(listing.files, previous_wm, run.started_ms),
        scan_from_ms=scan_from,
        files=rows.num_rows,
        bytes_total=pc.sum(rows["size"]).as_py() or 0,
        files_read=len(read),
        objects_copied=sum(c.stored for c in read),
        bytes_copied=sum(c.size for c in read if c.stored),
        objects_reused=sum(not c.stored for c in read),
        unchanged=len(plan.unchanged),
        new=reasons[ScanReason.NEW],
        renamed_in=reasons[ScanReason.RENAMED_IN],
        modified=reasons[ScanReason.MODIFIED],
        size_changed=reasons[ScanReason.SIZE_CHANGED],
        lag_window=reasons[ScanReason.LAG_WINDOW],
        deleted=len(plan.deleted),
        vanished=len(copied) - len(read),
        excluded=listing.excluded,
        runs_excluded=listing.runs_excluded,
        table_versions=delta.table_versions(rows["path"].to_pylist()),
        keyring_fingerprint=run.keyring.fingerprint,
        base_unauthenticated=run.base_unauthenticated,
    )
    tmp = join(layout.work(sid), "manifest.parquet")
    bfs.write_bytes(tmp, manifest.encode(rows, info, run.keyring))
    bfs.publish(tmp, layout.manifest(sid))  # the commit point
    return info


def _objects_checked(plan: Plan, run: _Snapshot) -> Plan:
    """``plan`` with each file taken over from the base read again when its object is missing
    or of another size (deleted or damaged since): a snapshot never refers to an object it has
    not seen whole. One listing of the objects, not a look per file."""
    if not plan.unchanged:
        return plan
    held = {f.path: f.size for f in run.bfs.list_files(run.layout.objects)}
    unchanged, again = {}, []
    for rel, entry in plan.unchanged.items():
        if held.get(run.layout.uri(entry.object)) == entry.size:
            unchanged[rel] = entry
        else:
            again.append(
                ToRead(Listed(rel, entry.size, entry.mtime_ms), ScanReason.OBJECT_DAMAGED, None)
            )
    if again:
        log.warning(
            "%d file(s) unchanged since the base have no whole object in the backup (deleted or "
            "damaged since): read and stored again",
            len(again),
        )
    return Plan(unchanged, [*plan.to_read, *again], plan.deleted)


def _rows(plan: Plan, copied: list[Copied]) -> pa.Table:
    out: list[dict[str, Any]] = [
        {
            "path": p,
            "size": e.size,
            "mtime_ms": e.mtime_ms,
            "sha256": e.sha256,
            "object": e.object,
            "reason": ScanReason.UNCHANGED,
        }
        for p, e in plan.unchanged.items()
    ]
    for item, c in zip(plan.to_read, copied, strict=True):
        if c.path != item.file.path:
            raise BackupError(f"copy results out of order: {c.path} for {item.file.path}")
        if c.sha256 is not None:
            out.append(
                {
                    "path": c.path,
                    "size": c.size,
                    "mtime_ms": item.file.mtime_ms,
                    "sha256": c.sha256,
                    "object": object_key(c.sha256),
                    "reason": item.reason,
                }
            )
    out.sort(key=lambda r: r["path"])
    return pa.Table.from_pylist(out, schema=manifest.MANIFEST_SCHEMA)


def _base(ids: list[str], mode: SnapshotMode) -> str | None:
    if mode == SnapshotMode.FULL or not ids:
        return None
    if mode == SnapshotMode.INCREMENTAL:
        return ids[-1]
    fulls = [sid for sid in ids if parse_snapshot_id(sid)[1] == SnapshotMode.FULL]
    return fulls[-1] if fulls else None


def _compared(
    fs: FileSystem, layout: BackupLayout, sid: str | None, keyring: Keyring, mode: SnapshotMode
) -> manifest.Manifest | None:
    """The authenticated manifest of ``sid`` (None for None), or one without a code (its
    ``problem`` says so). One of another keyring stops the snapshot; so does one that fails
    otherwise (altered, unreadable), except for a full, which reads every file and does not
    compare with it: the way past such a manifest."""
    if sid is None:
        return None
    try:
        return manifest.read_manifest(fs, layout, sid, keyring, legacy=True)
    except ForeignManifestError as exc:
        raise ForeignManifestError(
            f"{exc}: no snapshot taken; pass the keyring this backup's snapshots are taken "
            "with, or back up with this one into another backup"
        ) from exc
    except BackupError as exc:
        if mode == SnapshotMode.FULL:
            log.warning("%s: not compared with; this full snapshot reads every file", exc)
            return None
        raise type(exc)(
            f"{exc}: no snapshot taken (the {mode} snapshot compares with it); take a --mode "
            "full snapshot, which does not, and find who wrote it"
        ) from exc


def _clock_ms(fs: FileSystem, layout: BackupLayout) -> int:
    """Now by the backup filesystem's clock: the mtime of a probe file written in its work area
    (as the lock measures ages), never the driver's clock."""
    probe = join(layout.tmp, f".clock-{uuid.uuid4().hex}")
    fs.write_bytes(probe, b"")
    status = fs.status(probe)
    fs.delete(probe)
    if status is None:
        raise BackupError(f"clock probe {probe} vanished right after it was written")
    return status.mtime_ms


LABEL_AHEAD_HOURS = 1
"""How far a label may be past this host's clock (clocks and schedulers differ a little). A
label further ahead would be the latest snapshot for long: every unlabelled snapshot would be
labelled after it, a scheduler's labels refused as older, and retention keeps it uncounted."""


def _check_not_ahead(label: str, remedy: str) -> None:
    now = datetime.now(timezone.utc)
    if label_time(label) > now + timedelta(hours=LABEL_AHEAD_HOURS):
        raise BackupError(
            f"snapshot label {label} is later than this host's clock ({now:%Y%m%dT%H%M%SZ}) "
            f"by more than {LABEL_AHEAD_HOURS} h: {remedy}"
        )


def _check_retry(info: SnapshotInfo, lake: str, mode: SnapshotMode, earlier: list[str]) -> None:
    """BackupError unless the snapshot committed at a label is what this call would have
    taken: of the same lake, and of the mode asked (or a full where it had no base, or only an
    unauthenticated one)."""
    became = mode if _base(earlier, mode) and not info.base_unauthenticated else SnapshotMode.FULL
    if info.mode not in (mode, became) or canonical_uri(info.lake) != canonical_uri(lake):
        raise BackupError(
            f"snapshot label {info.snapshot_id[:16]} is taken by {info.snapshot_id} of "
            f"{info.lake}; this call asks for a {mode} snapshot of {lake}: give another label"
        )


def _watermark(files: dict[str, Listed], previous_ms: int, started_ms: int) -> int:
    """The highest mtime listed, not counting files modified after the snapshot started (a
    skewed clock, a touch): those are in no watermark, so every snapshot reads them again
    until that time has passed. Never below ``previous_ms`` unless that one is past the start."""
    future = sorted(f.path for f in files.values() if f.mtime_ms > started_ms)
    if future:
        log.warning(
            "%d lake files are modified after the snapshot's start (%s by the backup "
            "filesystem's clock), e.g. %s: left out of its watermark, read again by every "
            "snapshot until then",
            len(future),
            label_of(started_ms),
            future[0],
        )
    listed = [f.mtime_ms for f in files.values() if f.mtime_ms <= started_ms]
    return max([*listed, previous_ms if previous_ms <= started_ms else 0])


def _drop_stale_work(fs: FileSystem, layout: BackupLayout, sid: str) -> None:
    """Remove this run's work area and those of earlier killed runs (their objects are kept)."""
    for work in fs.list_dirs(layout.tmp):
        if work.rstrip("/").rsplit("/", 1)[-1] <= sid:
            fs.delete(work, recursive=True)


def _fields(info: SnapshotInfo) -> dict[str, Any]:
    return {f.name: getattr(info, f.name) for f in dataclasses.fields(SnapshotInfo)}
