"""Independent helpers for the snapshot tests: build lakes with real files, hash trees, count
objects. Nothing here uses dicomlake.backup, so the tests compare against values it did not make."""

from __future__ import annotations

import dataclasses
import hashlib
import hmac
import json
import os
import shutil
from pathlib import Path

import pyarrow as pa

from dicomlake.config import Config, SnapshotConfig

T0 = 1_790_000_000  # seconds; lake files get explicit mtimes from here on


def write(root: Path, rel: str, data: bytes, mtime: float | None = None) -> Path:
    """Write a lake file with real I/O and, when given, set its mtime (seconds)."""
    path = root / rel
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    if mtime is not None:
        os.utime(path, ns=(int(mtime * 1e9), int(mtime * 1e9)))
    return path


def blob(seed: str, size: int = 3000) -> bytes:
    """Deterministic content, distinct per seed."""
    out = b""
    block = seed.encode()
    while len(out) < size:
        block = hashlib.sha256(block).digest()
        out += block
    return out[:size]


def make_lake(root: Path) -> None:
    """A small lake in the layout ingest writes, plus files that must never be backed up."""
    files = {
        "tables/instances/Modality=CT/study_year=2020/part-r1-0.parquet": blob("i1"),
        "tables/instances/Modality=MR/study_year=2021/part-r1-1.parquet": blob("i2"),
        "tables/frames/part-r1-0.parquet": blob("f1"),
        "tables/sources/part-r1-0.parquet": blob("s1"),
        "tables/runs/r1.parquet": blob("run1"),
        "tables/packs/part-r1-0.parquet": blob("p1"),
        "pixels/r1/pack-a.pack": blob("pack-a", 50_000),
        "pixels/r1/pack-b.pack": blob("pack-b", 40_000),
        "quarantine/r1/bad.dcm": blob("bad", 100),
        "tables/errors/empty.parquet": b"",
    }
    for i, (rel, data) in enumerate(sorted(files.items())):
        write(root, rel, data, T0 + i)
    for rel in NEVER:
        write(root, rel, blob(rel), T0 + 100)


NEVER = [
    "_staging/r2/pixels/r2/pack-x.pack",
    "_staging/r2/tables/runs/r2.parquet",
    "pixels/r2/pack-y.pack._COPYING_",
    "tables/instances/.part-r1-0.parquet.crc",
    "tables/instances/_temporary/0/part-9.parquet",
    "tables/frames/_SUCCESS",
    "tables/frames/_delta_log/_last_checkpoint",
    "quarantine/r1/upload.tmp",
]


def backed_up(rel: str) -> bool:
    """The test's own statement of what belongs in a snapshot."""
    parts = rel.split("/")
    if any(p.startswith(("_", ".")) and p != "_delta_log" for p in parts):  # tables' logs kept
        return False
    return not rel.endswith(("._COPYING_", ".tmp", ".part", ".crdownload", "~"))


def tree(root: Path, only_backed_up: bool = True) -> dict[str, str]:
    """Relative path -> sha256 of every file under ``root``."""
    out = {}
    for dirpath, _, names in os.walk(root):
        for name in names:
            p = Path(dirpath) / name
            rel = p.relative_to(root).as_posix()
            if not only_backed_up or backed_up(rel):
                out[rel] = hashlib.sha256(p.read_bytes()).hexdigest()
    return out


def newest(root: Path) -> str:
    """The backed-up file with the highest mtime (a snapshot's watermark)."""
    files = [
        p for p in root.rglob("*") if p.is_file() and backed_up(p.relative_to(root).as_posix())
    ]
    return max(files, key=lambda p: p.stat().st_mtime_ns).relative_to(root).as_posix()


def save(lake: Path, dst: Path) -> Path:
    shutil.copytree(lake, dst)
    return dst


def objects(backup: Path) -> set[str]:
    """Names (sha256 hex) of the objects stored in a backup."""
    base = backup / "objects"
    if not base.exists():
        return set()
    return {p.parent.name + p.name for p in base.rglob("*") if p.is_file()}


def with_snapshot(config: Config, **kwargs: float) -> Config:
    return dataclasses.replace(config, snapshot=SnapshotConfig(**kwargs))


RECORD_KEY = b"dicomlake.snapshot"
MAC_KEY = b"dicomlake.snapshot.mac"
MANIFEST_COLUMNS = ("path", "size", "mtime_ms", "sha256", "object", "reason")


def manifest_mac(secret: bytes, record: bytes, rows: list[dict]) -> str:
    """A manifest's authentication code as docs/FORMATS.md describes it, computed here."""
    lines = b"".join(
        json.dumps([r[c] for c in MANIFEST_COLUMNS], separators=(",", ":")).encode() + b"\n"
        for r in rows
    )
    message = (
        b"dicomlake-manifest-mac-v1\0"
        + len(record).to_bytes(8, "big")
        + record
        + hashlib.sha256(lines).digest()
    )
    return hmac.new(secret, message, hashlib.sha256).hexdigest()


def signed(table: pa.Table, secret: bytes) -> pa.Table:
    """A manifest table (its footer metadata in its schema) with its code made anew under
    ``secret``: what a writer holding the keyring could write."""
    meta = dict(table.schema.metadata)
    meta[MAC_KEY] = manifest_mac(secret, meta[RECORD_KEY], table.to_pylist()).encode()
    return table.replace_schema_metadata(meta)
