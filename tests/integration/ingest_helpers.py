"""Independent readers of a lake for the ingest tests: plain pyarrow and DuckDB, no dicomlake."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pyarrow as pa
import pyarrow.dataset as ds


def table(lake: Path, name: str) -> pa.Table:
    """A lake table as pyarrow reads it on its own (hive partitions included)."""
    path = lake / "tables" / name
    if not path.exists():
        return pa.table({})
    return ds.dataset(str(path), format="parquet", partitioning="hive").to_table()


def sha256_file(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def landing_files(landing: Path) -> dict[str, Path]:
    """Every file of a landing zone by the URI the lake records (its absolute path)."""
    return {str(p): p for p in sorted(landing.rglob("*")) if p.is_file()}
