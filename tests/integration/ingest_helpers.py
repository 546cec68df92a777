"""Independent readers of a lake for the ingest tests: deltalake and DuckDB, no dicomlake."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import os
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pyarrow as pa
from deltalake import DeltaTable


def table(lake: Path, name: str) -> pa.Table:
    """A lake table as the ``deltalake`` package reads it through the table's log."""
    path = lake / "tables" / name
    if not DeltaTable.is_deltatable(str(path)):
        return pa.table({})
    return DeltaTable(str(path)).to_pyarrow_table()


def sha256_file(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def landing_files(landing: Path) -> dict[str, Path]:
    """Every file of a landing zone by the URI the lake records (its absolute path)."""
    return {str(p): p for p in sorted(landing.rglob("*")) if p.is_file()}


# -- the pseudonym algorithms of dicomlake.dicom.deid, written again from their documentation, so
# tests compare the lake with values computed independently of the code under test.


def strip_value(value: object) -> str:
    return str(value).strip(" \x00")


def ref_uid(secret: bytes, value: str) -> str:
    """``2.25.<int>`` from HMAC-SHA256(secret, "dicomlake-uid-v1\\0" + uid), UUIDv8 bits set."""
    message = b"dicomlake-uid-v1\x00" + strip_value(value).encode()
    d = bytearray(hmac.new(secret, message, hashlib.sha256).digest()[:16])
    d[6] = d[6] & 0x0F | 0x80
    d[8] = d[8] & 0x3F | 0x80
    return f"2.25.{uuid.UUID(bytes=bytes(d)).int}"


def ref_text(secret: bytes, keyword: str, value: str) -> str:
    """First 16 base32 characters of HMAC-SHA256(secret, "dicomlake-id-v1\\0" + kw + "\\0" + v)."""
    message = b"dicomlake-id-v1\x00" + keyword.encode() + b"\x00" + strip_value(value).encode()
    return base64.b32encode(hmac.new(secret, message, hashlib.sha256).digest()).decode()[:16]


def ref_path_id(secret: bytes, path: str) -> str:
    """First 32 hex digits of HMAC-SHA256(secret, "dicomlake-path-v1\\0" + path as UTF-8)."""
    message = b"dicomlake-path-v1\x00" + path.encode("utf-8", "surrogateescape")
    return hmac.new(secret, message, hashlib.sha256).hexdigest()[:32]


def with_paths(rows: list[dict], keyring, paths) -> list[dict]:
    """``rows`` (of instances, sources or errors) with the landing path their
    ``source_path_id`` stands for added as ``source_path``, matched against ``paths`` (every
    landing URI the test made) by `ref_path_id` under the keyring's pseudonym secret."""
    secret = keyring.secret_for("pseudonym")
    by_id = {ref_path_id(secret, str(p)): str(p) for p in paths}
    return [{**r, "source_path": by_id[r["source_path_id"]]} for r in rows]


def ingest_command(landing: Path, lake: Path, keyring: Path) -> list[str]:
    """``dicomlake ingest`` as a person runs it, in its own process (and its own JVM)."""
    return [
        sys.executable,
        "-m",
        "dicomlake.cli",
        "ingest",
        "--landing",
        str(landing),
        "--lake",
        str(lake),
        "--keyring",
        str(keyring),
    ]


def run_export(
    lake: Path, keyring: Path, conf: Path, out: Path, *selection: str
) -> subprocess.CompletedProcess:
    """``dicomlake export`` of ``selection`` into ``out``, as a person runs it."""
    return subprocess.run(
        [sys.executable, "-m", "dicomlake.cli", "export", "--lake", str(lake), *selection]
        + ["--out", str(out), "--keyring", str(keyring), "--conf", str(conf)],
        capture_output=True,
        text=True,
        env={**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2] / "lib")},
        timeout=300,
    )


def dangling_references(lake: Path) -> list[str]:
    """What a reader of the tables' latest versions (deltalake) sees referred to but cannot
    see: an instance without its frames, elements or packs rows, a frames or errors row whose
    pack has no packs row, a sources row whose instance is not visible."""
    names = ("instances", "frames", "elements", "errors", "sources", "packs")
    rows = {name: table(lake, name).to_pylist() for name in names}
    packs = {r["pack_path"] for r in rows["packs"]}
    instances = {r["instance_id"] for r in rows["instances"]}
    found = []
    for r in rows["instances"]:
        for name in ("frames", "elements"):
            if not any(c["instance_id"] == r["instance_id"] for c in rows[name]):
                found.append(f"instance {r['instance_id']} has no {name} rows")
        if r["pack_path"] not in packs:
            found.append(f"instance {r['instance_id']}: no packs row for {r['pack_path']}")
    for name, column in (("frames", "pack_path"), ("errors", "quarantine_path")):
        found += [
            f"{name} row: no packs row for {r[column]}"
            for r in rows[name]
            if r[column] is not None and r[column] not in packs
        ]
    found += [
        f"sources row: instance {r['instance_id']} is not visible"
        for r in rows["sources"]
        if r["instance_id"] is not None and r["instance_id"] not in instances
    ]
    return found


def date_back_removals(table_dir: Path, hours: float) -> None:
    """Make the log's removals look ``hours`` old (what waiting that long would do)."""
    stamp = int((time.time() - hours * 3600) * 1000)
    for entry in sorted((table_dir / "_delta_log").glob("*.json")):
        actions = [json.loads(line) for line in entry.read_text().splitlines() if line]
        if not any("remove" in a for a in actions):
            continue
        for a in actions:
            if "remove" in a:
                a["remove"]["deletionTimestamp"] = stamp
        entry.write_text("".join(json.dumps(a) + "\n" for a in actions))
    for checkpoint in (table_dir / "_delta_log").glob("*checkpoint*"):
        checkpoint.unlink()  # it holds the old dates; readers replay the log instead
