"""Backups, lakes and restore targets kept apart, compared by their canonical places
(`canonical_uri`, `overlap`: local paths by their real paths), as a landing zone and its lake
are."""

from __future__ import annotations

from collections.abc import Iterator
from urllib.parse import urlsplit

from dicomlake.backup.layout import BackupLayout, backup_problem
from dicomlake.errors import BackupError
from dicomlake.lake.layout import LakeLayout, is_lake
from dicomlake.storage import FileSystem, canonical_uri, overlap


def check_apart(lake: str, backup: str) -> None:
    """BackupError when a backup and the lake it backs up are one, or one is inside the other:
    each snapshot would copy the backup into itself."""
    lake, backup = canonical_uri(lake), canonical_uri(backup)
    if overlap(lake, backup):
        raise BackupError(
            f"the backup {backup} and the lake {lake} overlap: keep the backup outside the lake"
        )


def check_target(fs: FileSystem, target: str, backup: str) -> None:
    """BackupError when a restore ``target`` and its ``backup`` overlap, or the target is, or is
    inside, a lake or a backup that exists: a restore would write among a backup's objects and
    manifests, or into a live lake without its lock."""
    target, backup = canonical_uri(target), canonical_uri(backup)
    if overlap(target, backup):
        raise BackupError(
            f"restore target {target} and the backup {backup} overlap: restore outside the backup"
        )
    for place in _self_and_parents(target):
        if is_lake(fs, LakeLayout(place)):
            raise BackupError(
                f"restore target {target} is in the lake at {place}: restore into a new place "
                "outside every lake"
            )
        if not backup_problem(fs, BackupLayout(place)):
            raise BackupError(
                f"restore target {target} is in the backup at {place}: restore into a new "
                "place outside every backup"
            )


def _self_and_parents(uri: str) -> Iterator[str]:
    """``uri``, then each directory above it up to its filesystem's root."""
    path = urlsplit(uri).path
    head = uri[: len(uri) - len(path)]
    while True:
        yield head + path
        if path in ("", "/"):
            return
        path = path.rsplit("/", 1)[0] or "/"
