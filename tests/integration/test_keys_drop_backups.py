"""`keys drop --backup`: a KEK that a snapshot still needs is kept, until the snapshots taken
before the rotation are gone."""

from __future__ import annotations

import dataclasses
import json
import shutil

import pytest
from pydicom.data import get_testdata_file

from dicomlake.backup import take_snapshot
from dicomlake.cli import EXIT_ERROR, main
from dicomlake.crypto.keyring import Keyring
from dicomlake.ingest.job import run_ingest
from dicomlake.keyring_file import save_keyring

pytestmark = pytest.mark.spark

BEFORE, AFTER = "20260105T000000Z", "20260105T060000Z"  # one day: retention keeps the newest


def _snapshot_then_rotate(tmp_path, sc, config, keyring, backup):
    """A lake with a full snapshot into ``backup`` taken before a `keys rotate --lake`: (lake,
    the keyring file, the KEK rotated out)."""
    landing, lake = tmp_path / "landing", tmp_path / "lake"
    landing.mkdir()
    shutil.copy(get_testdata_file("CT_small.dcm"), landing)
    run_ingest(sc, str(landing), str(lake), config, keyring)
    take_snapshot(str(lake), str(backup), "full", keyring=keyring, config=config, now_label=BEFORE)
    path = tmp_path / "keyring.json"
    save_keyring(str(path), keyring, config)
    assert main(["keys", "rotate", "--keyring", str(path), "--lake", str(lake)]) == 0
    return lake, path, keyring.active_kek_id


@pytest.fixture
def rotated(tmp_path, sc, config, keyring):
    """`_snapshot_then_rotate` into a local backup: (lake, backup, keyring file, old KEK)."""
    backup = tmp_path / "backup"
    lake, path, old = _snapshot_then_rotate(tmp_path, sc, config, keyring, backup)
    return lake, backup, path, old


def _summary(capsys) -> dict:
    return json.loads(capsys.readouterr().out.splitlines()[-1])


def test_a_kek_a_snapshot_needs_is_kept_until_retention_removes_the_snapshot(
    rotated, tmp_path, config, capsys, caplog
):
    lake, backup, path, old = rotated
    drop = ["keys", "drop", "--keyring", str(path), "--kek-id", old, "--lake", str(lake)]
    before = path.read_bytes()
    caplog.clear()
    assert main([*drop, "--backup", str(backup)]) == EXIT_ERROR
    refusal = _summary(capsys)["error"]
    assert f"1 of the 1 snapshots of {backup} still need {old}" in refusal
    assert f"oldest {BEFORE}-full, newest {BEFORE}-full" in refusal
    assert "its active KEK (keyring-binding.json)" in refusal
    assert "the data keys of 1 packs" in refusal and "restricted files" in refusal
    assert "retention" in refusal and "the keyring is unchanged" in refusal.lower()
    assert path.read_bytes() == before

    # A new full snapshot, and retention that keeps one snapshot a day: the old one goes.
    keyring = Keyring.from_bytes(path.read_bytes())
    take_snapshot(str(lake), str(backup), "full", keyring=keyring, config=config, now_label=AFTER)
    conf = tmp_path / "one-a-day.yaml"
    conf.write_text("snapshot:\n  keep_daily: 1\n  keep_weekly: 0\n")
    retention = ["retention", "--conf", str(conf), "--keyring", str(path), "--backup", str(backup)]
    assert main(retention) == 0
    assert _summary(capsys)["removed"] == [f"{BEFORE}-full"]

    assert main([*drop, "--backup", str(backup)]) == 0
    out = _summary(capsys)
    assert out["backups_checked"] == [str(backup)] and out["snapshots_read"] == 1
    assert out["kek_ids"] == [keyring.active_kek_id]
    assert Keyring.from_bytes(path.read_bytes()).kek_ids == [keyring.active_kek_id]
    # What is left opens with the keyring without the old KEK, its manifest authenticated.
    assert main(["verify", "--deep", "--keyring", str(path), "--backup", str(backup)]) == 0


def test_without_a_backup_the_drop_goes_on_and_warns(rotated, capsys, caplog):
    lake, backup, path, old = rotated
    caplog.clear()
    drop = ["keys", "drop", "--keyring", str(path), "--kek-id", old, "--lake", str(lake)]
    assert main(drop) == 0
    assert _summary(capsys)["backups_checked"] == []
    assert old not in Keyring.from_bytes(path.read_bytes()).kek_ids
    warnings = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
    assert any("no snapshot was checked" in w and old in w for w in warnings)
    # The snapshot the drop did not look at is what it put beyond reach.
    assert main(["verify", "--deep", "--keyring", str(path), "--backup", str(backup)]) != 0


@pytest.mark.hdfs
def test_a_backup_on_hdfs_is_checked_too(
    tmp_path, sc, config, keyring, hdfs_cluster, hdfs_root, monkeypatch, capsys
):
    namenodes = {hdfs_cluster.authority: hdfs_cluster.webhdfs_url}
    monkeypatch.setenv("DICOMLAKE_HDFS_NAMENODES", json.dumps(namenodes))
    backup = f"{hdfs_root}/backup"
    config = dataclasses.replace(config, hdfs=hdfs_cluster.hdfs_config)
    lake, path, old = _snapshot_then_rotate(tmp_path, sc, config, keyring, backup)
    before = path.read_bytes()
    drop = ["keys", "drop", "--keyring", str(path), "--kek-id", old, "--lake", str(lake)]
    assert main([*drop, "--backup", backup]) == EXIT_ERROR
    refusal = _summary(capsys)["error"]
    assert f"1 of the 1 snapshots of {backup} still need {old}" in refusal
    assert "the data keys of 1 packs" in refusal and "restricted files" in refusal
    assert path.read_bytes() == before
