"""What backup commands may touch: a snapshot id given names a committed snapshot and nothing
else; a restore writes only into its target, which is outside every backup and lake; a backup
is kept apart from its lake; a backup that is not there is said so. Real directories; every
refusal is checked to leave the disk as it was."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from functools import partial
from pathlib import Path

import pytest
from snapshot_helpers import blob, make_lake, tree, with_snapshot, write

from dicomlake.backup import apply_retention, list_snapshots, restore, take_snapshot, verify
from dicomlake.errors import BackupError
from dicomlake.keyring_file import save_keyring

REPO = Path(__file__).resolve().parents[2]
FULL = "20261101T010000Z-full"


def _disk(root: Path) -> dict[str, bytes | None]:
    """Every file (with its bytes) and directory under ``root``."""
    return {
        p.relative_to(root).as_posix(): p.read_bytes() if p.is_file() else None
        for p in root.rglob("*")
    }


def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(REPO / "lib")}
    return subprocess.run(
        [sys.executable, "-m", "dicomlake.cli", *args], capture_output=True, text=True, env=env
    )


@pytest.fixture
def cfg(config):
    return with_snapshot(config, lag_seconds=0.0)


@pytest.fixture
def keyring_file(tmp_path_factory, keyring, config) -> str:
    path = tmp_path_factory.mktemp("keys") / "keyring.json"
    save_keyring(str(path), keyring, config)
    return str(path)


@pytest.fixture
def lake(tmp_path) -> Path:
    make_lake(tmp_path / "lake")
    return tmp_path / "lake"


@pytest.fixture
def backup(tmp_path, lake, cfg, keyring) -> Path:
    take_snapshot(
        str(lake),
        str(tmp_path / "backup"),
        "full",
        keyring=keyring,
        config=cfg,
        now_label=FULL[:16],
    )
    return tmp_path / "backup"


# A directory beside the backup, and a manifest-shaped file next to it: an id climbing out of
# manifests/ would read that file and use the directory as the restore's work area.
ESCAPES = ["../../victim", "../manifests/" + FULL, "../" + FULL, FULL + "/..", "notes"]


@pytest.mark.parametrize("sid", ESCAPES)
def test_a_snapshot_id_that_is_no_committed_snapshot_is_refused_before_anything(
    tmp_path, backup, cfg, sid, keyring
):
    victim = tmp_path / "victim"
    write(victim, "precious.txt", b"precious")
    shutil.copy(backup / "manifests" / f"{FULL}.parquet", tmp_path / "victim.parquet")
    before = _disk(tmp_path)

    with pytest.raises(BackupError, match="bad snapshot id") as err:
        restore(str(backup), sid, str(tmp_path / "out"), keyring=keyring, config=cfg)
    assert repr(sid) in str(err.value)
    with pytest.raises(BackupError, match="bad snapshot id"):
        verify(str(backup), sid, keyring=keyring, config=cfg)
    assert _disk(tmp_path) == before


def test_the_restore_command_refuses_a_climbing_id_and_names_it(tmp_path, backup, keyring_file):
    write(tmp_path / "demo" / "victim", "precious.txt", b"precious")
    shutil.copy(backup / "manifests" / f"{FULL}.parquet", tmp_path / "demo" / "victim.parquet")
    before = _disk(tmp_path)
    proc = _cli(
        "restore",
        "--keyring",
        keyring_file,
        "--backup",
        str(backup),
        "--snapshot",
        "../../demo/victim",
        "--target",
        str(tmp_path / "out"),
    )
    assert proc.returncode == 1
    assert "bad snapshot id '../../demo/victim'" in proc.stderr
    assert _disk(tmp_path) == before


def test_a_well_formed_id_of_no_snapshot_lists_the_known_ones(tmp_path, backup, cfg, keyring):
    with pytest.raises(BackupError, match=f"no snapshot 20261102T010000Z-full in .*{FULL}"):
        restore(
            str(backup), "20261102T010000Z-full", str(tmp_path / "out"), keyring=keyring, config=cfg
        )
    assert not (tmp_path / "out").exists()


def test_a_restore_target_inside_a_backup_or_a_lake_is_refused(
    tmp_path, lake, backup, cfg, keyring
):
    other = tmp_path / "other-backup"
    take_snapshot(str(lake), str(other), "full", keyring=keyring, config=cfg, now_label=FULL[:16])
    (tmp_path / "link").symlink_to(lake)
    before = _disk(tmp_path)
    for target, where in [
        (backup / "manifests" / "x", f"the backup {backup}"),
        (backup / "objects" / "r", f"the backup {backup}"),
        (backup / "_tmp" / "zz", f"the backup {backup}"),
        (backup, f"the backup {backup}"),
        (tmp_path, f"the backup {backup}"),  # holds the backup
        (other / "x", f"the backup at {other}"),
        (lake / "restored", f"the lake at {lake}"),
        (tmp_path / "link" / "restored", f"the lake at {lake}"),  # the link's real place
        (lake, f"the lake at {lake}"),
    ]:
        with pytest.raises(BackupError, match="restore target") as err:
            restore(str(backup), FULL, str(target), keyring=keyring, config=cfg)
        assert where in str(err.value), target
    assert _disk(tmp_path) == before
    # Beside them all is fine, and the backup lists its one snapshot still.
    restore(str(backup), FULL, str(tmp_path / "restored"), keyring=keyring, config=cfg)
    assert tree(tmp_path / "restored") == tree(lake)
    assert [i.snapshot_id for i in list_snapshots(str(backup), config=cfg)] == [FULL]


def test_a_backup_and_its_lake_are_kept_apart(tmp_path, lake, cfg, keyring):
    (tmp_path / "link").symlink_to(lake)
    before = _disk(tmp_path)
    for backup in (lake / "backup", lake, tmp_path, tmp_path / "link" / "backup"):
        with pytest.raises(BackupError, match="overlap: keep the backup outside the lake"):
            take_snapshot(
                str(lake), str(backup), "full", keyring=keyring, config=cfg, now_label=FULL[:16]
            )
    assert _disk(tmp_path) == before


def test_stray_entries_in_manifests_are_no_snapshots(tmp_path, lake, backup, cfg, keyring):
    write(backup / "manifests" / "x", "tables/runs/r1.parquet", blob("run1"))
    write(backup / "manifests", "notes.parquet", b"not a manifest")
    write(backup / "manifests", "20261399T010000Z-full.parquet", b"no such month")
    assert [i.snapshot_id for i in list_snapshots(str(backup), config=cfg)] == [FULL]
    result = verify(str(backup), keyring=keyring, config=cfg)
    assert result.ok and result.snapshots == (FULL,)
    write(lake, "pixels/r2/new.pack", blob("new"))
    inc = take_snapshot(str(lake), str(backup), "incremental", keyring=keyring, config=cfg)
    assert inc.base == FULL
    assert apply_retention(str(backup), keyring=keyring, config=cfg).kept == (FULL, inc.snapshot_id)


def test_a_backup_whose_objects_are_a_file_is_no_backup(tmp_path, lake, backup, cfg, keyring):
    shutil.rmtree(backup / "objects")
    (backup / "objects").write_bytes(b"not a directory")
    before = _disk(tmp_path)
    for call in (
        partial(verify, str(backup), keyring=keyring),
        partial(restore, str(backup), FULL, str(tmp_path / "out"), keyring=keyring),
        partial(apply_retention, str(backup), keyring=keyring),
        partial(take_snapshot, str(lake), str(backup), "full", keyring=keyring),
    ):
        with pytest.raises(BackupError, match="no backup at .*objects"):
            call(config=cfg)
    assert _disk(tmp_path) == before


def test_commands_on_a_missing_backup_or_a_file_say_so_and_write_nothing(
    tmp_path, cfg, keyring, keyring_file
):
    (tmp_path / "a-file").write_bytes(b"x")
    (tmp_path / "empty").mkdir()
    before = _disk(tmp_path)
    out = str(tmp_path / "out")
    for missing in (tmp_path / "nx" / "bk", tmp_path / "a-file", tmp_path / "empty"):
        for call, *args in (
            (partial(verify, keyring=keyring), str(missing)),
            (partial(verify, keyring=keyring), str(missing), FULL),
            (list_snapshots, str(missing)),
            (partial(apply_retention, keyring=keyring), str(missing)),
            (partial(restore, keyring=keyring), str(missing), FULL, out),
        ):
            with pytest.raises(BackupError, match=f"no backup at {missing}"):
                call(*args, config=cfg)
    assert _disk(tmp_path) == before
    for command in (
        ["verify", "--keyring", keyring_file],
        ["snapshots"],
        ["retention", "--keyring", keyring_file],
    ):
        proc = _cli(*command, "--backup", str(tmp_path / "nx" / "bk"))
        assert proc.returncode == 1 and f"no backup at {tmp_path / 'nx' / 'bk'}" in proc.stderr
    assert _disk(tmp_path) == before


def test_a_snapshot_into_a_file_or_among_other_files_is_refused(tmp_path, lake, cfg, keyring):
    (tmp_path / "a-file").write_bytes(b"x")
    write(tmp_path / "busy", "notes.txt", b"mine")
    before = _disk(tmp_path)
    for place, what in [("a-file", "a file"), ("busy", "a directory of other files")]:
        with pytest.raises(BackupError, match=f"no backup at {tmp_path / place} and it is {what}"):
            take_snapshot(str(lake), str(tmp_path / place), "full", keyring=keyring, config=cfg)
    assert _disk(tmp_path) == before
    # An empty directory, or one a killed first snapshot left its lock and work area in, is new.
    write(tmp_path / "new", "_locks/r1.heartbeat", b"{}")
    (tmp_path / "new" / "_tmp" / "20261101T000000Z-full").mkdir(parents=True)
    snap = take_snapshot(str(lake), str(tmp_path / "new"), "full", keyring=keyring, config=cfg)
    assert snap.files == len(tree(lake))
