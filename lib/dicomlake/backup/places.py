"""Backups, lakes and restore targets kept apart, compared by their canonical places
(`canonical_uri`, `overlap`: local paths by their real paths), as a landing zone and its lake
are."""

from __future__ import annotations

from dicomlake.backup.layout import BackupLayout, backup_problem
from dicomlake.config import HdfsConfig
from dicomlake.errors import BackupError
from dicomlake.lake.layout import lake_around
from dicomlake.storage import FileSystem, canonical_uri, overlap, self_and_parents


def check_apart(lake: str, backup: str, hdfs: HdfsConfig | None = None) -> None:
    """BackupError when a backup and the lake it backs up are one, or one is inside the other
    (``hdfs`` tells two names of one cluster alike): each snapshot would copy the backup into
    itself."""
    lake, backup = canonical_uri(lake), canonical_uri(backup)
    if overlap(lake, backup, hdfs):
        raise BackupError(
            f"the backup {backup} and the lake {lake} overlap: keep the backup outside the lake"
        )


def check_target(fs: FileSystem, target: str, backup: str, hdfs: HdfsConfig | None = None) -> None:
    """BackupError when a restore ``target`` and its ``backup`` overlap, or the target is, or is
    inside, a lake or a backup that exists: a restore would write among a backup's objects and
    manifests, or into a live lake without its lock."""
    target, backup = canonical_uri(target), canonical_uri(backup)
    if overlap(target, backup, hdfs):
        raise BackupError(
            f"restore target {target} and the backup {backup} overlap: restore outside the backup"
        )
    lake = lake_around(fs, target)
    if lake is not None:
        raise BackupError(
            f"restore target {target} is in the lake at {lake}: restore into a new place "
            "outside every lake"
        )
    for place in self_and_parents(target):
        if not backup_problem(fs, BackupLayout(place)):
            raise BackupError(
                f"restore target {target} is in the backup at {place}: restore into a new "
                "place outside every backup"
            )
