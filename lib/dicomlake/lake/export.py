"""Giving ingested instances back as their original files, byte for byte: any stored version,
chosen by UID, instance id, manifest or an SQL predicate over the instances table."""

from __future__ import annotations

import contextlib
import hashlib
import os
import re
from collections import Counter
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any

import duckdb
import pyarrow as pa

from dicomlake.config import Config
from dicomlake.crypto.keyring import Keyring
from dicomlake.dicom.deid import PSEUDONYM_PURPOSE, uid_pseudonym
from dicomlake.dicom.split import header_from_prefix
from dicomlake.dicom.values import get, sop_instance_uid, values_of
from dicomlake.errors import IntegrityError, LakeError
from dicomlake.lake.delta_read import AsOf
from dicomlake.lake.keyring_binding import check_fingerprint
from dicomlake.lake.layout import LakeLayout, check_outside_lakes
from dicomlake.lake.ledger import read_table
from dicomlake.lake.pixelstore import PixelStore
from dicomlake.progress import track
from dicomlake.storage.local import private_file

_DICOM_UID = re.compile(r"[0-9]+(\.[0-9]+)*")
_UID_COLUMNS = ("SOPInstanceUID", "SeriesInstanceUID", "StudyInstanceUID")
_COLUMNS = [
    "instance_id",
    "SOPInstanceUID",
    "SeriesInstanceUID",
    "StudyInstanceUID",
    "source_sha256",
    "source_path_id",
    "source_mtime",
    "ingested_at",
]


def version_key(row: dict[str, Any]) -> tuple[Any, ...]:
    """Order of an instance's versions: by ingest time, then by the source file's mtime and path
    id (one run can meet two files that share a SOPInstanceUID)."""
    return (row["ingested_at"], row["source_mtime"], row["source_path_id"])


def read_manifest(path: Path) -> list[str]:
    """The SOP Instance UIDs and instance ids a manifest file names: one a line, blank lines and
    ``#`` comments (whole lines or line ends) left out."""
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise LakeError(f"manifest {path} cannot be read: {exc}") from None
    return [s for s in (line.split("#", 1)[0].strip() for line in text.splitlines()) if s]


def where_ids(instances: pa.Table, predicate: str) -> set[str]:
    """The instance ids of the rows of ``instances`` for which the SQL ``predicate`` holds.

    DuckDB runs it as ``SELECT instance_id FROM instances WHERE (<predicate>)`` and nothing
    else: one SELECT statement, on the in-memory table, with file and network access off (no
    ``read_csv``, ``COPY`` or ``ATTACH``) and the configuration locked. Ids it returns that are
    not the table's are dropped.
    """
    sql = f"SELECT instance_id FROM instances WHERE ({predicate})"
    con = duckdb.connect(
        ":memory:", config={"enable_external_access": False, "lock_configuration": True}
    )
    try:
        statements = con.extract_statements(sql)
        if len(statements) != 1 or statements[0].type != duckdb.StatementType.SELECT:
            raise duckdb.ParserException("more than one statement")
        con.register("instances", instances)
        found = {row[0] for row in con.execute(sql).fetchall()}
    except duckdb.Error as exc:
        reason = str(exc).splitlines()[0]
        raise LakeError(
            f"--where {predicate!r} is no predicate on the instances table ({reason})"
        ) from None
    finally:
        con.close()
    return found & set(instances["instance_id"].to_pylist())


def select_instances(
    instances: pa.Table,
    *,
    sop: str | None = None,
    series: str | None = None,
    study: str | None = None,
    instance_ids: Sequence[str] = (),
    manifest: Sequence[str] = (),
    where: str | None = None,
    all_versions: bool = False,
) -> tuple[list[tuple[dict[str, Any], str]], list[str]]:
    """The rows to export, each with its file name, and what was asked for but has no row.

    The selection is the union of what each argument names: ``sop``, ``series`` and ``study``
    match the UIDs in the ``instances`` table (pseudonyms when the lake de-identifies:
    ``dicomlake reidentify`` maps originals to them; the exported files are the originals,
    byte for byte), ``instance_ids`` the ``instance_id`` column, a ``manifest`` line either
    (a SOP Instance UID or an instance id), ``where`` is `where_ids`'s predicate. Each selected
    SOP Instance UID gives its latest version (`version_key`), a row named by its instance id
    that very version; ``all_versions`` gives every stored version of each.
    """
    rows = instances.to_pylist()
    # Per SOP Instance UID its versions, oldest first; the same bytes twice are one version
    stored: dict[str, dict[str, dict[str, Any]]] = {}
    for row in sorted(rows, key=version_key):
        stored.setdefault(row["SOPInstanceUID"], {})[row["instance_id"]] = row
    versions = {uid: sorted(by_id.values(), key=version_key) for uid, by_id in stored.items()}

    uids: set[str] = set()  # the latest (or every) version of these
    named: set[tuple[str, str]] = set()  # these very versions: (SOPInstanceUID, instance_id)
    requested = [
        *((v, ("SOPInstanceUID",)) for v in [sop] if v),
        *((v, ("SeriesInstanceUID",)) for v in [series] if v),
        *((v, ("StudyInstanceUID",)) for v in [study] if v),
        *((v, ("instance_id",)) for v in instance_ids),
        *((v, ("SOPInstanceUID", "instance_id")) for v in manifest),
    ]
    if where is not None:
        requested += [(i, ("where",)) for i in where_ids(instances, where)]
    index = {c: _index(rows, c) for c in (*_UID_COLUMNS, "instance_id")}
    index["where"] = index["instance_id"]  # a predicate's rows name their SOP Instance UIDs
    missing: list[str] = []
    for value, columns in requested:
        hits = [(c, r) for c in columns for r in index[c].get(value, [])]
        if not hits and value not in missing:
            missing.append(value)
        for column, row in hits:
            if column == "instance_id":
                named.add((row["SOPInstanceUID"], row["instance_id"]))
            else:
                uids.add(row["SOPInstanceUID"])
    if all_versions:
        uids |= {uid for uid, _ in named}

    chosen: list[tuple[dict[str, Any], str]] = []
    for uid in sorted(uids | {uid for uid, _ in named}, key=str):
        for number, row in enumerate(versions[uid], 1):
            latest = number == len(versions[uid])
            if (uid in uids and (all_versions or latest)) or (uid, row["instance_id"]) in named:
                chosen.append((row, version_name(uid, number, row["instance_id"], latest)))
    return chosen, missing


def version_name(uid: str | None, number: int, instance_id: str, latest: bool) -> str:
    """The file name of the ``number``-th stored version (by `version_key`, from 1) of a SOP
    Instance UID: the latest is `export_name`'s, an older one
    ``<that name without .dcm>.v<number>-<first 12 hex digits of its instance_id>.dcm``, so
    versions never share a name and none can be taken for a UID of the DICOM grammar.

    >>> version_name("1.2.3", 1, "ab" * 32, False), version_name("1.2.3", 2, "cd" * 32, True)
    ('1.2.3.v1-abababababab.dcm', '1.2.3.dcm')
    """
    name = export_name(uid)
    return name if latest else f"{name.removesuffix('.dcm')}.v{number}-{instance_id[:12]}.dcm"


def export_instances(
    lake: str,
    keyring: Keyring,
    config: Config,
    out: Path,
    *,
    sop: str | None = None,
    series: str | None = None,
    study: str | None = None,
    instance_ids: Sequence[str] = (),
    manifest: Sequence[str] = (),
    where: str | None = None,
    all_versions: bool = False,
    as_of: AsOf = None,
) -> dict[str, Any]:
    """Write the instances `select_instances` picks to ``out``, each checked first.

    The tables are not sealed, the chunks are: each file must hash to its row's instance_id and
    source_sha256, and the UIDs in its own header (out of the sealed prefix chunk) must be the
    row's, so an edited row cannot hand out another instance. Files are written under hidden
    temporary names and renamed into place only once every one has passed; they hold the
    instances as received, PHI included, so they are made mode 0600 (``--out``, when made
    here, 0700) whatever the umask.

    With ``as_of``, the instances are the ones the lake held then (stored chunks never change,
    so their frames and packs are read as they are now).

    Returns the summary: files, bytes, files per StudyInstanceUID (``studies``) and the
    requested UIDs and ids without a row (``not_found``; the others are still written).
    """
    keyring.require_private("export")  # before anything is read or --out is made
    if out.exists() and not out.is_dir():
        raise LakeError(f"--out {out} exists and is not a directory")
    check_outside_lakes(out)
    store = PixelStore(lake, keyring, config)
    check_fingerprint(store.fs, store.layout, keyring)  # its pseudonyms name the instances
    # A predicate may name any column; otherwise the columns selection needs
    columns = None if where is not None else _COLUMNS
    table = read_table(store.fs, store.layout, "instances", columns, as_of)
    instances, not_found = select_instances(
        table,
        sop=sop,
        series=series,
        study=study,
        instance_ids=instance_ids,
        manifest=manifest,
        where=where,
        all_versions=all_versions,
    )
    frames = store.frames_of(r["instance_id"] for r, _ in instances).to_pylist()
    by_instance: dict[str, list[dict[str, Any]]] = {}
    for row in frames:
        by_instance.setdefault(row["instance_id"], []).append(row)
    secret = keyring.secret_for(PSEUDONYM_PURPOSE)
    made = not out.exists()
    try:
        out.mkdir(mode=0o700, parents=True, exist_ok=True)
    except OSError as exc:
        raise LakeError(f"cannot make --out {out}: {exc.strerror}") from exc
    written = 0
    checked: list[tuple[str, Path]] = []
    try:
        for inst, name in track(instances, len(instances), "export"):
            what = (
                f"instance {inst['SOPInstanceUID']!r} ({inst['instance_id']}) rebuilt from {lake}"
            )
            # by_instance holds only rows of this instance_id: the id each chunk is sealed with
            chunks = store.rebuild(inst["instance_id"], by_instance.get(inst["instance_id"], []))
            target = out / name
            checked_chunks = _header_checked(chunks, inst, secret, what)
            tmp, size = _write_checked(checked_chunks, target, inst, what)
            checked.append((tmp, target))
            written += size
    except BaseException:
        for tmp, _ in checked:
            os.unlink(tmp)
        if made:  # an export that wrote nothing leaves nothing
            with contextlib.suppress(OSError):
                out.rmdir()
        raise
    for tmp, target in checked:
        os.replace(tmp, target)
    if made and not checked:  # nothing selected (UIDs not found): no empty --out left
        out.rmdir()
    return {
        "lake": LakeLayout(lake).root,
        "out": str(out),
        "files": len(instances),
        "bytes": written,
        "studies": dict(Counter(r["StudyInstanceUID"] or "" for r, _ in instances)),
        "not_found": not_found,
    }


def export_name(uid: str | None) -> str:
    """The file name an exported instance gets: ``<uid>.dcm`` for a UID of the DICOM grammar
    (digits in components joined by single dots, at most 64 characters), else
    ``uid-<SHA-256 of the UID's UTF-8 bytes>.dcm``. The UID comes from an untrusted file: it may
    hold '/', '\\', '..', NUL or control characters, or be of any length.

    >>> export_name("1.2.840.10008.1"), export_name("../../etc/x")[:12]
    ('1.2.840.10008.1.dcm', 'uid-56da1a2e')
    """
    uid = uid or ""
    if len(uid) <= 64 and _DICOM_UID.fullmatch(uid):
        return f"{uid}.dcm"
    return f"uid-{hashlib.sha256(uid.encode('utf-8', 'surrogatepass')).hexdigest()}.dcm"


def _header_checked(
    chunks: Iterator[bytes], inst: dict[str, Any], secret: bytes, what: str
) -> Iterator[bytes]:
    """``chunks``, once the header in the first (the prefix) holds the UIDs of ``inst``: each the
    file's own value or its pseudonym (a de-identifying lake's tables hold pseudonyms)."""
    prefix = next(chunks)
    dataset = header_from_prefix(prefix)[0]
    for column in _UID_COLUMNS:
        # As ingest made the row's value: values joined with '\\', stripped; pseudonyms of the
        # values stripped of spaces and NULs
        value = sop_instance_uid(dataset)[0] if column == "SOPInstanceUID" else None
        values = [str(v) for v in values_of(value or get(dataset, column))]
        own = "\\".join(values).strip()
        pseudonym = "\\".join(uid_pseudonym(secret, v) if v.strip(" \x00") else "" for v in values)
        if (inst[column] or "") not in (own, pseudonym):
            raise IntegrityError(
                f"{what}: its instances row says {column} {inst[column]!r} but the file's own "
                f"header (sealed in the pack) holds another: the row was changed, nothing exported"
            )
    yield prefix
    yield from chunks


def _write_checked(
    chunks: Iterable[bytes], target: Path, inst: dict[str, Any], what: str
) -> tuple[str, int]:
    """Write ``chunks`` to a `private_file` beside ``target`` (an instance holds PHI) and check
    their SHA-256 against the row's instance_id and source_sha256 (the same hash); returns the
    file's path, to be renamed to ``target``, and the bytes written. A failed check removes it.

    The file is written chunk by chunk, so a big instance is never held whole.
    """
    digest, size = hashlib.sha256(), 0
    with private_file(target) as (tmp, f):
        for chunk in chunks:
            digest.update(chunk)
            f.write(chunk)
            size += len(chunk)
        for column in ("instance_id", "source_sha256"):
            if digest.hexdigest() != inst[column]:
                raise IntegrityError(f"{what} does not match its {column} {inst[column]}")
    return tmp, size


def _index(rows: list[dict[str, Any]], column: str) -> dict[str, list[dict[str, Any]]]:
    index: dict[str, list[dict[str, Any]]] = {}
    for row in rows:
        index.setdefault(row[column], []).append(row)
    return index
