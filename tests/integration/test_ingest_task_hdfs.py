"""One ingest task with landing zone and lake on the real HDFS: the landing files are read
ahead and the table fragments written several at once, and the task's output is what a task on
the local filesystem writes, a file gone after listing included; so it is when every file is
streamed (hashed from one WebHDFS stream, split from another opened at the offsets it needs)."""

from __future__ import annotations

import dataclasses
import threading
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from ingest_helpers import with_paths
from pydicom.data import get_testdata_file

import dicomlake.ingest.worker as worker
from dicomlake.ingest.worker import TaskContext, process_task
from dicomlake.lake.commit import staged
from dicomlake.lake.layout import LakeLayout
from dicomlake.lake.parquet import write_table
from dicomlake.storage import filesystem_for
from dicomlake.storage.hdfs import WebHdfsFileSystem

pytestmark = pytest.mark.hdfs

# Six Modality/year partitions, so the task writes several instances fragments
FILES = [
    "CT_small.dcm",
    "MR_small.dcm",
    "emri_small.dcm",
    "rtdose.dcm",
    "SC_rgb.dcm",
    "OBXXXX1A.dcm",
    "JPEG2000.dcm",
]
GONE = "gone.dcm"  # read ahead on HDFS, so its failed read must still land on it alone


class _InFlight:
    """`write_table`, counting how many calls run at once."""

    def __init__(self) -> None:
        self.now = self.most = 0
        self._lock = threading.Lock()

    def __call__(self, *args, **kwargs) -> None:
        with self._lock:
            self.now += 1
            self.most = max(self.most, self.now)
        try:
            write_table(*args, **kwargs)
        finally:
            with self._lock:
                self.now -= 1


def _task_output(landing: str, lake: str, config, keyring) -> dict[str, list]:
    hdfs = config.hdfs
    landing_fs = filesystem_for(landing, hdfs)
    files = sorted(landing_fs.list_files(landing), key=lambda f: f.path)
    landing_fs.delete(f"{landing}/{GONE}")  # listed, then deleted before the task reads it
    ctx = TaskContext("r1", lake, config, keyring.to_bytes(), 1_700_000_000_000)
    result = process_task(0, 0, files, landing, ctx, frozenset())
    fs = filesystem_for(lake, hdfs)
    out: dict[str, list] = {
        "outcomes": sorted(s["outcome"] for s in result.sources),
        "errors": [
            (e["source_path"].rsplit("/", 1)[1], e["reason"])
            for e in with_paths(result.errors, keyring, [f.path for f in files])
        ],
    }
    for relative in result.staged:
        if relative.startswith("tables/"):
            uri = staged(LakeLayout(lake), "r1", relative)
            data = pa.BufferReader(fs.read(uri))
            ids = pq.read_table(data, columns=["instance_id"]).column(0).to_pylist()
            key = "/".join(relative.split("/")[1:-1])  # table and partition
            out.setdefault(key, []).extend(ids)
    return {k: sorted(v) for k, v in out.items()}


@pytest.mark.parametrize("stream_bytes", [None, 1000], ids=["held-whole", "streamed"])
def test_a_task_on_hdfs_writes_what_a_local_task_writes(
    tmp_path, hdfs_cluster, hdfs_root, config, keyring, monkeypatch, stream_bytes
) -> None:
    config = dataclasses.replace(config, hdfs=hdfs_cluster.hdfs_config)
    if stream_bytes is not None:  # a streamed file's instance id is the hash of its first
        # reading; a split that read other bytes would be changed_while_reading, not ingested
        ingest = dataclasses.replace(config.ingest, stream_bytes=stream_bytes)
        config = dataclasses.replace(config, ingest=ingest)
        assert all(Path(get_testdata_file(name)).stat().st_size > stream_bytes for name in FILES)
    local_landing = tmp_path / "landing"
    local_landing.mkdir()
    fs = WebHdfsFileSystem(hdfs_cluster.hdfs_config)
    for name in [*FILES, GONE]:
        data = Path(get_testdata_file("MR_small.dcm" if name == GONE else name)).read_bytes()
        (local_landing / name).write_bytes(data)
        fs.write_bytes(f"{hdfs_root}/landing/{name}", data)
    expected = _task_output(str(local_landing), str(tmp_path / "lake"), config, keyring)

    in_flight = _InFlight()
    monkeypatch.setattr(worker, "write_table", in_flight)
    got = _task_output(f"{hdfs_root}/landing", f"{hdfs_root}/lake", config, keyring)

    assert got == expected
    assert expected["outcomes"] == ["failed"] + ["ingested"] * len(FILES)
    assert expected["errors"] == [(GONE, "unreadable")]
    assert len([k for k in expected if k.startswith("instances/")]) >= 5
    assert in_flight.most > 1  # fragments written several at once to the remote lake
