"""Giving ingested instances back as their original files, byte for byte."""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from dicomlake.config import Config
from dicomlake.crypto.keyring import Keyring
from dicomlake.errors import IntegrityError, LakeError
from dicomlake.lake.delta import AsOf
from dicomlake.lake.layout import LakeLayout
from dicomlake.lake.ledger import read_table
from dicomlake.lake.pixelstore import PixelStore
from dicomlake.progress import track

_COLUMNS = [
    "instance_id",
    "SOPInstanceUID",
    "SeriesInstanceUID",
    "StudyInstanceUID",
    "source_sha256",
    "source_path",
    "source_mtime",
    "ingested_at",
]


def version_key(row: dict[str, Any]) -> tuple[Any, ...]:
    """Order of an instance's versions: by ingest time, then by the source file's mtime and path
    (one run can meet two files that share a SOPInstanceUID)."""
    return (row["ingested_at"], row["source_mtime"], row["source_path"])


def find_instances(
    store: PixelStore,
    *,
    sop: str | None = None,
    series: str | None = None,
    study: str | None = None,
    as_of: AsOf = None,
) -> list[dict[str, Any]]:
    """The latest version of every instance matching one of the UIDs (in the instances table as
    of a table version or time, when given).

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
    rows = read_table(store.fs, store.layout, "instances", _COLUMNS, as_of).to_pylist()
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
    as_of: AsOf = None,
) -> dict[str, Any]:
    """Write the selected instances to ``out/<SOPInstanceUID>.dcm``, each checked by SHA-256.

    With ``as_of``, the instances are the ones the lake held then (stored chunks never change,
    so their frames and packs are read as they are now).
    """
    store = PixelStore(lake, keyring, config)
    instances = find_instances(store, sop=sop, series=series, study=study, as_of=as_of)
    frames = store.frames_of(r["instance_id"] for r in instances).to_pylist()
    by_instance: dict[str, list[dict[str, Any]]] = {}
    for row in frames:
        by_instance.setdefault(row["instance_id"], []).append(row)
    out.mkdir(parents=True, exist_ok=True)
    written = 0
    for inst in track(instances, len(instances), "export"):
        chunks = store.rebuild(inst["instance_id"], by_instance.get(inst["instance_id"], []))
        target = out / f"{inst['SOPInstanceUID']}.dcm"
        what = f"instance {inst['SOPInstanceUID']} rebuilt from {lake}"
        written += _write_checked(chunks, target, inst["source_sha256"], what)
    return {
        "lake": LakeLayout(lake).root,
        "out": str(out),
        "files": len(instances),
        "bytes": written,
    }


def _write_checked(chunks: Iterable[bytes], target: Path, sha256: str, what: str) -> int:
    """Write ``chunks`` to ``target`` if their SHA-256 is ``sha256``; returns the bytes written.

    The file is written chunk by chunk to a temporary name and renamed into place only once
    its hash matches, so a big instance is never held whole and never half-written.
    """
    tmp = target.with_suffix(".dcm.tmp")
    digest, size = hashlib.sha256(), 0
    try:
        with open(tmp, "wb") as f:
            for chunk in chunks:
                digest.update(chunk)
                f.write(chunk)
                size += len(chunk)
        if digest.hexdigest() != sha256:
            raise IntegrityError(f"{what} does not match its source_sha256 {sha256}")
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    os.replace(tmp, target)
    return size
