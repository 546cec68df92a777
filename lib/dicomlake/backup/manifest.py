"""Snapshot manifests: one Parquet file per snapshot, listing every file of the lake.

A manifest row is one lake file; the snapshot's own record (:class:`SnapshotInfo`) is JSON in
the file's key-value metadata, so the manifest is the whole commit: publishing it by rename makes
the snapshot exist, and the snapshot index is derived from the manifests present.

Anyone who can write to the backup can write a manifest, so every manifest carries an HMAC
(`manifest_mac`) over its record and all its rows, keyed by the keyring's
``secret_for("backup-manifest")``; `read_manifest` is the one read of a manifest that anything
is decided on (a snapshot's base, verify, restore). A format 1 manifest, written before that,
has no code: it is never trusted without being told to (`UnauthenticatedManifestError`).
"""

from __future__ import annotations

import dataclasses
import hashlib
import hmac
import io
import json
from datetime import datetime
from typing import TYPE_CHECKING, Any

import pyarrow as pa
import pyarrow.parquet as pq

from dicomlake.backup.layout import BackupLayout, committed_ids, sha_of_key
from dicomlake.errors import (
    AlteredManifestError,
    BackupError,
    ForeignManifestError,
    StorageError,
    UnauthenticatedManifestError,
)
from dicomlake.storage import FileSystem

if TYPE_CHECKING:
    from dicomlake.crypto.keyring import Keyring

META_KEY = b"dicomlake.snapshot"
MAC_KEY = b"dicomlake.snapshot.mac"  # hex HMAC-SHA256 of `manifest_mac`, from format 2 on
FORMAT = 2  # 2: authenticated (MAC_KEY, SnapshotInfo.keyring_fingerprint); 1: no code
MAC_PURPOSE = "backup-manifest"  # Keyring.secret_for purpose of the MAC key
_MAC_LABEL = b"dicomlake-manifest-mac-v1\0"

MANIFEST_SCHEMA = pa.schema(
    [
        pa.field("path", pa.string(), nullable=False),  # relative to the lake root
        pa.field("size", pa.int64(), nullable=False),
        pa.field("mtime_ms", pa.int64(), nullable=False),  # as listed, by the lake's clock
        pa.field("sha256", pa.string(), nullable=False),  # hex
        pa.field("object", pa.string(), nullable=False),  # key relative to the backup root
        # Why this snapshot read the file, or "unchanged" when it took the entry from its base
        # (see dicomlake.backup.scan for the reasons).
        pa.field("reason", pa.string(), nullable=False),
    ]
)


@dataclasses.dataclass(frozen=True)
class SnapshotInfo:
    """A committed snapshot, as recorded in its manifest."""

    snapshot_id: str
    mode: str
    created: datetime  # from the snapshot's label (UTC)
    base: str | None  # snapshot compared against (None for a full)
    lake: str
    source: str  # "hdfs-snapshot" (consistent copy) or "live"
    watermark_ms: int  # highest listed mtime seen so far, by the lake filesystem's clock
    scan_from_ms: int | None  # base watermark - lag: files modified since are re-read
    files: int
    bytes_total: int
    files_read: int  # read and hashed by this snapshot
    objects_copied: int  # new objects stored
    bytes_copied: int
    objects_reused: int  # read, but the content was in the backup already
    unchanged: int  # taken from the base manifest without reading
    new: int
    renamed_in: int  # new path with an mtime older than scan_from (rename, copy -p)
    modified: int
    size_changed: int
    lag_window: int
    deleted: int  # in the base, gone now
    vanished: int  # listed, deleted before it could be read
    excluded: int  # staging, hidden, temp and in-flight files
    runs_excluded: tuple[str, ...]  # runs caught mid-publish, left out whole
    # Per lake table, the Delta version the snapshot holds (its newest commit file).
    table_versions: dict[str, int] = dataclasses.field(default_factory=dict)
    # The keyring whose secret authenticates the manifest ("" in a format 1 manifest).
    keyring_fingerprint: str = ""
    # An incremental or differential taken as a full because the manifest it would have
    # compared with (this id) has no authentication code (format 1): it was not trusted.
    base_unauthenticated: str | None = None

    def summary(self) -> dict[str, Any]:
        """The record as JSON-able values."""
        out = dataclasses.asdict(self)
        out["created"] = self.created.isoformat()
        out["runs_excluded"] = list(self.runs_excluded)
        return out

    @classmethod
    def from_summary(cls, data: dict[str, Any]) -> SnapshotInfo:
        """The record of `summary`; TypeError naming the first field of another type."""
        values = {}
        for field in dataclasses.fields(SnapshotInfo):
            if field.name not in data:
                continue  # a field with a default, added after the record was written
            value = data[field.name]
            kinds = _RECORD_TYPES.get(str(field.type), ())
            if kinds and (not isinstance(value, kinds) or isinstance(value, bool)):
                raise TypeError(f"{field.name} is {value!r}, not of type {field.type}")
            values[field.name] = value
        values["created"] = datetime.fromisoformat(data["created"])
        values["runs_excluded"] = tuple(data["runs_excluded"])
        if not all(isinstance(r, str) for r in values["runs_excluded"]):
            raise TypeError(f"runs_excluded is {data['runs_excluded']!r}, not a list of ids")
        return SnapshotInfo(**values)


# The JSON types of the record's fields, by their annotation (``created`` is ISO 8601 text)
_RECORD_TYPES: dict[str, tuple[type, ...]] = {
    "str": (str,),
    "str | None": (str, type(None)),
    "int": (int,),
    "int | None": (int, type(None)),
    "datetime": (str,),
    "tuple[str, ...]": (list,),
    "dict[str, int]": (dict,),
}


def encode(table: pa.Table, info: SnapshotInfo, keyring: Keyring) -> bytes:
    """The manifest file: ``table`` (of :data:`MANIFEST_SCHEMA`) with ``info`` as metadata and
    their `manifest_mac` under ``keyring``, whose fingerprint ``info`` must record."""
    if info.keyring_fingerprint != keyring.fingerprint:
        raise BackupError(
            f"snapshot {info.snapshot_id}: its record names keyring "
            f"{info.keyring_fingerprint or '(none)'}, not the keyring {keyring.fingerprint} "
            "authenticating it"
        )
    rows = table.cast(MANIFEST_SCHEMA)
    record = json.dumps({"format": FORMAT, **info.summary()}).encode()
    mac = manifest_mac(keyring.secret_for(MAC_PURPOSE), record, rows)
    meta = {META_KEY: record, MAC_KEY: mac.encode()}
    buf = io.BytesIO()
    pq.write_table(rows.replace_schema_metadata(meta), buf, compression="zstd")
    return buf.getvalue()


def manifest_mac(secret: bytes, record: bytes, rows: pa.Table) -> str:
    """The authentication code of a manifest, hex: HMAC-SHA256 keyed by ``secret`` over
    ``b"dicomlake-manifest-mac-v1\\0"``, the record's length (8 bytes, big-endian), the record
    (the ``dicomlake.snapshot`` bytes as stored), then `rows_digest` of all the rows."""
    mac = hmac.new(secret, _MAC_LABEL, hashlib.sha256)
    mac.update(len(record).to_bytes(8, "big"))
    mac.update(record)
    mac.update(rows_digest(rows))
    return mac.hexdigest()


def rows_digest(rows: pa.Table) -> bytes:
    """SHA-256 of the rows in their order, each the JSON list of its `MANIFEST_SCHEMA` values in
    column order (``json.dumps`` with ``separators=(",", ":")``, ASCII) and a newline."""
    digest = hashlib.sha256()
    for batch in rows.select(MANIFEST_SCHEMA.names).to_batches():
        columns = [c.to_pylist() for c in batch.columns]
        for values in zip(*columns, strict=True):
            digest.update(json.dumps(list(values), separators=(",", ":")).encode() + b"\n")
    return digest.digest()


def path_problem(path: str | None) -> str:
    """Why a manifest row's lake ``path`` cannot be restored, or "" when it can.

    A restore writes each file at ``<target>/<path>``, and a manifest is only a file in the
    backup: a path must be relative, its '/'-separated components neither empty nor '.' or
    '..', with no backslash or NUL, so that it names a file inside the target and nothing else.
    """
    if not path:
        return "empty path"
    if path.startswith("/"):
        return "absolute path"
    if "\\" in path or "\x00" in path:
        return "backslash or NUL in path"
    if any(part in ("", ".", "..") for part in path.split("/")):
        return "empty, '.' or '..' component in path"
    return ""


def key_problem(key: str, sha256: str) -> str:
    """Why an object ``key`` cannot hold content of ``sha256``, or "" when it can: only the key
    named by the hash, so a manifest cannot make a restore read anything else."""
    if sha_of_key(key) != sha256:
        return f"object key does not name the recorded sha256 {sha256}"
    return ""


def entry_problems(entries: list[dict[str, Any]]) -> dict[int, str]:
    """The rows of a manifest a restore cannot write, by index, each with why: a path leaving
    the target (`path_problem`), an object key not named by its hash (`key_problem`), or a
    path another row writes too (listed twice, or below a path another row writes as a file)."""
    paths = {r["path"] for r in entries}
    seen: set[str] = set()
    out = {}
    for n, r in enumerate(entries):
        path = r["path"]
        reason = path_problem(path) or key_problem(r["object"], r["sha256"])
        if not reason and path in seen:
            reason = "path listed twice"
        parents = ["/".join(path.split("/")[:k]) for k in range(1, path.count("/") + 1)]
        if not reason and (file := next((p for p in parents if p in paths), None)):
            reason = f"path below {file!r}, which another row writes as a file"
        seen.add(path)
        if reason:
            out[n] = reason
    return out


def read_info(fs: FileSystem, layout: BackupLayout, sid: str) -> SnapshotInfo:
    """A snapshot's record, read from its manifest's footer only and not authenticated: for
    listing snapshots, never for deciding what to copy, check or restore (`read_manifest`)."""
    uri = layout.manifest(sid)
    return _record(sid, uri, _footer(fs, uri, sid))[0]


def first_authenticated(fs: FileSystem, layout: BackupLayout, ids: list[str]) -> str | None:
    """The oldest of ``ids`` (oldest first) whose manifest's record says it carries a code
    (format 2 on), by the footers; unreadable ones are passed over. A manifest without a code
    labelled after it was not written by a version that wrote none."""
    for sid in ids:
        try:
            meta = _footer(fs, layout.manifest(sid), sid)
        except BackupError:
            continue
        if MAC_KEY in meta or _claims_code(meta):
            return sid
    return None


def _claims_code(meta: dict[bytes, bytes]) -> bool:
    """Whether a manifest's record says it was written with a code (format 2 on, or a keyring
    fingerprint), whether or not the code is there."""
    try:
        data = json.loads(meta.get(META_KEY, b"{}"))
        return bool(data.get("format", 1) >= 2 or data.get("keyring_fingerprint"))
    except (ValueError, TypeError, AttributeError, RecursionError):
        return False


def _footer(fs: FileSystem, uri: str, sid: str) -> dict[bytes, bytes]:
    try:
        return pq.read_metadata(_RangeFile(fs, uri)).metadata or {}
    except (OSError, pa.ArrowInvalid, StorageError) as exc:
        raise BackupError(f"snapshot {sid}: manifest {uri} is unreadable: {exc}") from exc


@dataclasses.dataclass(frozen=True)
class Manifest:
    """A manifest as `read_manifest` found it: its record, all its rows, and ``problem`` ("" when
    authenticated; else why not: a format 1 manifest read with ``legacy=True``)."""

    info: SnapshotInfo
    rows: pa.Table
    problem: str = ""


def read_manifest(
    fs: FileSystem, layout: BackupLayout, sid: str, keyring: Keyring, *, legacy: bool = False
) -> Manifest:
    """Snapshot ``sid``'s manifest, read once and authenticated under ``keyring``: its code
    checked (`manifest_mac`), its record naming ``sid``, its columns as in `read_rows`.

    A `ManifestAuthError` names the snapshot and manifest otherwise: `UnauthenticatedManifestError`
    for one without a code (unless ``legacy``: then it is returned with its ``problem``; every
    other check still holds), `ForeignManifestError` for one of another keyring,
    `AlteredManifestError` for one whose code does not match or that records another snapshot.
    """
    uri = layout.manifest(sid)
    meta, table = _read(fs, uri, sid, MANIFEST_SCHEMA.names)
    info, record = _record(sid, uri, meta)
    _check_columns(sid, uri, table, list(MANIFEST_SCHEMA))
    where = f"snapshot {sid}: manifest {uri}"
    problem = ""
    if MAC_KEY not in meta:
        if _claims_code(meta):
            raise AlteredManifestError(
                f"{where} is altered: its record says it was written with an authentication "
                "code, and the code is gone"
            )
        first = first_authenticated(fs, layout, [i for i in committed_ids(fs, layout) if i < sid])
        if first is not None:
            raise AlteredManifestError(
                f"{where} has no authentication code but is labelled after snapshot {first}, "
                "whose manifest has one: no version that writes codes wrote it"
            )
        problem = (
            f"{where} has no authentication code (format 1: written before manifests were "
            "authenticated)"
        )
        if not legacy:
            raise UnauthenticatedManifestError(problem)
    elif info.keyring_fingerprint != keyring.fingerprint:
        raise ForeignManifestError(
            f"{where} is authenticated by another keyring (fingerprint "
            f"{info.keyring_fingerprint or '(none)'}; this keyring is {keyring.fingerprint})"
        )
    else:
        want = manifest_mac(keyring.secret_for(MAC_PURPOSE), record, table)
        if not hmac.compare_digest(want.encode(), meta[MAC_KEY]):
            raise AlteredManifestError(
                f"{where} is altered: its authentication code does not match (rows or record "
                "edited)"
            )
    if info.snapshot_id != sid:
        raise AlteredManifestError(
            f"{where} is the manifest of snapshot {info.snapshot_id} (copied or renamed)"
        )
    return Manifest(info, table, problem)


def _record(sid: str, uri: str, meta: dict[bytes, bytes]) -> tuple[SnapshotInfo, bytes]:
    """The snapshot record of a manifest's metadata, and its bytes as stored."""
    if META_KEY not in meta:
        raise BackupError(f"snapshot {sid}: manifest {uri} has no snapshot record")
    record = meta[META_KEY]
    try:
        data = json.loads(record)
        if data.get("format", 1) > FORMAT:
            raise BackupError(
                f"snapshot {sid}: manifest {uri} is of format {data['format']}, written by a "
                f"later version (this one reads up to {FORMAT}): upgrade dicomlake"
            )
        return SnapshotInfo.from_summary(data), record
    except (ValueError, TypeError, KeyError, AttributeError, RecursionError) as exc:
        raise BackupError(
            f"snapshot {sid}: manifest {uri} has a bad snapshot record: {exc}"
        ) from exc


def read_rows(
    fs: FileSystem, layout: BackupLayout, sid: str, columns: list[str] | None = None
) -> pa.Table:
    """A snapshot's manifest rows (``columns``, default all), each column of its type in
    `MANIFEST_SCHEMA` and without nulls: a BackupError names the manifest otherwise. Not
    authenticated: retention's object references only (`read_manifest` for anything else)."""
    uri = layout.manifest(sid)
    fields = [MANIFEST_SCHEMA.field(c) for c in columns or MANIFEST_SCHEMA.names]
    table = _read(fs, uri, sid, [f.name for f in fields])[1]
    _check_columns(sid, uri, table, fields)
    return table


def _read(
    fs: FileSystem, uri: str, sid: str, columns: list[str]
) -> tuple[dict[bytes, bytes], pa.Table]:
    """A manifest's key-value metadata and those of ``columns`` it has, from one read."""
    try:
        file = pq.ParquetFile(io.BytesIO(fs.read(uri)))
        present = set(file.schema_arrow.names)
        table = file.read(columns=[c for c in columns if c in present])
    except (OSError, pa.ArrowInvalid, StorageError) as exc:
        raise BackupError(f"snapshot {sid}: manifest {uri} is unreadable: {exc}") from exc
    return file.schema_arrow.metadata or {}, table


def _check_columns(sid: str, uri: str, table: pa.Table, fields: list[pa.Field]) -> None:
    bad = [f"{f.name} {why}" for f in fields if (why := _column_problem(table, f))]
    if bad:
        raise BackupError(f"snapshot {sid}: manifest {uri} is unreadable: {'; '.join(bad)}")


def _column_problem(table: pa.Table, field: pa.Field) -> str:
    if field.name not in table.column_names:
        return "missing"
    if (got := table.schema.field(field.name).type) != field.type:
        return f"of type {got}, expected {field.type}"
    if nulls := table[field.name].null_count:
        return f"has {nulls} nulls"
    return ""


class _RangeFile(io.RawIOBase):
    """A seekable read-only file over ranged reads, so a footer read fetches only the footer."""

    def __init__(self, fs: FileSystem, uri: str) -> None:
        status = fs.status(uri)
        if status is None:
            raise BackupError(f"manifest {uri} does not exist")
        self._fs, self._uri, self._size, self._pos = fs, uri, status.size, 0

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def tell(self) -> int:
        return self._pos

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        base = {io.SEEK_SET: 0, io.SEEK_CUR: self._pos, io.SEEK_END: self._size}[whence]
        self._pos = base + offset
        return self._pos

    def readinto(self, buffer: Any) -> int:
        want = min(len(buffer), max(0, self._size - self._pos))
        if want == 0:
            return 0
        data = self._fs.read(self._uri, self._pos, want)
        buffer[: len(data)] = data
        self._pos += len(data)
        return len(data)
