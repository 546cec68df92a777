"""The restricted tables under ``<lake>/restricted/``: identified values, outside ``tables/``.

Each is plain Parquet (not a table analysts glob, and never one whose column statistics are
kept in clear elsewhere), its footer in clear and signed, its identified columns encrypted with
Parquet Modular Encryption under keys the keyring's KEKs wrap (:mod:`dicomlake.crypto.kms`): the
public half of an x25519 keyring writes them, only the private half reads them.

- ``identities``: one row per ingested instance, the originals behind its pseudonyms
  (:mod:`dicomlake.lake.identities`);
- ``paths``: one row per landing path a task saw, behind its ``source_path_id``
  (:mod:`dicomlake.lake.paths`).
"""

from __future__ import annotations

import contextlib
import io
from collections.abc import Iterable
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from dicomlake.crypto import kms
from dicomlake.crypto.keyring import Keyring
from dicomlake.errors import LakeError
from dicomlake.lake import schemas
from dicomlake.lake.parquet import write_table
from dicomlake.storage import FileSystem

TABLES: dict[str, tuple[pa.Schema, list[str]]] = {
    "identities": (schemas.IDENTITIES, schemas.IDENTITY_ENCRYPTED),
    "paths": (schemas.PATHS, schemas.PATH_ENCRYPTED),
}
"""Each restricted table's schema and its encrypted columns."""


def write_rows(
    fs: FileSystem, uri: str, name: str, rows: list[dict[str, Any]], keyring: Keyring
) -> None:
    """Write rows of restricted table ``name`` as one file, its identified columns encrypted."""
    schema, encrypted = TABLES[name]
    table = pa.Table.from_pylist(rows, schema=schema)
    write_table(fs, uri, table, encryption_properties=kms.encryption_properties(keyring, encrypted))


def read_rows(
    fs: FileSystem,
    files: Iterable[str],
    name: str,
    keyring: Keyring | None,
    columns: list[str] | None = None,
) -> pa.Table:
    """Read files of restricted table ``name``, each row once (`_distinct`); without a
    keyring only its clear columns."""
    schema, encrypted = TABLES[name]
    readable = [n for n in schema.names if keyring or n not in encrypted]
    tables = []
    with contextlib.ExitStack() as stack:
        decryption = stack.enter_context(kms.decrypting(keyring)) if keyring else None
        for uri in files:
            with fs.open_read(uri) as f:
                tables.append(parse(uri, f.read(), readable, decryption))
    out = pa.schema([schema.field(c) for c in readable])
    rows = _distinct(pa.concat_tables(tables).cast(out)) if tables else out.empty_table()
    return rows.select(columns) if columns else rows


def parse(
    uri: str,
    data: bytes,
    columns: list[str] | None,
    decryption: pq.FileDecryptionProperties | None = None,
) -> pa.Table:
    """``columns`` (None: all) of the restricted file ``uri`` (its bytes ``data``); a damaged file
    (truncated, overwritten) is a LakeError naming it, not pyarrow's."""
    try:
        return pq.read_table(io.BytesIO(data), columns=columns, decryption_properties=decryption)
    except pa.ArrowException as exc:
        raise LakeError(
            f"{uri} is not a readable Parquet file ({exc}): restore it from a snapshot"
        ) from None


def _distinct(table: pa.Table) -> pa.Table:
    """``table`` without repeats of a whole row, in order: a rewrite under a new KEK that
    stopped after it published its file, before it deleted the files it replaces, leaves
    every row twice (both copies are read, and the next rewrite writes one). A subset of the
    columns would merge distinct rows, so all are compared."""
    names = table.column_names
    return table.group_by(names, use_threads=False).aggregate([]).select(names)
