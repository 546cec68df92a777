"""Which snapshots of a backup need a key-encryption key (KEK) of the keyring: a KEK dropped
from the keyring while a snapshot needs it leaves that snapshot unrestorable, or its identified
values unreadable, and nothing says so until a restore.

A snapshot needs a KEK for what a restore of it reads with that KEK:

- the data key of each pack (quarantine copies included), by the newest wrapping in the
  snapshot's own ``tables/packs`` files (`pack_wraps`), as a reader of the restored lake
  takes it;
- the keys of the restricted tables' files (identified values, landing paths, wrapped as
  ``k1:<kek id>:...``): each file is opened as a reader of the restored lake opens it;
- its keyring record's active KEK (the record a stopped rotation left to roll forward, else
  ``keyring-binding.json``): the restored lake takes no keyring without it.

Manifests are authenticated with the keyring's secret, which dropping a KEK keeps; each is
still read through `manifest.read_manifest` with the keyring the drop leaves, so a manifest
that keyring could not authenticate stops the check.
"""

from __future__ import annotations

import dataclasses
import io
from typing import TYPE_CHECKING, Any

import pyarrow.parquet as pq

from dicomlake.backup import manifest
from dicomlake.backup.layout import BackupLayout, committed_ids, require_backup
from dicomlake.config import Config
from dicomlake.crypto import kms
from dicomlake.errors import (
    BackupError,
    IntegrityError,
    LakeError,
    MissingKeyError,
    PrivateKeyRequiredError,
)
from dicomlake.lake import restricted
from dicomlake.lake.keyring_binding import parse_record
from dicomlake.lake.layout import BINDING, NEXT_BINDING
from dicomlake.lake.ledger import latest_packs
from dicomlake.lake.lock import holding
from dicomlake.storage import FileSystem, filesystem_for

if TYPE_CHECKING:
    from dicomlake.crypto.keyring import Keyring


@dataclasses.dataclass(frozen=True)
class SnapshotNeeds:
    """A snapshot that needs the KEK, and what of it does (e.g. "the data keys of 3 packs")."""

    snapshot_id: str
    needs: tuple[str, ...]


@dataclasses.dataclass(frozen=True)
class BackupNeeds:
    """The snapshots of ``backup`` that need the KEK (oldest first), of ``snapshots_read``."""

    backup: str
    snapshots_read: int
    needing: tuple[SnapshotNeeds, ...]


def pack_wraps(
    fs: FileSystem,
    layout: BackupLayout,
    entries: list[dict[str, Any]],
    read: dict[str, list[dict[str, Any]]],
) -> dict[str, tuple[str, bytes]]:
    """pack path -> (kek_id, wrapped key) from the ``tables/packs`` files among a snapshot's
    manifest ``entries``. ``read`` keeps each object's rows for the command's next snapshots:
    a packs file is in every snapshot taken while it lived."""
    rows: list[dict[str, Any]] = []
    for r in entries:
        if not (r["path"].startswith("tables/packs/") and r["path"].endswith(".parquet")):
            continue
        if "/_delta_log/" in r["path"]:  # checkpoints; the data files hold every row
            continue
        key = r["object"]
        if key not in read:
            read[key] = pq.read_table(io.BytesIO(fs.read(layout.uri(key)))).to_pylist()
        rows += read[key]
    # After a rotation the newest wrapping wins, as for a reader of the lake itself.
    return {path: (r["kek_id"], r["wrapped_key"]) for path, r in latest_packs(rows).items()}


def snapshots_needing(
    backup: str, keyring: Keyring, kek_id: str, command: str, config: Config
) -> BackupNeeds:
    """The committed snapshots of ``backup`` that need ``kek_id``: what they hold that
    ``keyring`` opens and ``keyring`` without ``kek_id`` does not. Read holding the backup's
    lock for ``command``; a BackupError names a manifest the keyring without ``kek_id`` cannot
    authenticate, or a file of a snapshot that cannot be read."""
    fs, layout = filesystem_for(backup, config.hdfs), BackupLayout(backup)
    require_backup(fs, layout)
    without = keyring.without(kek_id)
    with (
        holding(fs, backup, None, command, config.lock),
        kms.decrypting(keyring) as full,
        kms.decrypting(without) as dropped,
    ):
        files = _RestrictedFiles(fs, layout, full, dropped)
        packs: dict[str, list[dict[str, Any]]] = {}
        ids = committed_ids(fs, layout)
        needing = []
        for sid in ids:
            read = manifest.read_manifest(fs, layout, sid, without, legacy=True)
            entries = read.rows.to_pylist()
            if needs := _snapshot_needs(fs, layout, entries, kek_id, files, packs):
                needing.append(SnapshotNeeds(sid, tuple(needs)))
    return BackupNeeds(backup, len(ids), tuple(needing))


def _snapshot_needs(
    fs: FileSystem,
    layout: BackupLayout,
    entries: list[dict[str, Any]],
    kek_id: str,
    files: _RestrictedFiles,
    packs_read: dict[str, list[dict[str, Any]]],
) -> list[str]:
    """What of a snapshot (its manifest ``entries``) needs ``kek_id``."""
    needs = []
    record = _keyring_record(fs, layout, entries)
    if record is not None and record["active_kek_id"] == kek_id:
        needs.append(f"its active KEK ({BINDING})")
    wraps = pack_wraps(fs, layout, entries, packs_read)
    packs = sum(1 for kek, _ in wraps.values() if kek == kek_id)
    if packs:
        needs.append(f"the data keys of {packs} packs")
    closed = [r["path"] for r in entries if files.need_kek(r)]
    if closed:
        needs.append(f"the keys of {len(closed)} restricted files (first {closed[0]})")
    return needs


def _keyring_record(
    fs: FileSystem, layout: BackupLayout, entries: list[dict[str, Any]]
) -> dict[str, Any] | None:
    """The keyring record a restore of the snapshot leaves the lake: the next record a stopped
    rotation left (a restored lake rolls it forward), else the binding; None without one."""
    objects = {r["path"]: r["object"] for r in entries}
    for name in (NEXT_BINDING, BINDING):
        if name in objects:
            uri = layout.uri(objects[name])
            return parse_record(fs.read(uri), uri)
    return None


class _RestrictedFiles:
    """Opens the restricted files of snapshots with the keyring (``full``, its decryption
    properties) and without the KEK (``dropped``); each object once across snapshots."""

    def __init__(self, fs: FileSystem, layout: BackupLayout, full: Any, dropped: Any) -> None:
        self._fs, self._layout, self._full, self._dropped = fs, layout, full, dropped
        self._needed: dict[str, bool] = {}

    def need_kek(self, row: dict[str, Any]) -> bool:
        """Whether manifest ``row`` is a restricted file that opens with the keyring and not
        without the KEK (one that opens with neither needs a KEK dropped before)."""
        parts = row["path"].split("/")
        if len(parts) != 3 or parts[0] != "restricted" or parts[1] not in restricted.TABLES:
            return False
        key = row["object"]
        if key not in self._needed:
            uri = self._layout.uri(key)
            try:
                data = self._fs.read(uri)
                self._needed[key] = not _opens(uri, data, self._dropped) and _opens(
                    uri, data, self._full
                )
            except (LakeError, IntegrityError) as exc:
                raise BackupError(f"{row['path']} (object {uri}) cannot be opened: {exc}") from exc
        return self._needed[key]


def _opens(uri: str, data: bytes, decryption: Any) -> bool:
    """Whether the restricted file ``uri`` (its bytes ``data``) opens with the keyring of
    ``decryption``; a key wrapped under a KEK whose public half only it holds counts (the
    KEK is in the keyring)."""
    try:
        restricted.parse(uri, data, None, decryption)
    except PrivateKeyRequiredError:
        return True
    except MissingKeyError:
        return False
    return True
