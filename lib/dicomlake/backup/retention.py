"""Retention: keep the last N daily and M weekly snapshots, then collect unreferenced objects.

``keep_daily``: for each of the N most recent days that have snapshots, the day's newest one;
``keep_weekly``: the same for the M most recent ISO weeks (restic's and borg's rules: when
backups stop for a while, what is left is not deleted for being old). Days are those of the
snapshot labels (UTC). Snapshots labelled after ``today`` are always kept and not counted: a
label in the future is a clock or caller mistake (a snapshot refuses one more than an hour
ahead), not a reason to delete older ones.

Every manifest lists every file, so any manifest may go. Only manifests that authenticate
(`manifest.read_manifest`, format 1 ones older than the first with a code included) are
counted: one that does not (planted, altered, of another keyring, unreadable) is neither
counted nor removed, and the objects it names are kept, so writing a manifest into the backup
cannot make retention delete a genuine snapshot. Manifests are deleted first; then every
object no kept manifest refers to is deleted. Object collection is skipped while a snapshot is
in progress or was killed (its ``_tmp/<snapshot>`` work area is there: its objects are not in
any manifest yet); the next successful snapshot removes that area.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import logging
from typing import TYPE_CHECKING, Any

from dicomlake.backup import manifest
from dicomlake.backup.layout import BackupLayout, committed_ids, parse_snapshot_id, require_backup
from dicomlake.config import Config
from dicomlake.errors import BackupError
from dicomlake.lake.lock import holding
from dicomlake.storage import FileSystem, filesystem_for

if TYPE_CHECKING:
    from dicomlake.crypto.keyring import Keyring

log = logging.getLogger(__name__)


@dataclasses.dataclass(frozen=True)
class RetentionResult:
    kept: tuple[str, ...]
    removed: tuple[str, ...]
    objects_deleted: int
    bytes_freed: int
    gc_skipped: str | None  # why objects were not collected, if they were not
    not_counted: tuple[str, ...] = ()  # manifests that do not authenticate: left as they are

    def summary(self) -> dict[str, Any]:
        out = dataclasses.asdict(self)
        out["kept"], out["removed"] = list(self.kept), list(self.removed)
        out["not_counted"] = list(self.not_counted)
        return out


def select_kept(ids: list[str], keep_daily: int, keep_weekly: int, today: dt.date) -> set[str]:
    """The snapshot ids retention keeps (see the module docstring)."""
    kept = set()
    days: set[dt.date] = set()
    weeks: set[tuple[int, int]] = set()
    for sid in sorted(ids, reverse=True):  # newest first: the first seen of a day is its newest
        day = parse_snapshot_id(sid)[0].date()
        if day > today:
            kept.add(sid)
            continue
        if day not in days and len(days) < keep_daily:
            days.add(day)
            kept.add(sid)
        week = day.isocalendar()[:2]
        if week not in weeks and len(weeks) < keep_weekly:
            weeks.add(week)
            kept.add(sid)
    return kept


def apply_retention(
    backup: str, *, keyring: Keyring, config: Config, today: dt.date | None = None
) -> RetentionResult:
    """Delete the snapshots retention does not keep, then the objects only they used (holding
    the backup's lock); ``keyring`` authenticates the manifests counted."""
    fs = filesystem_for(backup, config.hdfs)
    require_backup(fs, BackupLayout(backup))
    with holding(fs, backup, None, "retention", config.lock):
        return _apply(fs, backup, config, keyring, today)


def _apply(
    fs: FileSystem, backup: str, config: Config, keyring: Keyring, today: dt.date | None
) -> RetentionResult:
    layout = BackupLayout(backup)
    today = today or dt.datetime.now(dt.timezone.utc).date()
    ids, untrusted = [], []
    for sid in committed_ids(fs, layout):
        try:
            manifest.read_manifest(fs, layout, sid, keyring, legacy=True)
            ids.append(sid)
        except BackupError as exc:
            log.warning("%s: retention neither counts nor removes it", exc)
            untrusted.append(sid)
    kept = select_kept(ids, config.snapshot.keep_daily, config.snapshot.keep_weekly, today)
    removed = [sid for sid in ids if sid not in kept]
    for sid in removed:
        fs.delete(layout.manifest(sid))
        log.info("retention removed snapshot %s", sid)
    in_progress = fs.list_dirs(layout.tmp)
    if in_progress:
        names = ", ".join(d.rstrip("/").rsplit("/", 1)[-1] for d in in_progress)
        # A later snapshot removes a killed one's area; nothing removes what is no one's
        reason = (
            f"snapshot in progress or killed: {names} in {layout.tmp} (a snapshot removes "
            "the areas of killed ones; delete by hand any that is no snapshot id)"
        )
        log.warning("object collection skipped: %s", reason)
        return RetentionResult(tuple(sorted(kept)), tuple(removed), 0, 0, reason, tuple(untrusted))
    referenced: set[str] = set()
    for sid in sorted(kept) + untrusted:  # the kept ones authenticated above
        try:
            rows = manifest.read_rows(fs, layout, sid, ["object"])
        except BackupError:  # an unreadable manifest names no object
            continue
        referenced.update(rows["object"].to_pylist())
    deleted = freed = 0
    prefix = layout.root.rstrip("/") + "/"
    for f in fs.list_files(layout.objects):
        if f.path[len(prefix) :] not in referenced:
            fs.delete(f.path)
            deleted += 1
            freed += f.size
    log.info("retention deleted %d unreferenced objects (%d bytes)", deleted, freed)
    return RetentionResult(
        tuple(sorted(kept)), tuple(removed), deleted, freed, None, tuple(untrusted)
    )
