"""Giving ingested instances back as their original files, byte for byte."""

from __future__ import annotations

import hashlib
import os
import re
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

from dicomlake.config import Config
from dicomlake.crypto.keyring import Keyring
from dicomlake.dicom.deid import PSEUDONYM_PURPOSE, uid_pseudonym
from dicomlake.dicom.split import header_from_prefix
from dicomlake.dicom.values import get, sop_instance_uid, values_of
from dicomlake.errors import IntegrityError, LakeError
from dicomlake.lake.layout import LakeLayout
from dicomlake.lake.ledger import read_table
from dicomlake.lake.pixelstore import PixelStore
from dicomlake.progress import track

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


def find_instances(
    store: PixelStore,
    *,
    sop: str | None = None,
    series: str | None = None,
    study: str | None = None,
) -> list[dict[str, Any]]:
    """The latest version of every instance matching one of the UIDs.

    The UIDs are the ones in the ``instances`` table: pseudonyms when the lake de-identifies
    (``deid.enabled``). Key holders map originals to pseudonyms with ``dicomlake reidentify``;
    the exported files themselves are the originals, byte for byte.
    """
    column, value = next(
        (c, v)
        for c, v in (
            ("SOPInstanceUID", sop),
            ("SeriesInstanceUID", series),
            ("StudyInstanceUID", study),
        )
        if v
    )
    rows = read_table(store.fs, store.layout, "instances", _COLUMNS).to_pylist()
    latest: dict[str, dict[str, Any]] = {}
    for row in rows:
        if row[column] == value:
            current = latest.get(row["SOPInstanceUID"])
            if current is None or version_key(row) > version_key(current):
                latest[row["SOPInstanceUID"]] = row
    if not latest:
        raise LakeError(f"no instance with {column}={value!r} in {store.layout.table('instances')}")
    return sorted(latest.values(), key=lambda r: r["SOPInstanceUID"])


def export_instances(
    lake: str,
    keyring: Keyring,
    config: Config,
    out: Path,
    *,
    sop: str | None = None,
    series: str | None = None,
    study: str | None = None,
) -> dict[str, Any]:
    """Write the selected instances to ``out``, named by `export_name`, each checked first.

    The tables are not sealed, the chunks are: each file must hash to its row's instance_id and
    source_sha256, and the UIDs in its own header (out of the sealed prefix chunk) must be the
    row's, so an edited row cannot hand out another instance. Files are written under hidden
    temporary names and renamed into place only once every one has passed.
    """
    store = PixelStore(lake, keyring, config)
    instances = find_instances(store, sop=sop, series=series, study=study)
    frames = store.frames_of(r["instance_id"] for r in instances).to_pylist()
    by_instance: dict[str, list[dict[str, Any]]] = {}
    for row in frames:
        by_instance.setdefault(row["instance_id"], []).append(row)
    secret = keyring.secret_for(PSEUDONYM_PURPOSE)
    out.mkdir(parents=True, exist_ok=True)
    written = 0
    checked: list[tuple[Path, Path]] = []
    try:
        for inst in track(instances, len(instances), "export"):
            what = f"instance {inst['SOPInstanceUID']!r} rebuilt from {lake}"
            # by_instance holds only rows of this instance_id: the id each chunk is sealed with
            chunks = store.rebuild(inst["instance_id"], by_instance.get(inst["instance_id"], []))
            target = out / export_name(inst["SOPInstanceUID"])
            tmp = out / f".{target.name}.tmp"
            checked.append((tmp, target))
            written += _write_checked(_header_checked(chunks, inst, secret, what), tmp, inst, what)
    except BaseException:
        for tmp, _ in checked:
            tmp.unlink(missing_ok=True)
        raise
    for tmp, target in checked:
        os.replace(tmp, target)
    return {
        "lake": LakeLayout(lake).root,
        "out": str(out),
        "files": len(instances),
        "bytes": written,
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


def _write_checked(chunks: Iterable[bytes], tmp: Path, inst: dict[str, Any], what: str) -> int:
    """Write ``chunks`` to ``tmp`` and check their SHA-256 against the row's instance_id and
    source_sha256 (the same hash); returns the bytes written. A failed check removes ``tmp``.

    The file is written chunk by chunk, so a big instance is never held whole.
    """
    digest, size = hashlib.sha256(), 0
    try:
        with open(tmp, "wb") as f:
            for chunk in chunks:
                digest.update(chunk)
                f.write(chunk)
                size += len(chunk)
        for column in ("instance_id", "source_sha256"):
            if digest.hexdigest() != inst[column]:
                raise IntegrityError(f"{what} does not match its {column} {inst[column]}")
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return size
