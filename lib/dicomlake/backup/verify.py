"""Check a backup: every manifest's authentication code, every object's SHA-256 and size, every
manifest path (one a restore would refuse is a problem too), and with ``deep`` every chunk of
every pack.

A manifest that fails authentication (`manifest.read_manifest`: altered, another snapshot's, of
another keyring) is a problem and its rows go unchecked, as they say nothing trustworthy; one
without a code (format 1) is a problem too, and its rows are still checked against the objects.

Objects are read once however many snapshots and paths refer to them, and every manifest row is
checked against what was read; a bad one is reported for each (snapshot, lake path) it fails,
so the report says what a restore would lose.
Repair: delete the named object and take a full snapshot (it stores the content again if the
lake still has it).

Deep checks open each pack as a restore's reader would: header, data key (the re-wrapped key
from the snapshot's own ``tables/packs`` rows when present, else the header's), sealed index,
then every chunk. AES-GCM authenticates each chunk's exact bytes and place; every chunk is also
decoded (frames with the geometry read from their instance's prefix chunk, which for a streamed
instance may be in another pack) and compared with its recorded raw SHA-256.
"""

from __future__ import annotations

import dataclasses
import hashlib
import logging
from collections import defaultdict
from typing import TYPE_CHECKING, Any

from dicomlake.backup import manifest
from dicomlake.backup.copy import CHUNK
from dicomlake.backup.keks import pack_wraps
from dicomlake.backup.layout import (
    BackupLayout,
    committed_ids,
    require_backup,
    require_snapshot,
    sha_of_key,
)
from dicomlake.backup.manifest import SnapshotInfo
from dicomlake.config import Config
from dicomlake.errors import BackupError, DicomLakeError, MissingKeyError, StorageError
from dicomlake.progress import track
from dicomlake.storage import FileSystem, filesystem_for
from dicomlake.vocab import ChunkKind

if TYPE_CHECKING:
    from dicomlake.crypto.keyring import Keyring
    from dicomlake.dicom.split import FrameSpec
    from dicomlake.pixels.pack import ChunkRecord


log = logging.getLogger(__name__)


@dataclasses.dataclass(frozen=True)
class VerifyProblem:
    """One lake file of one snapshot whose stored bytes are bad, and why; or, ``unchecked``, a
    pack whose key the keyring given cannot unwrap (its key-encryption key is not in it); or a
    snapshot's manifest that cannot be read or authenticated (``path`` empty, ``object`` the
    manifest's URI)."""

    snapshot_id: str
    path: str
    object: str
    reason: str
    unchecked: bool = False


@dataclasses.dataclass(frozen=True)
class VerifyResult:
    snapshots: tuple[str, ...]
    objects_checked: int
    bytes_checked: int
    packs_checked: int
    chunks_checked: int  # authenticated (and hash-checked where self-describing)
    chunks_hash_checked: int
    problems: tuple[VerifyProblem, ...]

    @property
    def ok(self) -> bool:
        return not self.problems

    def summary(self) -> dict[str, Any]:
        out = dataclasses.asdict(self)
        out["snapshots"] = list(self.snapshots)
        out["problems"] = [dataclasses.asdict(p) for p in self.problems]
        out["ok"] = self.ok
        return out


def list_snapshots(backup: str, *, config: Config) -> list[SnapshotInfo]:
    """The committed snapshots of ``backup``, oldest first, from their manifests' footers.

    Not authenticated (it needs no keyring, and reads no rows): a listing decides nothing;
    verify, restore and snapshot authenticate each manifest they act on. A manifest whose
    record cannot be read is left out with a warning naming it (verify reports it)."""
    fs = filesystem_for(backup, config.hdfs)
    layout = BackupLayout(backup)
    require_backup(fs, layout)
    infos = []
    for sid in committed_ids(fs, layout):
        try:
            infos.append(manifest.read_info(fs, layout, sid))
        except BackupError as exc:
            log.warning("%s: not listed", exc)
    return infos


def verify(
    backup: str,
    snapshot_id: str | None = None,
    *,
    deep: bool = False,
    keyring: Keyring,
    config: Config,
) -> VerifyResult:
    """Re-read the objects of one snapshot (or all) and report every bad one.

    Each manifest row is checked against its object (each object is read once): a row whose
    size or SHA-256 is not the object's is a problem of that row, whichever snapshot it is
    in. A manifest that cannot be read or authenticated under ``keyring`` is a problem too;
    the others are checked all the same.
    """
    if deep:
        # Said once, before anything is read: not as every pack "unreadable"
        keyring.require_private("deep verify, which opens encrypted pack chunks,")
    fs = filesystem_for(backup, config.hdfs)
    layout = BackupLayout(backup)
    require_backup(fs, layout)
    if snapshot_id is not None:
        require_snapshot(fs, layout, snapshot_id)
    ids = [snapshot_id] if snapshot_id is not None else committed_ids(fs, layout)
    rows: dict[str, list[dict[str, Any]]] = {}
    problems = []
    if not ids and (stored := next(iter(fs.list_files(layout.objects)), None)) is not None:
        # Objects and no snapshot: the manifests were deleted (or never committed, every run
        # killed); nothing here can be restored
        problems.append(
            VerifyProblem(
                "", "", layout.manifests, f"no snapshot, but objects are stored ({stored.path})"
            )
        )
    for sid in ids:
        try:
            read = manifest.read_manifest(fs, layout, sid, keyring, legacy=True)
        except BackupError as exc:
            problems.append(VerifyProblem(sid, "", layout.manifest(sid), str(exc)))
            continue
        if read.problem:
            problems.append(VerifyProblem(sid, "", layout.manifest(sid), read.problem))
        rows[sid] = read.rows.to_pylist()
    keys = sorted({r["object"] for e in rows.values() for r in e if sha_of_key(r["object"])})
    found = {key: _read_object(fs, layout, key) for key in track(keys, len(keys), "verify")}
    for sid, entries in rows.items():
        # A row a restore would refuse loses its file as surely as a damaged object
        refused = manifest.entry_problems(entries)
        problems += [
            VerifyProblem(sid, r["path"], r["object"], reason)
            for n, r in enumerate(entries)
            if (reason := refused.get(n) or _row_problem(found.get(r["object"]), r))
        ]
    # Deep checks open only objects holding the content their key names
    sound = {k for k, got in found.items() if not isinstance(got, str) and got[0] == sha_of_key(k)}
    packs = chunks = hashed = 0
    if deep:
        deep_check = _DeepCheck(fs, layout, keyring)
        opened = []
        packs_read: dict[str, list[dict[str, Any]]] = {}
        for sid, entries in rows.items():
            sound_entries = [r for r in entries if r["object"] in sound]
            overrides = pack_wraps(fs, layout, sound_entries, packs_read)
            for r in entries:
                if r["path"].endswith(".pack") and r["object"] in sound:
                    override = overrides.get(r["path"])
                    deep_check.pack(r["object"], r["path"], override)
                    opened.append((sid, r, override))
        deep_check.finish()
        for sid, r, override in opened:
            reason = deep_check.reason(r["object"], override)
            if reason:
                unchecked = deep_check.unchecked(r["object"], override)
                problems.append(VerifyProblem(sid, r["path"], r["object"], reason, unchecked))
        packs, chunks, hashed = deep_check.packs, deep_check.chunks, deep_check.hashed
    return VerifyResult(
        tuple(ids),
        len(keys),
        sum(got[1] for got in found.values() if not isinstance(got, str)),
        packs,
        chunks,
        hashed,
        tuple(sorted(problems, key=lambda p: (p.snapshot_id, p.path))),
    )


def _read_object(fs: FileSystem, layout: BackupLayout, key: str) -> tuple[str, int] | str:
    """The SHA-256 and size of an object's content, or why it cannot be read."""
    h = hashlib.sha256()
    got = 0
    try:
        with fs.open_read(layout.uri(key)) as f:
            while chunk := f.read(CHUNK):
                h.update(chunk)
                got += len(chunk)
    except StorageError as exc:
        return "missing" if not fs.exists(layout.uri(key)) else f"unreadable: {exc}"
    return h.hexdigest(), got


def _row_problem(got: tuple[str, int] | str | None, row: dict[str, Any]) -> str:
    """Why the object read (`_read_object`; None: not read) does not hold a row's content."""
    if got is None or isinstance(got, str):
        return got or ""
    if got[1] != row["size"]:
        return f"size {got[1]}, expected {row['size']}"
    if got[0] != row["sha256"]:
        return f"sha256 {got[0]}, expected {row['sha256']}"
    return ""


_Opened = tuple[str, tuple[str, bytes] | None]  # (object, key override) of a pack


class _DeepCheck:
    """Opens packs; each (object, key override) is checked once across snapshots.

    A streamed instance's chunks span several packs, and its frames decode with the geometry in
    its prefix chunk, in the first of them. Frames met before that prefix wait, and are opened
    by `finish` once every pack has been.
    """

    def __init__(self, fs: FileSystem, layout: BackupLayout, keyring: Keyring) -> None:
        self._fs, self._layout, self._keyring = fs, layout, keyring
        self._done: dict[_Opened, list[str]] = {}
        self._keyless: set[_Opened] = set()  # packs whose key the keyring cannot unwrap
        # Frame geometry of the instances whose chunks go on past the pack of their prefix
        self._specs: dict[str, FrameSpec | None] = {}
        self._waiting: list[tuple[_Opened, str, bytes, ChunkRecord]] = []
        self.packs = self.chunks = self.hashed = 0

    def pack(self, key: str, path: str, override: tuple[str, bytes] | None) -> None:
        """Open the chunks of the pack at ``key`` (once); frames without their prefix wait."""
        if (key, override) not in self._done:
            self._done[(key, override)] = self._open_all((key, override), path)

    def finish(self) -> None:
        """Open the frames that waited for their prefix chunk in another pack."""
        for opened, pack_id, data_key, rec in self._waiting:
            sealed = self._fs.read(self._layout.uri(opened[0]), rec.offset, rec.length)
            spec = self._specs.get(rec.instance)  # none if that pack is missing or damaged
            self._open(self._done[opened], sealed, data_key, pack_id, rec, spec)
        self._waiting.clear()

    def reason(self, key: str, override: tuple[str, bytes] | None) -> str:
        """Why the pack at ``key`` is bad, or "" when every chunk opened."""
        return "; ".join(self._done[(key, override)])

    def unchecked(self, key: str, override: tuple[str, bytes] | None) -> bool:
        """Whether the pack at ``key`` went unopened for want of its key in the keyring."""
        return (key, override) in self._keyless

    def _open_all(self, opened: _Opened, path: str) -> list[str]:
        from dicomlake.dicom.split import header_from_prefix
        from dicomlake.pixels import pack

        data = self._fs.read(self._layout.uri(opened[0]))
        self.packs += 1
        try:
            header = pack.read_header(data, name=path)
            stem = path.rsplit("/", 1)[-1][: -len(".pack")]
            if header.pack_id != stem:
                return [f"pack file {path} holds pack {header.pack_id}"]
            data_key = pack.data_key_for(header, self._keyring, opened[1])
            records = pack.read_index(data, data_key, header.pack_id)
        except MissingKeyError as exc:
            self._keyless.add(opened)  # a keyring problem: the pack may well be sound
            return [f"pack not opened: {exc}"]
        except DicomLakeError as exc:
            return [f"pack unreadable: {exc}"]
        problems: list[str] = []
        by_instance: dict[str, list[ChunkRecord]] = defaultdict(list)
        for rec in records:
            by_instance[rec.instance].append(rec)
        for instance, recs in by_instance.items():
            # The prefix (written first) holds the header that image-codec frames decode with;
            # an instance without its suffix here goes on in another pack.
            goes_on = not any(r.kind == ChunkKind.SUFFIX for r in recs)
            needs_spec = goes_on or any(r.kind == ChunkKind.FRAME for r in recs)
            has_prefix = recs[0].kind == ChunkKind.PREFIX
            spec = self._specs.get(instance)
            for rec in recs:
                if rec.kind == ChunkKind.FRAME and not has_prefix and instance not in self._specs:
                    self._waiting.append((opened, header.pack_id, data_key, rec))
                    continue
                sealed = data[rec.offset : rec.offset + rec.length]
                raw = self._open(problems, sealed, data_key, header.pack_id, rec, spec)
                if raw is not None and rec.kind == ChunkKind.PREFIX and needs_spec:
                    try:
                        spec = header_from_prefix(raw)[1]
                    except DicomLakeError as exc:
                        problems.append(f"pack {header.pack_id} chunk {instance}/prefix: {exc}")
                    if goes_on:
                        self._specs[instance] = spec
        return problems

    def _open(
        self,
        problems: list[str],
        sealed: bytes,
        data_key: bytes,
        pack_id: str,
        rec: ChunkRecord,
        spec: FrameSpec | None,
    ) -> bytes | None:
        """The chunk's raw bytes, or None with the reason added to ``problems``."""
        from dicomlake.pixels import pack

        self.chunks += 1
        try:
            raw = pack.open_chunk(sealed, data_key=data_key, pack_id=pack_id, record=rec, spec=spec)
        except DicomLakeError as exc:
            problems.append(str(exc))
            return None
        self.hashed += 1
        return raw
