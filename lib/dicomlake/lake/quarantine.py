"""Quarantine copies: rejected inputs kept encrypted, for a key holder to look at.

A copy is a pack file (:mod:`dicomlake.pixels.pack`) of its own,
``<lake>/quarantine/<run>/<error_id>.pack``, whose pack id is the ``errors`` row's
``error_id``: a fresh AES-256 data key wrapped by the keyring's active KEK (the public half is
enough to write), the file's bytes as chunks of kind ``quarantine`` (index 0, 1, ... of at most
`BLOCK` bytes each, codec ``store``), each sealed with AES-256-GCM with the pack id, error id,
kind and index as associated data, then the sealed index. Its data key is a ``packs`` row too,
so key rotation re-wraps it and a deep backup verify opens it like any pack.

Copies are bounded: a file over ``ingest.quarantine_max_bytes`` keeps its ``errors`` row only.
`get_copy` (``dicomlake quarantine get``) gives a copy back in clear to a holder of the
private keyring.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterable
from pathlib import Path
from typing import Any, BinaryIO

import pyarrow.compute as pc

from dicomlake.config import Config
from dicomlake.crypto.keyring import Keyring
from dicomlake.errors import IntegrityError, LakeError, PublishConflictError
from dicomlake.lake.keyring_binding import check_fingerprint
from dicomlake.lake.layout import LakeLayout, check_outside_lakes
from dicomlake.lake.ledger import read_table
from dicomlake.lake.pixelstore import latest_wraps
from dicomlake.pixels import codecs
from dicomlake.pixels.pack import (
    PackInfo,
    PackWriter,
    data_key_for,
    open_chunk,
    read_header,
    read_index,
)
from dicomlake.storage import filesystem_for
from dicomlake.storage.local import LocalFileSystem, private_file
from dicomlake.vocab import ChunkKind

BLOCK = 8 << 20
"""Bytes per sealed chunk of a copy."""


def copy_path(run_id: str, error_id: str) -> str:
    """The lake-relative path of a copy: named by its error id, never by the landing file."""
    return f"quarantine/{run_id}/{error_id}.pack"


def write_copy(out: BinaryIO, error_id: str, keyring: Keyring, blocks: Iterable[bytes]) -> PackInfo:
    """Seal ``blocks`` (the file's bytes in order, each at most `BLOCK`) into ``out``."""
    writer = PackWriter(out, error_id, keyring)
    for index, block in enumerate(blocks):
        writer.add(
            instance=error_id,
            kind=ChunkKind.QUARANTINE,
            index=index,
            raw=block,
            codec=codecs.STORE,
            verify=False,
        )
    return writer.close()


def get_copy(
    lake: str, keyring: Keyring, config: Config, error_id: str, out: Path
) -> dict[str, Any]:
    """Write the quarantine copy of ``error_id`` to ``out`` in clear (needs the private keyring).

    The file appears under its name only once every chunk opened and, when the input was
    hashed, its SHA-256 matches the ``errors`` row's.
    """
    keyring.require_private("quarantine get")  # before the lake is read
    layout = LakeLayout(lake)
    fs = filesystem_for(lake, config.hdfs)
    check_fingerprint(fs, layout, keyring)
    errors = read_table(fs, layout, "errors")
    rows = errors.filter(pc.equal(errors["error_id"], error_id)).to_pylist()
    if not rows:
        raise LakeError(f"no errors row has error_id {error_id!r} in {layout.table('errors')}")
    row = rows[0]
    if row["quarantine_path"] is None:
        raise LakeError(
            f"error {error_id} ({row['reason']}) has no quarantine copy: the input was "
            "unreadable, or larger than ingest.quarantine_max_bytes when it was rejected"
        )
    if out.exists():
        raise LakeError(f"{out} exists already; choose another --out")
    check_outside_lakes(out)
    if not out.parent.is_dir():
        raise LakeError(f"--out {out}: {out.parent} is no directory")
    relative = row["quarantine_path"]
    data = fs.read(layout.absolute(relative))
    header = read_header(data, name=relative)
    if header.pack_id != error_id:
        raise IntegrityError(f"{relative} holds the copy of {header.pack_id}, not of {error_id}")
    key = data_key_for(header, keyring, latest_wraps(layout, fs).get(relative))
    records = sorted(read_index(data, key, error_id), key=lambda r: r.index)
    if [(r.instance, r.kind, r.index) for r in records] != [
        (error_id, ChunkKind.QUARANTINE, i) for i in range(len(records))
    ]:
        raise IntegrityError(f"{relative}: its index is not the chunks of one quarantine copy")
    digest, size = hashlib.sha256(), 0
    with private_file(out) as (tmp, f):  # the landing file as it came: PHI
        for rec in records:
            raw = open_chunk(
                data[rec.offset : rec.offset + rec.length],
                data_key=key,
                pack_id=error_id,
                record=rec,
            )
            digest.update(raw)
            f.write(raw)
            size += len(raw)
        if row["source_sha256"] is not None and digest.hexdigest() != row["source_sha256"]:
            raise IntegrityError(f"{relative} does not match the source_sha256 of error {error_id}")
    try:  # closed, so complete; a publish never replaces what appeared at --out meanwhile
        LocalFileSystem().publish(tmp, str(out))
    except PublishConflictError:
        os.unlink(tmp)
        raise LakeError(
            f"{out} appeared while the copy was written; choose another --out"
        ) from None
    return {"lake": layout.root, "error_id": error_id, "out": str(out), "bytes": size}
