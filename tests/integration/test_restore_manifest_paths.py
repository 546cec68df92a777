"""A manifest is a file in the backup, and anyone who can write there can craft one: restore
refuses a path that would not stay inside its target before writing anything, and verify reports
it. The crafted manifests are written by hand with pyarrow next to a real snapshot's, and
authenticated with the keyring, so these checks are those after authentication (a writer holding
the keyring, a bug); test_manifest_auth.py has crafted manifests without it."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from snapshot_helpers import blob, make_lake, signed, tree, with_snapshot

from dicomlake.backup import restore, take_snapshot, verify
from dicomlake.errors import BackupError
from dicomlake.keyring_file import save_keyring

REPO = Path(__file__).resolve().parents[2]
GOOD = "20261101T010000Z-full"
CRAFTED = "20261102T010000Z-full"

BAD_PATHS = [
    "../../escaped.txt",
    "../escaped.txt",
    "/tmp/escaped-absolute.txt",
    "tables/../../escaped.txt",
    "tables//runs/x.parquet",
    "./tables/x.parquet",
    "tables/runs/.",
    "tables/runs/",
    "",
    "tables\\..\\..\\escaped.txt",
    "tables/a\x00b",
]


def _files(root: Path) -> set[Path]:
    return {p for p in root.rglob("*") if p.is_file()}


def _craft(backup: Path, rows: list[dict], keyring) -> None:
    """A manifest for snapshot CRAFTED: the good one's record, these rows, authenticated."""
    good = backup / "manifests" / f"{GOOD}.parquet"
    meta = pq.read_schema(good).metadata
    record = json.loads(meta[b"dicomlake.snapshot"])
    record["snapshot_id"] = CRAFTED
    schema = pa.schema(
        [
            pa.field("path", pa.string(), nullable=False),
            pa.field("size", pa.int64(), nullable=False),
            pa.field("mtime_ms", pa.int64(), nullable=False),
            pa.field("sha256", pa.string(), nullable=False),
            pa.field("object", pa.string(), nullable=False),
            pa.field("reason", pa.string(), nullable=False),
        ],
        metadata={b"dicomlake.snapshot": json.dumps(record).encode()},
    )
    table = signed(pa.Table.from_pylist(rows, schema=schema), keyring.secret_for("backup-manifest"))
    pq.write_table(table, good.with_name(f"{CRAFTED}.parquet"))


def _row(path: str, data: bytes, obj: str | None = None) -> dict:
    sha = hashlib.sha256(data).hexdigest()
    return {
        "path": path,
        "size": len(data),
        "mtime_ms": 0,
        "sha256": sha,
        "object": obj or f"objects/{sha[:2]}/{sha[2:]}",
        "reason": "full",
    }


@pytest.fixture
def backup(tmp_path, config, keyring):
    lake, backup = tmp_path / "lake", tmp_path / "backup"
    make_lake(lake)
    cfg = with_snapshot(config, lag_seconds=0.0)
    take_snapshot(str(lake), str(backup), "full", keyring=keyring, config=cfg, now_label=GOOD[:16])
    return backup


@pytest.mark.parametrize("bad", BAD_PATHS)
def test_a_path_leaving_the_target_is_refused_and_reported(tmp_path, config, backup, bad, keyring):
    good_row = _row("tables/runs/r1.parquet", blob("run1"))  # an object the backup holds
    _craft(backup, [good_row, {**_row(bad, blob("run1"))}], keyring)
    before = _files(tmp_path)
    target = tmp_path / "a" / "target"

    with pytest.raises(BackupError, match=r"nothing restored") as err:
        restore(str(backup), CRAFTED, str(target), keyring=keyring, config=config)
    assert repr(bad)[1:-1] in str(err.value)
    assert _files(tmp_path) == before
    assert not (tmp_path / "a").exists()  # not even the staging directory

    result = verify(str(backup), keyring=keyring, config=config)
    assert not result.ok
    assert [(p.snapshot_id, p.path) for p in result.problems] == [(CRAFTED, bad)]
    # The genuine snapshot beside it still restores whole.
    restore(str(backup), GOOD, str(tmp_path / "good"), keyring=keyring, config=config)
    assert tree(tmp_path / "good") == tree(tmp_path / "lake")


def test_verify_and_restore_commands_fail_on_an_escaping_path(tmp_path, config, backup, keyring):
    _craft(backup, [_row("../../escaped.txt", blob("run1"))], keyring)
    keyring_file = tmp_path / "keyring.json"
    save_keyring(str(keyring_file), keyring, config)
    env = {**os.environ, "PYTHONPATH": str(REPO / "lib")}
    dicomlake = [sys.executable, "-m", "dicomlake.cli"]
    proc = subprocess.run(
        [*dicomlake, "verify", "--backup", str(backup), "--keyring", str(keyring_file)],
        capture_output=True,
        text=True,
        env=env,
    )
    assert proc.returncode == 1
    assert f"BAD {CRAFTED} ../../escaped.txt" in proc.stderr
    target = tmp_path / "x" / "y" / "target"
    restore_cmd = ["restore", "--backup", str(backup), "--snapshot", CRAFTED]
    restore_cmd += ["--keyring", str(keyring_file)]
    proc = subprocess.run(
        [*dicomlake, *restore_cmd, "--target", str(target)],
        capture_output=True,
        text=True,
        env=env,
    )
    assert proc.returncode == 1 and "../../escaped.txt" in proc.stderr
    assert not (tmp_path / "x").exists() and not (tmp_path / "escaped.txt").exists()


def test_an_object_key_outside_the_objects_is_refused(tmp_path, config, backup, keyring):
    # A file outside the backup's objects, with its true hash recorded: still not read.
    secret = tmp_path / "lake" / "tables" / "runs" / "r1.parquet"
    stolen = _row("stolen.parquet", secret.read_bytes(), "../lake/tables/runs/r1.parquet")
    _craft(backup, [stolen], keyring)
    with pytest.raises(BackupError, match="object key does not name"):
        restore(str(backup), CRAFTED, str(tmp_path / "target"), keyring=keyring, config=config)
    assert not (tmp_path / "target").exists()
