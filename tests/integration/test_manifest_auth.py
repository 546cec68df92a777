"""Manifests are authenticated: a real committed manifest rewritten with pyarrow (its footer
kept) is found by verify, refused by restore before anything is written, and not compared with
by a snapshot. The expectations come from the lake's files and the edits themselves."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
from collections.abc import Callable
from datetime import date
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest
from snapshot_helpers import MAC_KEY, RECORD_KEY, T0, blob, make_lake, save, tree, with_snapshot
from snapshot_helpers import write as write_file

from dicomlake.backup import apply_retention, list_snapshots, restore, take_snapshot, verify
from dicomlake.crypto.keyring import Keyring
from dicomlake.errors import (
    AlteredManifestError,
    BackupError,
    ForeignManifestError,
    UnauthenticatedManifestError,
)
from dicomlake.keyring_file import save_keyring

REPO = Path(__file__).resolve().parents[2]
FULL, INC = "20261101T010000Z-full", "20261102T010000Z-incremental"
RUNS = "tables/runs/r1.parquet"  # rewritten between the two snapshots: two versions
DROPPED = "pixels/r1/pack-b.pack"


@pytest.fixture
def cfg(config):
    return with_snapshot(config, lag_seconds=0.0)


# What changes in the lake before each snapshot: RUNS has two versions, one in each.
CHANGES = {FULL: {}, INC: {RUNS: blob("run1-v2"), "pixels/r2/pack-c.pack": blob("c")}}


@pytest.fixture
def backup(tmp_path, cfg, keyring) -> Path:
    """FULL then INC of a lake (kept as INC saw it in ``lake-at-inc``)."""
    lake, backup = tmp_path / "lake", tmp_path / "backup"
    make_lake(lake)
    for sid, changes in CHANGES.items():
        for n, (rel, data) in enumerate(changes.items()):
            write_file(lake, rel, data, T0 + 500 + n)
        mode = sid.split("-")[1]
        take_snapshot(str(lake), str(backup), mode, keyring=keyring, config=cfg, now_label=sid[:16])
    save(lake, tmp_path / "lake-at-inc")
    return backup


def _manifest(backup: Path, sid: str) -> Path:
    return backup / "manifests" / f"{sid}.parquet"


def _rewrite(backup: Path, sid: str, rows=None, meta=None) -> None:
    """Rewrite ``sid``'s manifest: ``rows(table) -> table`` and ``meta(dict) -> dict`` applied,
    its footer metadata otherwise kept as it was."""
    uri = _manifest(backup, sid)
    table = pq.read_table(uri)
    kept = dict(table.schema.metadata)
    edited = (rows or (lambda t: t))(table)
    pq.write_table(edited.replace_schema_metadata((meta or (lambda m: m))(kept)), uri)


def _drop_row(backup: Path) -> None:
    _rewrite(backup, INC, rows=lambda t: t.filter(pc.not_equal(t["path"], DROPPED)))


def _older_object(backup: Path) -> None:
    """Point INC's row of RUNS at FULL's object of it: the older version, present and sound."""
    old = next(r for r in pq.read_table(_manifest(backup, FULL)).to_pylist() if r["path"] == RUNS)
    # Without the code this edit would pass every row check: the object holds that content.
    assert hashlib.sha256((backup / old["object"]).read_bytes()).hexdigest() == old["sha256"]

    def point(table: pa.Table) -> pa.Table:
        rows = table.to_pylist()
        for r in rows:
            if r["path"] == RUNS:
                assert r["sha256"] != old["sha256"]
                r.update(sha256=old["sha256"], object=old["object"], size=old["size"])
        return pa.Table.from_pylist(rows, schema=table.schema)

    _rewrite(backup, INC, rows=point)


def _lower_watermark(backup: Path) -> None:
    def lower(meta: dict) -> dict:
        record = json.loads(meta[RECORD_KEY])
        record["watermark_ms"] -= 1
        return {**meta, RECORD_KEY: json.dumps(record).encode()}

    _rewrite(backup, INC, meta=lower)


def _copy_over(backup: Path) -> None:
    shutil.copyfile(_manifest(backup, FULL), _manifest(backup, INC))


def _remove_code(backup: Path) -> None:
    _rewrite(backup, INC, meta=lambda m: {k: v for k, v in m.items() if k != MAC_KEY})


def _as_format_1(backup: Path, sid: str) -> None:
    """``sid``'s manifest as a version before manifests had codes wrote it: no code, a format 1
    record without a keyring fingerprint."""

    def older(meta: dict) -> dict:
        record = json.loads(meta[RECORD_KEY])
        record["format"] = 1
        del record["keyring_fingerprint"]
        return {RECORD_KEY: json.dumps(record).encode()}

    _rewrite(backup, sid, meta=older)


def _legacy(backup: Path) -> None:
    """Both snapshots as format 1 manifests."""
    for sid in (FULL, INC):
        _as_format_1(backup, sid)


ALTERED: dict[str, tuple[Callable[[Path], None], type, str]] = {
    "dropped row": (_drop_row, AlteredManifestError, "its authentication code does not match"),
    "older object": (_older_object, AlteredManifestError, "its authentication code does not"),
    "watermark": (_lower_watermark, AlteredManifestError, "its authentication code does not"),
    "copied over": (_copy_over, AlteredManifestError, f"is the manifest of snapshot {FULL}"),
    # The record says it had a code: a manifest stripped of it is no older version's
    "code removed": (_remove_code, AlteredManifestError, "and the code is gone"),
    # No version that writes codes wrote a manifest without one after one with
    "format 1 after a code": (
        lambda backup: _as_format_1(backup, INC),
        AlteredManifestError,
        f"labelled after snapshot {FULL}",
    ),
}


def _entries(root: Path) -> set[str]:
    return {p.relative_to(root).as_posix() for p in root.rglob("*")}


def _refused(
    tmp_path: Path, backup: Path, cfg, keyring, error: type, text: str, **kw: bool
) -> None:
    """Restore of INC raises ``error`` saying ``text``, having written nothing: the target stays
    an empty directory and nothing appears beside it."""
    target = tmp_path / "out" / "target"
    target.mkdir(parents=True, exist_ok=True)
    with pytest.raises(error, match="nothing restored") as err:
        restore(str(backup), INC, str(target), keyring=keyring, config=cfg, **kw)
    assert text in str(err.value) and str(_manifest(backup, INC)) in str(err.value)
    assert _entries(tmp_path / "out") == {"target"}


@pytest.mark.parametrize("case", sorted(ALTERED))
def test_an_altered_manifest_is_reported_and_never_restored(tmp_path, backup, cfg, keyring, case):
    tamper, error, text = ALTERED[case]
    assert verify(str(backup), keyring=keyring, config=cfg).ok
    tamper(backup)

    result = verify(str(backup), keyring=keyring, config=cfg)
    assert [(p.snapshot_id, p.path, p.object) for p in result.problems] == [
        (INC, "", str(_manifest(backup, INC)))
    ]
    assert text in result.problems[0].reason
    assert result.summary()["problems"][0]["reason"] == result.problems[0].reason
    _refused(tmp_path, backup, cfg, keyring, error, text)
    _refused(tmp_path, backup, cfg, keyring, error, "not even with --trust-unauthenticated",
             trust_unauthenticated=True)  # fmt: skip
    # The other snapshot is untouched and restores whole.
    restore(str(backup), FULL, str(tmp_path / "full"), keyring=keyring, config=cfg)
    assert RUNS in tree(tmp_path / "full")


def test_a_manifest_without_its_code_is_restored_only_when_trusted(tmp_path, backup, cfg, keyring):
    _legacy(backup)
    result = verify(str(backup), keyring=keyring, config=cfg)
    assert [(p.snapshot_id, p.path) for p in result.problems] == [(FULL, ""), (INC, "")]
    assert "no authentication code" in result.problems[0].reason
    _refused(
        tmp_path, backup, cfg, keyring, UnauthenticatedManifestError, "--trust-unauthenticated"
    )
    restored = tmp_path / "trusted"
    restore(
        str(backup), INC, str(restored), keyring=keyring, config=cfg, trust_unauthenticated=True
    )
    assert tree(restored) == tree(tmp_path / "lake-at-inc")


def test_another_keyring_authenticates_no_manifest(tmp_path, backup, cfg, keyring):
    other = Keyring.generate("symmetric")
    result = verify(str(backup), keyring=other, config=cfg)
    assert [(p.snapshot_id, p.path) for p in result.problems] == [(FULL, ""), (INC, "")]
    for p in result.problems:
        assert f"another keyring (fingerprint {keyring.fingerprint}" in p.reason
        assert f"this keyring is {other.fingerprint})" in p.reason
    for trust in (False, True):
        _refused(tmp_path, backup, cfg, other, ForeignManifestError, "another keyring",
                 trust_unauthenticated=trust)  # fmt: skip


def test_an_incremental_over_a_manifest_without_its_code_reads_everything(
    tmp_path, backup, cfg, keyring
):
    _legacy(backup)
    lake = tmp_path / "lake"
    snap = take_snapshot(str(lake), str(backup), "incremental", keyring=keyring, config=cfg)
    every = tree(lake)
    assert (snap.mode, snap.base, snap.base_unauthenticated) == ("full", None, INC)
    assert snap.snapshot_id.endswith("-full")
    assert (snap.files, snap.files_read, snap.unchanged) == (len(every), len(every), 0)
    assert snap.summary()["base_unauthenticated"] == INC
    # The new manifest is authenticated: the next incremental compares with it.
    write_file(lake, "pixels/r3/pack-d.pack", blob("d"), T0 + 900)
    nxt = take_snapshot(str(lake), str(backup), "incremental", keyring=keyring, config=cfg)
    assert (nxt.mode, nxt.base, nxt.new) == ("incremental", snap.snapshot_id, 1)
    assert nxt.unchanged and nxt.files_read < nxt.files


@pytest.mark.parametrize("case", sorted(ALTERED))
def test_no_incremental_is_taken_over_an_altered_manifest_a_full_is(
    tmp_path, backup, cfg, keyring, case
):
    tamper, error, text = ALTERED[case]
    tamper(backup)
    before = _entries(backup)
    for mode in ("incremental", "differential"):
        with pytest.raises(error, match="no snapshot taken") as err:
            take_snapshot(str(tmp_path / "lake"), str(backup), mode, keyring=keyring, config=cfg)
        assert text in str(err.value) and "take a --mode full snapshot" in str(err.value)
    assert _entries(backup) == before
    # A full compares with nothing: the way past it, whole and authenticated
    lake = tmp_path / "lake"
    full = take_snapshot(str(lake), str(backup), "full", keyring=keyring, config=cfg)
    assert (full.base, full.files_read) == (None, len(tree(lake)))
    restore(str(backup), full.snapshot_id, str(tmp_path / "r"), keyring=keyring, config=cfg)
    assert tree(tmp_path / "r") == tree(lake)


def test_a_retry_reads_the_committed_manifest_authenticated(tmp_path, backup, cfg, keyring):
    lake = str(tmp_path / "lake")
    again = take_snapshot(lake, str(backup), "incremental", keyring=keyring, config=cfg,
                          now_label=INC[:16])  # fmt: skip
    assert again.already_committed and again.keyring_fingerprint == keyring.fingerprint
    _lower_watermark(backup)
    with pytest.raises(AlteredManifestError, match=f"{INC}.parquet is altered"):
        take_snapshot(lake, str(backup), "incremental", keyring=keyring, config=cfg,
                      now_label=INC[:16])  # fmt: skip


def test_the_commands_report_and_refuse_and_trust_only_when_told(tmp_path, backup, config, keyring):
    keyring_file = tmp_path / "keyring.json"
    save_keyring(str(keyring_file), keyring, config)
    env = {**os.environ, "PYTHONPATH": str(REPO / "lib")}

    def cli(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "dicomlake.cli", *args, "--keyring", str(keyring_file)],
            capture_output=True,
            text=True,
            env=env,
        )

    _legacy(backup)
    proc = cli("verify", "--backup", str(backup))
    assert proc.returncode == 1
    assert f"BAD {INC}" in proc.stderr and "no authentication code" in proc.stderr
    target = tmp_path / "restored"
    restore_args = ["restore", "--backup", str(backup), "--snapshot", INC, "--target", str(target)]
    proc = cli(*restore_args)
    assert proc.returncode == 1 and "--trust-unauthenticated" in proc.stderr
    assert not target.exists()
    proc = cli(*restore_args, "--trust-unauthenticated")
    assert proc.returncode == 0, proc.stderr
    assert tree(target) == tree(tmp_path / "lake-at-inc")


def test_a_backup_holds_the_snapshots_of_one_lake(tmp_path, backup, cfg, keyring):
    """Another lake backed up with the same keyring into this backup would be compared with
    this lake's snapshots (or restored for them): refused, whatever the mode."""
    other = tmp_path / "other-lake"
    make_lake(other)
    before = _entries(backup)
    for mode in ("incremental", "full"):
        with pytest.raises(BackupError, match="holds snapshots of lake .*no snapshot taken"):
            take_snapshot(str(other), str(backup), mode, keyring=keyring, config=cfg)
    assert _entries(backup) == before


def test_a_full_snapshot_stores_a_damaged_object_again(tmp_path, backup, cfg, keyring):
    row = next(r for r in pq.read_table(_manifest(backup, INC)).to_pylist() if r["path"] == RUNS)
    damaged = backup / row["object"]
    damaged.write_bytes(b"not the content")  # of another size
    assert not verify(str(backup), keyring=keyring, config=cfg).ok
    lake = tmp_path / "lake"
    full = take_snapshot(str(lake), str(backup), "full", keyring=keyring, config=cfg)
    assert hashlib.sha256(damaged.read_bytes()).hexdigest() == row["sha256"]
    restore(str(backup), full.snapshot_id, str(tmp_path / "r"), keyring=keyring, config=cfg)
    assert tree(tmp_path / "r") == tree(lake)
    assert verify(str(backup), keyring=keyring, config=cfg).ok  # INC's object is whole again


def test_a_planted_manifest_makes_retention_delete_nothing(tmp_path, backup, cfg, keyring):
    """A manifest without a code labelled after the day's genuine snapshot would be that day's
    newest: retention counts only manifests that authenticate, and leaves it as it is."""
    planted = "20261102T020000Z-full"
    shutil.copyfile(_manifest(backup, FULL), _manifest(backup, planted))

    def as_planted(meta: dict) -> dict:
        record = json.loads(meta[RECORD_KEY])
        record.update(snapshot_id=planted, format=1)
        del record["keyring_fingerprint"]
        return {RECORD_KEY: json.dumps(record).encode()}

    _rewrite(backup, planted, meta=as_planted)
    stored = _entries(backup / "objects")
    kept = with_snapshot(cfg, lag_seconds=0.0, keep_daily=1, keep_weekly=1)
    result = apply_retention(str(backup), keyring=keyring, config=kept, today=date(2026, 11, 2))
    assert (result.kept, result.removed, result.not_counted) == ((INC,), (FULL,), (planted,))
    assert _manifest(backup, planted).exists() and _entries(backup / "objects") == stored
    restore(str(backup), INC, str(tmp_path / "r"), keyring=keyring, config=cfg)
    assert tree(tmp_path / "r") == tree(tmp_path / "lake-at-inc")


def test_objects_without_any_snapshot_fail_verify(backup, cfg, keyring):
    for sid in (FULL, INC):
        _manifest(backup, sid).unlink()
    result = verify(str(backup), keyring=keyring, config=cfg)
    assert not result.ok and result.snapshots == ()
    assert "no snapshot, but objects are stored" in result.problems[0].reason


def test_a_manifest_whose_record_does_not_read_is_left_out_of_the_listing(backup, cfg):
    bad = "20261103T010000Z-full"
    shutil.copyfile(_manifest(backup, FULL), _manifest(backup, bad))

    def wrong_types(meta: dict) -> dict:
        record = json.loads(meta[RECORD_KEY])
        record.update(snapshot_id=bad, files="many")
        return {**meta, RECORD_KEY: json.dumps(record).encode()}

    _rewrite(backup, bad, meta=wrong_types)
    assert [i.snapshot_id for i in list_snapshots(str(backup), config=cfg)] == [FULL, INC]


def test_verify_says_how_to_repair_a_damaged_object_and_that_repairs_it(
    tmp_path, backup, config, keyring
):
    keyring_file = tmp_path / "keyring.json"
    save_keyring(str(keyring_file), keyring, config)
    row = next(r for r in pq.read_table(_manifest(backup, INC)).to_pylist() if r["path"] == RUNS)
    damaged = backup / row["object"]
    data = bytearray(damaged.read_bytes())
    data[0] ^= 1  # the same size: only its hash tells
    damaged.write_bytes(bytes(data))
    proc = subprocess.run(
        [sys.executable, "-m", "dicomlake.cli", "verify", "--backup", str(backup)]
        + ["--keyring", str(keyring_file)],
        capture_output=True,
        text=True,
        env={**os.environ, "PYTHONPATH": str(REPO / "lib")},
    )
    assert proc.returncode == 1 and f"BAD {INC} {RUNS}" in proc.stderr
    assert "delete the damaged ones and take a --mode full snapshot" in proc.stderr
    damaged.unlink()  # as told
    cfg = with_snapshot(config, lag_seconds=0.0)
    take_snapshot(str(tmp_path / "lake"), str(backup), "full", keyring=keyring, config=cfg)
    assert hashlib.sha256(damaged.read_bytes()).hexdigest() == row["sha256"]
    assert verify(str(backup), keyring=keyring, config=cfg).ok


def test_a_damaged_object_no_manifest_names_is_stored_again_when_published_over(
    tmp_path, backup, cfg, keyring
):
    """With no snapshot to hint at the content, the copy meets the object only as it publishes
    over it: one of another size is replaced, not taken for the content."""
    row = next(r for r in pq.read_table(_manifest(backup, INC)).to_pylist() if r["path"] == RUNS)
    for sid in (FULL, INC):
        _manifest(backup, sid).unlink()
    damaged = backup / row["object"]
    damaged.write_bytes(b"not the content")
    lake = tmp_path / "lake"
    full = take_snapshot(str(lake), str(backup), "full", keyring=keyring, config=cfg)
    assert hashlib.sha256(damaged.read_bytes()).hexdigest() == row["sha256"]
    restore(str(backup), full.snapshot_id, str(tmp_path / "r"), keyring=keyring, config=cfg)
    assert tree(tmp_path / "r") == tree(lake)
