"""A snapshot killed midway (SIGKILL of a real process) leaves nothing a restore would use."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import pytest
from snapshot_helpers import T0, make_lake, objects, save, tree, write

from dicomlake.backup import apply_retention, list_snapshots, restore, take_snapshot, verify
from dicomlake.keyring_file import save_keyring

FILES = 1500
SCRIPT = """
import sys
from dicomlake.backup import take_snapshot
from dicomlake.config import load_config
from dicomlake.keyring_file import load_keyring
config = load_config(env={})
take_snapshot(sys.argv[1], sys.argv[2], "incremental", config=config,
              keyring=load_keyring(sys.argv[4], config), now_label=sys.argv[3])
"""


@pytest.mark.slow
def test_killed_snapshot_keeps_the_previous_one_and_the_next_run_completes(
    tmp_path, quick_lock_config, keyring
):
    config = quick_lock_config
    lake, backup = tmp_path / "lake", tmp_path / "backup"
    make_lake(lake)
    full = take_snapshot(
        str(lake), str(backup), "full", keyring=keyring, config=config, now_label="20261101T010000Z"
    )
    saved_full = save(lake, tmp_path / "saved-full")
    for n in range(FILES):
        write(lake, f"pixels/big/pack-{n:05d}.pack", os.urandom(64 * 1024), T0 + 1000 + n)
    before = objects(backup)
    keyring_file = tmp_path / "keyring.json"
    save_keyring(str(keyring_file), keyring, config)

    proc = subprocess.Popen(
        [
            sys.executable,
            "-c",
            SCRIPT,
            str(lake),
            str(backup),
            "20261102T010000Z",
            str(keyring_file),
        ]
    )
    deadline = time.monotonic() + 60
    while len(objects(backup) - before) < 20 and time.monotonic() < deadline:
        time.sleep(0.005)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    time.sleep(config.lock.stale_seconds + 0.5)  # the killed run's lock goes stale
    copied_by_killed = objects(backup) - before
    assert 20 <= len(copied_by_killed) < FILES, "the kill must land mid-copy"
    assert not (backup / "manifests" / "20261102T010000Z-incremental.parquet").exists()

    assert [i.snapshot_id for i in list_snapshots(str(backup), config=config)] == [full.snapshot_id]
    restore(str(backup), full.snapshot_id, str(tmp_path / "r-full"), keyring=keyring, config=config)
    assert tree(tmp_path / "r-full") == tree(saved_full)
    assert verify(str(backup), keyring=keyring, config=config).ok
    # The killed run's objects are in no manifest; retention must not collect them yet.
    kept = apply_retention(str(backup), keyring=keyring, config=config, today=full.created.date())
    assert kept.gc_skipped and copied_by_killed <= objects(backup)

    places = str(lake), str(backup)
    again = take_snapshot(
        *places, "incremental", keyring=keyring, config=config, now_label="20261102T020000Z"
    )
    assert again.new == FILES
    assert again.objects_copied == FILES - len(copied_by_killed)
    assert again.objects_reused >= len(copied_by_killed)
    assert not list((backup / "_tmp").iterdir())  # the killed run's work area is gone
    restore(
        str(backup), again.snapshot_id, str(tmp_path / "r-again"), keyring=keyring, config=config
    )
    assert tree(tmp_path / "r-again") == tree(lake)
