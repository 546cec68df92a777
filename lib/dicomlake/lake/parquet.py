"""Parquet files of the lake's tables, written and read through :mod:`dicomlake.storage`."""

from __future__ import annotations

import io
from collections.abc import Iterable
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from dicomlake.storage import FileSystem
from dicomlake.storage.names import is_hidden

# zstd gives smaller files than snappy at little cost; every reader named in the docs has it.
COMPRESSION = "zstd"


def write_table(
    fs: FileSystem, uri: str, table: pa.Table, encryption_properties: Any = None
) -> None:
    """Write ``table`` as one Parquet file at ``uri`` (row groups sized for analytics).

    ``encryption_properties`` (pyarrow ``FileEncryptionProperties``, see
    :mod:`dicomlake.crypto.kms`) encrypts columns with Parquet Modular Encryption. The file is
    encoded in memory first: a table fragment is small next to a task's packs, and pyarrow
    wants a sink it can close, which a WebHDFS upload stream is not.
    """
    sink = pa.BufferOutputStream()
    pq.write_table(
        table,
        sink,
        compression=COMPRESSION,
        row_group_size=128 * 1024,
        encryption_properties=encryption_properties,
    )
    fs.write_bytes(uri, sink.getvalue().to_pybytes())


def parquet_files(fs: FileSystem, directory: str) -> list[str]:
    """The data files of a table directory, skipping hidden and temporary ones."""
    out = []
    for info in fs.list_files(directory):
        name = info.path.rsplit("/", 1)[-1]
        if name.endswith(".parquet") and not is_hidden(name):
            out.append(info.path)
    return out


def read_files(
    fs: FileSystem, files: Iterable[str], schema: pa.Schema, columns: list[str] | None = None
) -> pa.Table:
    """Read the given Parquet files into one table of ``schema`` (or its ``columns``)."""
    wanted = schema if columns is None else pa.schema([schema.field(c) for c in columns])
    tables = []
    for uri in files:
        with fs.open_read(uri) as f:
            data = f.read()
        file_schema = pq.read_schema(io.BytesIO(data))
        present = [c for c in wanted.names if c in file_schema.names]
        t = pq.read_table(io.BytesIO(data), columns=present)
        tables.append(t.select(present))
    if not tables:
        return wanted.empty_table()
    return pa.concat_tables(tables, promote_options="permissive").select(wanted.names).cast(wanted)
