"""The manifest's authentication code: its input as docs/FORMATS.md describes it, computed here
independently; every byte of the record and of each row field counts, and so does row order."""

from __future__ import annotations

import dataclasses
import hashlib
import hmac
import json

import pyarrow as pa
import pytest

from dicomlake.backup.manifest import MANIFEST_SCHEMA, SnapshotInfo, manifest_mac

SECRET = bytes(range(32))
RECORD = b'{"format": 2, "snapshot_id": "20261101T010000Z-full", "watermark_ms": 1790000000000}'
ROWS = [
    {
        "path": "tables/runs/r1.parquet",
        "size": 3000,
        "mtime_ms": 1790000000000,
        "sha256": "a" * 64,
        "object": "objects/aa/" + "a" * 62,
        "reason": "full",
    },
    {
        "path": 'pixels/r1/p\u00e9-"q".pack',  # non-ASCII and a quote: escaped, not dropped
        "size": 50_000,
        "mtime_ms": 1790000001000,
        "sha256": "b" * 64,
        "object": "objects/bb/" + "b" * 62,
        "reason": "unchanged",
    },
]


def _table(rows: list[dict]) -> pa.Table:
    return pa.Table.from_pylist(rows, schema=MANIFEST_SCHEMA)


def _expected(secret: bytes, record: bytes, rows: list[dict]) -> str:
    lines = "".join(
        json.dumps([r["path"], r["size"], r["mtime_ms"], r["sha256"], r["object"], r["reason"]],
                   separators=(",", ":")) + "\n"
        for r in rows
    )  # fmt: skip
    assert lines.isascii()
    message = (
        b"dicomlake-manifest-mac-v1\x00"
        + len(record).to_bytes(8, "big")
        + record
        + hashlib.sha256(lines.encode("ascii")).digest()
    )
    return hmac.new(secret, message, hashlib.sha256).hexdigest()


def test_the_code_is_the_documented_hmac():
    assert manifest_mac(SECRET, RECORD, _table(ROWS)) == _expected(SECRET, RECORD, ROWS)
    # Columns in another order in the file are taken in the schema's order.
    reordered = _table(ROWS).select(["reason", "object", "sha256", "mtime_ms", "size", "path"])
    assert manifest_mac(SECRET, RECORD, reordered) == _expected(SECRET, RECORD, ROWS)
    assert manifest_mac(SECRET, RECORD, _table([])) == _expected(SECRET, RECORD, [])


@pytest.mark.parametrize("row", range(len(ROWS)))
@pytest.mark.parametrize("field", MANIFEST_SCHEMA.names)
def test_a_changed_field_of_any_row_changes_the_code(row, field):
    base = manifest_mac(SECRET, RECORD, _table(ROWS))
    value = ROWS[row][field]
    changed = value + 1 if isinstance(value, int) else value[:-1] + chr(ord(value[-1]) ^ 1)
    rows = [dict(r) for r in ROWS]
    rows[row][field] = changed
    assert manifest_mac(SECRET, RECORD, _table(rows)) != base
    assert manifest_mac(SECRET, RECORD, _table(rows)) == _expected(SECRET, RECORD, rows)


def test_every_record_byte_row_order_and_the_key_count():
    base = manifest_mac(SECRET, RECORD, _table(ROWS))
    for n in range(len(RECORD)):
        flipped = RECORD[:n] + bytes([RECORD[n] ^ 1]) + RECORD[n + 1 :]
        assert manifest_mac(SECRET, flipped, _table(ROWS)) != base, n
    assert manifest_mac(SECRET, RECORD + b" ", _table(ROWS)) != base
    assert manifest_mac(SECRET, RECORD, _table(ROWS[::-1])) != base
    assert manifest_mac(SECRET, RECORD, _table(ROWS[:1])) != base
    assert manifest_mac(SECRET[::-1], RECORD, _table(ROWS)) != base


def test_every_record_field_has_its_type_checked_when_read():
    """A record of another type is refused field by field: no field may go unchecked."""
    record = {
        "snapshot_id": "20261101T010000Z-full",
        "mode": "full",
        "created": "2026-11-01T01:00:00+00:00",
        "base": None,
        "lake": "file:///lake",
        "source": "live",
        "watermark_ms": 1,
        "scan_from_ms": None,
        "runs_excluded": [],
        "table_versions": {},
        **{f.name: 0 for f in dataclasses.fields(SnapshotInfo) if str(f.type) == "int"},
    }
    assert SnapshotInfo.from_summary(record).snapshot_id == "20261101T010000Z-full"
    for field in dataclasses.fields(SnapshotInfo):
        wrong = {**record, field.name: 1.5}
        with pytest.raises(TypeError, match=field.name):
            SnapshotInfo.from_summary(wrong)
