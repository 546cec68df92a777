"""Snapshots of a lake on a real HDFS into a backup on HDFS, restored to a local directory."""

from __future__ import annotations

import dataclasses
import hashlib

import pytest
from snapshot_helpers import blob, tree

from dicomlake.backup import restore, take_snapshot, verify
from dicomlake.config import SnapshotConfig
from dicomlake.storage.hdfs import WebHdfsFileSystem

FILES = {
    "tables/instances/Modality=CT/study_year=2020/part-0.parquet": blob("i", 5000),
    "pixels/r1/pack-a.pack": blob("a", 300_000),
    "quarantine/r1/dup.dcm": blob("a", 300_000),
    "tables/runs/r1.parquet": blob("r1"),
}


@pytest.mark.hdfs
def test_full_incremental_restore_on_hdfs(tmp_path, config, hdfs_cluster, hdfs_root, keyring):
    cfg = dataclasses.replace(
        config, hdfs=hdfs_cluster.hdfs_config, snapshot=SnapshotConfig(lag_seconds=0.0)
    )
    fs = WebHdfsFileSystem(hdfs_cluster.hdfs_config)
    lake, backup = f"{hdfs_root}/lake", f"{hdfs_root}/backup"
    for rel, data in FILES.items():
        fs.write_bytes(f"{lake}/{rel}", data)
    fs.write_bytes(f"{lake}/_staging/r2/pixels/r2/x.pack", b"in progress")
    fs.write_bytes(f"{lake}/pixels/r2/y.pack._COPYING_", b"being put")

    full = take_snapshot(
        lake, backup, "full", keyring=keyring, config=cfg, now_label="20261101T010000Z"
    )
    assert (full.files, full.objects_copied, full.objects_reused) == (4, 3, 1)
    assert full.source == "live" and full.excluded == 2
    fs.write_bytes(f"{lake}/pixels/r2/pack-b.pack", blob("b", 200_000))
    fs.delete(f"{lake}/tables/runs/r1.parquet")
    inc = take_snapshot(
        lake, backup, "incremental", keyring=keyring, config=cfg, now_label="20261102T010000Z"
    )
    assert (inc.new, inc.objects_copied, inc.deleted) == (1, 1, 1)

    expected = {rel: hashlib.sha256(d).hexdigest() for rel, d in FILES.items()}
    restore(backup, full.snapshot_id, str(tmp_path / "r-full"), keyring=keyring, config=cfg)
    assert tree(tmp_path / "r-full") == expected
    del expected["tables/runs/r1.parquet"]
    expected["pixels/r2/pack-b.pack"] = hashlib.sha256(blob("b", 200_000)).hexdigest()
    restore(backup, inc.snapshot_id, str(tmp_path / "r-inc"), keyring=keyring, config=cfg)
    assert tree(tmp_path / "r-inc") == expected
    assert verify(backup, keyring=keyring, config=cfg).ok


@pytest.mark.hdfs
def test_snapshottable_lake_is_copied_from_an_hdfs_snapshot(
    tmp_path, config, hdfs_cluster, hdfs_root, keyring
):
    cfg = dataclasses.replace(
        config, hdfs=hdfs_cluster.hdfs_config, snapshot=SnapshotConfig(lag_seconds=0.0)
    )
    fs = WebHdfsFileSystem(hdfs_cluster.hdfs_config)
    lake, backup = f"{hdfs_root}/lake", f"{hdfs_root}/backup"
    for rel, data in FILES.items():
        fs.write_bytes(f"{lake}/{rel}", data)
    lake_dir = lake.split("//", 1)[1].split("/", 1)[1]
    fs.client(lake).allow_snapshot("/" + lake_dir)  # what an HDFS administrator does once
    try:
        snap = take_snapshot(
            lake, backup, "full", keyring=keyring, config=cfg, now_label="20261101T010000Z"
        )
        assert snap.source == "hdfs-snapshot"
        # The HDFS snapshot is dropped once the copy is done.
        assert fs.list_dirs(f"{lake}/.snapshot") == []
    finally:
        fs.client(lake).disallow_snapshot("/" + lake_dir)
    restore(backup, snap.snapshot_id, str(tmp_path / "r"), keyring=keyring, config=cfg)
    assert tree(tmp_path / "r") == {rel: hashlib.sha256(d).hexdigest() for rel, d in FILES.items()}
