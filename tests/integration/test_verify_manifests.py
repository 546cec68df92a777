"""verify checks every manifest row against its object, whichever snapshot it is in, and goes
on past a manifest it cannot read; restore refuses rows that would write one file twice. The
manifests are edited by hand with pyarrow and authenticated again with the keyring (the row
checks hold for a manifest that passes authentication too: test_manifest_auth.py has the edits
without it), and the expectations come from the lake's files."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest
from snapshot_helpers import T0, blob, make_lake, signed, with_snapshot, write

from dicomlake.backup import restore, take_snapshot, verify
from dicomlake.errors import BackupError

FULL, INC, INC2 = "20261101T010000Z-full", "20261102T010000Z-incremental", "20261103T010000Z-full"
RUNS = "tables/runs/r1.parquet"  # in every snapshot, unchanged: one object for all


@pytest.fixture
def cfg(config):
    return with_snapshot(config, lag_seconds=0.0)


@pytest.fixture
def backup(tmp_path, cfg, keyring) -> Path:
    lake, backup = tmp_path / "lake", tmp_path / "backup"
    make_lake(lake)
    take_snapshot(str(lake), str(backup), "full", keyring=keyring, config=cfg, now_label=FULL[:16])
    write(lake, "pixels/r2/pack-c.pack", blob("c"), T0 + 500)
    take_snapshot(
        str(lake), str(backup), "incremental", keyring=keyring, config=cfg, now_label=INC[:16]
    )
    return backup


def _edit(backup: Path, sid: str, edit, keyring=None) -> None:
    """Rewrite a manifest's rows with ``edit(table) -> table``, keeping its footer record, and
    authenticate it anew with ``keyring`` when given."""
    uri = backup / "manifests" / f"{sid}.parquet"
    table = pq.read_table(uri)
    edited = edit(table).replace_schema_metadata(table.schema.metadata)
    if keyring is not None:
        edited = signed(edited, keyring.secret_for("backup-manifest"))
    pq.write_table(edited, uri)


def _found(result) -> dict[tuple[str, str], str]:
    return {(p.snapshot_id, p.path): p.reason for p in result.problems}


def test_a_wrong_size_in_an_older_manifest_is_found(tmp_path, backup, cfg, keyring):
    size = len(blob("run1"))

    def grow(table):
        sizes = pc.if_else(pc.equal(table["path"], RUNS), pc.add(table["size"], 1), table["size"])
        return table.set_column(table.schema.get_field_index("size"), "size", sizes)

    _edit(backup, FULL, grow, keyring)
    result = verify(str(backup), keyring=keyring, config=cfg)
    assert _found(result) == {(FULL, RUNS): f"size {size}, expected {size + 1}"}
    assert verify(str(backup), INC, keyring=keyring, config=cfg).ok


def test_a_garbage_or_incomplete_manifest_is_reported_and_the_others_checked(backup, cfg, keyring):
    (backup / "manifests" / f"{FULL}.parquet").write_bytes(b"garbage")
    _edit(backup, INC, lambda t: t.drop_columns(["sha256"]))  # refused before its code
    write(backup, f"manifests/{INC2}.parquet", b"")
    result = verify(str(backup), keyring=keyring, config=cfg)
    found = {(p.snapshot_id, p.path): p for p in result.problems}
    assert set(found) == {(FULL, ""), (INC, ""), (INC2, "")}
    assert found[(FULL, "")].object == str(backup / "manifests" / f"{FULL}.parquet")
    assert "unreadable" in found[(FULL, "")].reason
    assert "sha256 missing" in found[(INC, "")].reason
    with pytest.raises(
        BackupError, match=f"manifest .*{INC}.parquet is unreadable: sha256 missing"
    ):
        restore(str(backup), INC, str(backup.parent / "r"), keyring=keyring, config=cfg)
    assert not (backup.parent / "r").exists()


def test_one_broken_manifest_does_not_hide_a_damaged_object(backup, cfg, keyring):
    (backup / "manifests" / f"{FULL}.parquet").write_bytes(b"garbage")
    rows = pq.read_table(backup / "manifests" / f"{INC}.parquet").to_pylist()
    pack = next(r for r in rows if r["path"] == "pixels/r2/pack-c.pack")
    (backup / pack["object"]).write_bytes(b"damaged")
    found = _found(verify(str(backup), keyring=keyring, config=cfg))
    assert set(found) == {(FULL, ""), (INC, "pixels/r2/pack-c.pack")}
    assert found[(INC, "pixels/r2/pack-c.pack")] == (f"size 7, expected {len(blob('c'))}")


@pytest.mark.parametrize(
    ("extra", "reason"),
    [
        (RUNS + "/child", f"path below {RUNS!r}, which another row writes as a file"),
        (RUNS, "path listed twice"),
    ],
)
def test_rows_writing_one_file_twice_are_refused_and_reported(
    tmp_path, backup, cfg, extra, reason, keyring
):
    def add(table):
        row = table.filter(pc.equal(table["path"], RUNS)).to_pylist()[0]
        return pa.Table.from_pylist([*table.to_pylist(), {**row, "path": extra}], table.schema)

    _edit(backup, FULL, add, keyring)
    with pytest.raises(BackupError, match="nothing restored") as err:
        restore(str(backup), FULL, str(tmp_path / "r"), keyring=keyring, config=cfg)
    assert f"{extra!r} ({reason})" in str(err.value)
    assert not (tmp_path / "r").exists()
    assert _found(verify(str(backup), keyring=keyring, config=cfg)) == {(FULL, extra): reason}


def test_the_object_content_is_what_the_lake_held(backup, cfg, keyring):
    """The rows checked name the lake's own hashes (the baseline the checks above edit)."""
    rows = pq.read_table(backup / "manifests" / f"{FULL}.parquet").to_pylist()
    runs = next(r for r in rows if r["path"] == RUNS)
    assert runs["sha256"] == hashlib.sha256(blob("run1")).hexdigest()
    assert verify(str(backup), keyring=keyring, config=cfg).ok
