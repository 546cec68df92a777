"""The commit protocol on the real HDFS: the run's files are published several at once, then each
table gets one Delta commit through the HDFS RPC client of ``deltalake``, ``runs`` last."""

from __future__ import annotations

import io
import json
import threading
import time
from datetime import datetime, timezone

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from deltalake import DeltaTable

from dicomlake.config import LockConfig
from dicomlake.lake import schemas
from dicomlake.lake.commit import commit, staged
from dicomlake.lake.layout import LakeLayout
from dicomlake.lake.lock import holding
from dicomlake.storage.hdfs import WebHdfsFileSystem

pytestmark = pytest.mark.hdfs

NOW = datetime(2026, 1, 2, tzinfo=timezone.utc)


def _parquet(schema: pa.Schema, **values) -> bytes:
    row = {f.name: values.get(f.name, _filler(f.type)) for f in schema}
    sink = io.BytesIO()
    pq.write_table(pa.Table.from_pylist([row], schema=schema), sink)
    return sink.getvalue()


def _filler(kind: pa.DataType):
    if pa.types.is_timestamp(kind):
        return NOW
    return 0 if pa.types.is_integer(kind) else "x"


FRAMES = [f"tables/frames/part-r1-t{i:05d}.parquet" for i in range(12)]
FILES = {
    **{rel: _parquet(schemas.FRAMES, frame_number=i) for i, rel in enumerate(FRAMES)},
    "pixels/r1/p.pack": b"sealed",
    "tables/sources/part-r1.parquet": _parquet(schemas.SOURCES, source_path_id="id-a"),
    "tables/runs/part-r1.parquet": _parquet(schemas.RUNS, run_id="r1"),
}


def test_a_run_is_published_then_committed_table_by_table(hdfs_cluster, hdfs_root, monkeypatch):
    fs, layout = WebHdfsFileSystem(hdfs_cluster.hdfs_config), LakeLayout(f"{hdfs_root}/lake")
    fs.run_all(
        (lambda rel=rel, data=data: fs.write_bytes(staged(layout, "r1", rel), data))
        for rel, data in FILES.items()
    )
    in_flight = most = 0
    lock = threading.Lock()
    publish = fs.publish

    def recording_publish(src: str, dst: str) -> None:
        nonlocal in_flight, most
        with lock:
            in_flight += 1
            most = max(most, in_flight)
        time.sleep(0.1)
        publish(src, dst)
        with lock:
            in_flight -= 1

    with holding(fs, layout.root, "r1", "test", LockConfig()) as held:
        monkeypatch.setattr(fs, "publish", recording_publish)
        commit(fs, layout, held, list(FILES))
        monkeypatch.undo()  # the lock's own release is no part of the commit
    assert most > 1  # published several at once

    frames = DeltaTable(layout.table("frames")).to_pyarrow_table()
    assert sorted(frames["frame_number"].to_pylist()) == list(range(12))
    sources = DeltaTable(layout.table("sources")).to_pyarrow_table()
    assert sources["source_path_id"].to_pylist() == ["id-a"]
    assert DeltaTable(layout.table("runs")).to_pyarrow_table()["run_id"].to_pylist() == ["r1"]

    # The runs table is committed after every other table of the run.
    def committed_at(name: str) -> int:
        entry = fs.read(f"{layout.table(name)}/_delta_log/{1:020d}.json").decode()
        return next(
            json.loads(line)["commitInfo"]["timestamp"]
            for line in entry.splitlines()
            if "commitInfo" in line
        )

    assert committed_at("runs") >= max(committed_at("frames"), committed_at("sources"))
    assert not fs.exists(layout.staging("r1"))
    assert fs.read(layout.absolute("pixels/r1/p.pack")) == b"sealed"
