"""Snapshots are an optional capability of the FileSystem interface: a filesystem without
them takes none (the caller reads live) and has none to drop. HDFS's own are tested against
real daemons in tests/integration/test_snapshot_hdfs.py."""

from __future__ import annotations

import pytest

from dicomlake.errors import StorageError
from dicomlake.storage.local import LocalFileSystem


def test_a_local_filesystem_takes_no_snapshot(tmp_path):
    (tmp_path / "lake").mkdir()
    fs = LocalFileSystem()
    assert fs.create_snapshot(str(tmp_path / "lake"), "dicomlake-s1") is None
    assert [p.name for p in tmp_path.iterdir()] == ["lake"]  # nothing made beside it
    with pytest.raises(StorageError, match="dicomlake-s1"):
        fs.delete_snapshot(str(tmp_path / "lake"), "dicomlake-s1")
