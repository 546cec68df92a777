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
from typing import TYPE_CHECKING, Any

import pyarrow as pa
import pyarrow.compute as pc

from dicomlake.backup import manifest
from dicomlake.backup.copy import Copied, CopyJob, copy_files
from dicomlake.backup.layout import (
    BackupLayout,
    label_of,
    label_time,
    object_key,
    parse_snapshot_id,
    snapshot_id,
    snapshot_mode,
)
from dicomlake.backup.manifest import SnapshotInfo
from dicomlake.backup.scan import Entry, Plan, classify, entries, list_lake
from dicomlake.config import Config
from dicomlake.errors import BackupError
from dicomlake.lake import delta
from dicomlake.lake.lock import holding
from dicomlake.storage import FileSystem, filesystem_for, join
from dicomlake.vocab import ScanReason, SnapshotMode

if TYPE_CHECKING:
    from pyspark import SparkContext

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
    sc: SparkContext | None = None,
    now_label: str | None = None,
) -> SnapshotResult:
    """Snapshot ``lake`` into ``backup`` and commit its manifest.

    Parameters
    ----------
    mode
        ``full`` reads every file; ``incremental`` compares with the last snapshot of any kind;
        ``differential`` with the last full one. Without such a base the snapshot is a full.
    sc
        None copies in this process (small lakes, tests); a Spark context spreads the copies
        over its executors.
    now_label
        The snapshot's UTC label ``YYYYMMDDTHHMMSSZ`` (e.g. the scheduler's data interval end).
        When absent, the backup filesystem's clock (the mtime of a probe file it writes) gives
        it, never the driver's clock. A label that has a committed snapshot returns that
        snapshot (the call is idempotent); a label older than the latest snapshot is an error.
    """
    checked = snapshot_mode(mode)
    bfs = filesystem_for(backup, config.hdfs)
    with holding(bfs, backup, None, "snapshot", config.lock):
        return _take_locked(
            lake, bfs, BackupLayout(backup), mode=checked, config=config, sc=sc, now_label=now_label
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
    base_id: str | None
    ids: list[str]
    """The backup's committed snapshots, oldest first."""
    config: Config
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
    sc: SparkContext | None,
    now_label: str | None,
) -> SnapshotResult:
    lake_fs = filesystem_for(lake, config.hdfs)
    ids = manifest.committed_ids(bfs, layout)
    label = now_label if now_label is not None else _clock_label(bfs, layout, ids)
    snapshot_id(label, mode)  # checks the label's form before it is compared
    done = [sid for sid in ids if sid.startswith(label + "-")]
    if done:
        log.info("snapshot %s is committed already", done[0])
        info = manifest.read_info(bfs, layout, done[0])
        return SnapshotResult(**_fields(info), already_committed=True)
    if ids and label < ids[-1]:
        raise BackupError(f"snapshot label {label} is older than the latest snapshot {ids[-1]}")

    base_id = _base(ids, mode)
    sid = snapshot_id(label, mode if base_id else SnapshotMode.FULL)
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
            base_id=base_id,
            ids=ids,
            config=config,
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
    bfs, layout, sid, base_id, ids = run.bfs, run.layout, run.sid, run.base_id, run.ids
    listing = list_lake(run.lake_fs, run.read_root, live=run.source_root is None)
    latest_id = ids[-1] if ids else None
    latest = _entries(bfs, layout, latest_id)
    base = latest if base_id == latest_id else _entries(bfs, layout, base_id)
    scan_from = None
    if base_id is not None:
        lag_ms = int(run.config.snapshot.lag_seconds * 1000)
        scan_from = manifest.read_info(bfs, layout, base_id).watermark_ms - lag_ms
    plan = classify(listing.files, base if base_id else None, scan_from, latest)
    job = CopyJob(run.read_root, layout.root, layout.work(sid), run.config.hdfs)
    copied = copy_files(job, plan.to_read, run.sc)

    rows = _rows(plan, copied)
    previous_wm = manifest.read_info(bfs, layout, latest_id).watermark_ms if latest_id else 0
    listed_wm = max((f.mtime_ms for f in listing.files.values()), default=0)
    reasons = Counter(
        t.reason for t, c in zip(plan.to_read, copied, strict=True) if c.sha256 is not None
    )
    read = [c for c in copied if c.sha256 is not None]
    info = SnapshotInfo(
        snapshot_id=sid,
        mode=parse_snapshot_id(sid)[1],
        created=parse_snapshot_id(sid)[0],
        base=base_id,
        lake=run.lake,
        source="live" if run.source_root is None else "hdfs-snapshot",
        watermark_ms=max(previous_wm, listed_wm),
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
    )
    tmp = join(layout.work(sid), "manifest.parquet")
    bfs.write_bytes(tmp, manifest.encode(rows, info))
    bfs.publish(tmp, layout.manifest(sid))  # the commit point
    return info


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


def _entries(fs: FileSystem, layout: BackupLayout, sid: str | None) -> dict[str, Entry]:
    return {} if sid is None else entries(manifest.read_rows(fs, layout, sid))


def _clock_label(fs: FileSystem, layout: BackupLayout, ids: list[str]) -> str:
    """A label from the backup filesystem's clock, later than every committed snapshot's."""
    probe = join(layout.tmp, f".clock-{uuid.uuid4().hex}")
    fs.write_bytes(probe, b"")
    status = fs.status(probe)
    fs.delete(probe)
    if status is None:
        raise BackupError(f"clock probe {probe} vanished right after it was written")
    ms = status.mtime_ms
    if ids:
        ms = max(ms, int(label_time(ids[-1][:16]).timestamp() * 1000) + 1000)
    return label_of(ms)


def _drop_stale_work(fs: FileSystem, layout: BackupLayout, sid: str) -> None:
    """Remove this run's work area and those of earlier killed runs (their objects are kept)."""
    for work in fs.list_dirs(layout.tmp):
        if work.rstrip("/").rsplit("/", 1)[-1] <= sid:
            fs.delete(work, recursive=True)


def _fields(info: SnapshotInfo) -> dict[str, Any]:
    return {f.name: getattr(info, f.name) for f in dataclasses.fields(SnapshotInfo)}
