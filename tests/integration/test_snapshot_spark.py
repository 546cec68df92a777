"""The distributed copy: executors of a local[2] session copy the objects themselves."""

from __future__ import annotations

import hashlib
from functools import partial

import pytest
from snapshot_helpers import T0, blob, make_lake, objects, tree, write

from dicomlake.backup import restore, take_snapshot, verify


@pytest.mark.spark
def test_snapshot_copies_on_executors(tmp_path, config, sc, keyring):
    lake, backup = tmp_path / "lake", tmp_path / "backup"
    make_lake(lake)
    write(lake, "quarantine/r5/dup.dcm", blob("pack-a", 50_000), T0 + 40)  # same as a pack
    take = partial(take_snapshot, str(lake), str(backup), keyring=keyring, config=config, sc=sc)
    full = take("full", now_label="20261101T010000Z")
    expected = tree(lake)
    assert objects(backup) == set(expected.values())
    assert full.objects_copied == len(set(expected.values()))
    assert full.objects_reused == 1  # the duplicate lost the publish race or came second

    for n in range(6):
        write(lake, f"pixels/r6/pack-{n}.pack", blob(f"r6-{n}", 20_000 + n), T0 + 600 + n)
    inc = take("incremental", now_label="20261102T010000Z")
    new = {hashlib.sha256(blob(f"r6-{n}", 20_000 + n)).hexdigest() for n in range(6)}
    assert inc.new == 6 and inc.objects_copied == 6
    assert objects(backup) == set(expected.values()) | new
    restore(str(backup), inc.snapshot_id, str(tmp_path / "r"), keyring=keyring, config=config)
    assert tree(tmp_path / "r") == tree(lake)
    assert verify(str(backup), keyring=keyring, config=config).ok
