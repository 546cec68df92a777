"""The commit protocol on the real HDFS, where the run's files are published several at once:
the runs record, which makes the run visible to readers, must still come last."""

from __future__ import annotations

import threading
import time

import pytest

from dicomlake.config import LockConfig
from dicomlake.lake.commit import commit, staged
from dicomlake.lake.layout import LakeLayout
from dicomlake.lake.lock import holding
from dicomlake.storage.hdfs import WebHdfsFileSystem

pytestmark = pytest.mark.hdfs

FILES = [
    *(f"tables/instances/Modality=CT/study_year={2000 + i}/part-r1.parquet" for i in range(12)),
    "pixels/r1/p.pack",
    "tables/sources/part-r1.parquet",
    "tables/runs/part-r1.parquet",
]


def test_runs_record_is_published_after_every_other_file(hdfs_cluster, hdfs_root, monkeypatch):
    fs, layout = WebHdfsFileSystem(hdfs_cluster.hdfs_config), LakeLayout(f"{hdfs_root}/lake")
    fs.run_all(
        (lambda rel=rel: fs.write_bytes(staged(layout, "r1", rel), rel.encode())) for rel in FILES
    )
    finished: list[str] = []
    in_flight = most = 0
    lock = threading.Lock()
    publish = fs.publish

    def recording_publish(src: str, dst: str) -> None:
        nonlocal in_flight, most
        with lock:
            in_flight += 1
            most = max(most, in_flight)
        if not dst.endswith("/runs/part-r1.parquet"):
            time.sleep(0.3)  # the others slow: a runs record published among them ends first
        publish(src, dst)
        with lock:
            in_flight -= 1
            finished.append(dst[len(f"{hdfs_root}/lake/") :])

    with holding(fs, layout.root, "r1", "test", LockConfig()) as held:
        monkeypatch.setattr(fs, "publish", recording_publish)
        commit(fs, layout, held, FILES)
        monkeypatch.undo()  # the lock's own release is no part of the commit

    assert finished[0] == "_commits/r1.json"  # the commit point, then the run's files
    assert sorted(finished[1:]) == sorted(FILES)
    assert finished[-1] == "tables/runs/part-r1.parquet"
    assert most > 1  # the others were published several at once
    for rel in FILES:
        assert fs.read(layout.absolute(rel)) == rel.encode()
    assert not fs.exists(layout.staging("r1"))
