"""The commit protocol on the real HDFS: the run's files are published several at once, then each
table gets one Delta commit through the HDFS RPC client of ``deltalake``, the tables of a group
of ``delta.COMMIT_ORDER`` at once, ``runs`` once all the others have ended."""

from __future__ import annotations

import dataclasses
import io
import threading
import time
from datetime import datetime, timezone

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import requests
from deltalake import DeltaTable

from dicomlake.config import LockConfig
from dicomlake.errors import LakeError
from dicomlake.lake import schemas
from dicomlake.lake.commit import commit, recover, staged
from dicomlake.lake.layout import LakeLayout
from dicomlake.lake.lock import holding
from dicomlake.storage.hdfs import WebHdfsFileSystem
from dicomlake.storage.hdfs_user import one_user

pytestmark = pytest.mark.hdfs

NOW = datetime(2026, 1, 2, tzinfo=timezone.utc)
RETENTION_HOURS = 168.0


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
    "tables/errors/part-r1.parquet": _parquet(schemas.ERRORS, error_id="e-a"),
    "tables/runs/part-r1.parquet": _parquet(schemas.RUNS, run_id="r1"),
}


def _staged_run(fs: WebHdfsFileSystem, layout: LakeLayout) -> None:
    fs.run_all(
        (lambda rel=rel, data=data: fs.write_bytes(staged(layout, "r1", rel), data))
        for rel, data in FILES.items()
    )


def _recording_commits(
    monkeypatch, *, fails: str | None = None, together: tuple[str, ...] = ()
) -> list[tuple[str, float, float]]:
    """(table, start, end) of each Delta commit from now on; the commit of table ``fails``
    raises instead. The commits of the tables ``together`` each wait until all of them have
    begun (a commit never begun while another waits breaks the wait: BrokenBarrierError)."""
    commits: list[tuple[str, float, float]] = []
    real = DeltaTable.create_write_transaction
    barrier = threading.Barrier(len(together) or 1, timeout=20)

    def recording(table, *args, **kwargs):
        name = table.table_uri.rstrip("/").rsplit("/", 1)[-1]
        if name in together:
            barrier.wait()
        start = time.monotonic()
        if name == fails:
            raise OSError(f"{name}: the NameNode went away")
        real(table, *args, **kwargs)
        commits.append((name, start, time.monotonic()))

    monkeypatch.setattr(DeltaTable, "create_write_transaction", recording)
    return commits


def test_a_run_is_published_then_committed_table_by_table(hdfs_cluster, hdfs_root, monkeypatch):
    fs, layout = WebHdfsFileSystem(hdfs_cluster.hdfs_config), LakeLayout(f"{hdfs_root}/lake")
    _staged_run(fs, layout)
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
        commits = _recording_commits(monkeypatch, together=("frames", "errors"))
        commit(fs, layout, held, list(FILES), RETENTION_HOURS)
        monkeypatch.undo()  # the lock's own release is no part of the commit
    assert most > 1  # published several at once

    frames = DeltaTable(layout.table("frames")).to_pyarrow_table()
    assert sorted(frames["frame_number"].to_pylist()) == list(range(12))
    errors = DeltaTable(layout.table("errors")).to_pyarrow_table()
    assert errors["error_id"].to_pylist() == ["e-a"]
    assert DeltaTable(layout.table("runs")).to_pyarrow_table()["run_id"].to_pylist() == ["r1"]

    # frames and errors, one group, are committed at once (each commit waits on the NameNode
    # for the file it writes: their commits met at the barrier), runs once both have ended
    (errors_commit, frames_commit), runs_commit = sorted(commits[:2]), commits[2]
    assert [errors_commit[0], frames_commit[0], runs_commit[0]] == ["errors", "frames", "runs"]
    assert runs_commit[1] >= max(errors_commit[2], frames_commit[2])
    assert not fs.exists(layout.staging("r1"))
    assert fs.read(layout.absolute("pixels/r1/p.pack")) == b"sealed"


def _owners(cluster, uri: str) -> dict[str, str]:
    """{name: owner} of the entries of directory ``uri``, by WebHDFS LISTSTATUS."""
    path = "/" + uri.split("://", 1)[1].split("/", 1)[1]
    resp = requests.get(
        f"{cluster.webhdfs_url}/webhdfs/v1{path}", params={"op": "LISTSTATUS"}, timeout=30
    )
    resp.raise_for_status()
    return {st["pathSuffix"]: st["owner"] for st in resp.json()["FileStatuses"]["FileStatus"]}


@pytest.mark.parametrize("named_by", ["hdfs.user", "HADOOP_USER_NAME"])
def test_the_delta_logs_and_the_other_files_belong_to_one_user(
    hdfs_cluster, hdfs_root, monkeypatch, named_by
):
    # deltalake's client writes the logs; WebHDFS the rest. The dev cluster checks no
    # permission, but it records each file's owner.
    user = "dicomlake-svc"
    monkeypatch.setenv("HADOOP_USER_NAME", "")  # so that the undo removes what is set below
    monkeypatch.delenv("HADOOP_USER_NAME")
    if named_by == "hdfs.user":
        config = dataclasses.replace(hdfs_cluster.hdfs_config, user=user)
    else:
        monkeypatch.setenv("HADOOP_USER_NAME", user)
        config = hdfs_cluster.hdfs_config
    config = one_user(config)
    fs, layout = WebHdfsFileSystem(config), LakeLayout(f"{hdfs_root}/lake")
    _staged_run(fs, layout)
    with holding(fs, layout.root, "r1", "test", LockConfig()) as held:
        commit(fs, layout, held, list(FILES), RETENTION_HOURS)

    assert set(_owners(hdfs_cluster, layout.absolute("pixels/r1")).values()) == {user}
    for table in ("frames", "errors", "runs"):
        logs = _owners(hdfs_cluster, f"{layout.table(table)}/_delta_log")
        assert logs and set(logs.values()) == {user}, (table, logs)


def test_a_table_commit_that_fails_leaves_runs_behind_and_the_next_run_finishes_it(
    hdfs_cluster, hdfs_root, monkeypatch
):
    fs, layout = WebHdfsFileSystem(hdfs_cluster.hdfs_config), LakeLayout(f"{hdfs_root}/lake")
    _staged_run(fs, layout)
    with holding(fs, layout.root, "r1", "test", LockConfig()) as held:
        commits = _recording_commits(monkeypatch, fails="frames", together=("frames", "errors"))
        with pytest.raises(LakeError, match="frames: the commit of run r1 failed .*went away"):
            commit(fs, layout, held, list(FILES), RETENTION_HOURS)
        monkeypatch.undo()
    assert [name for name, *_ in commits] == ["errors"]  # committed beside the failed one
    assert DeltaTable(layout.table("runs")).version() == 0  # created, never committed to
    assert DeltaTable(layout.table("frames")).version() == 0

    with holding(fs, layout.root, "r2", "test", LockConfig()) as held:
        assert recover(fs, layout, held) == (["r1"], [])
    frames = DeltaTable(layout.table("frames")).to_pyarrow_table()
    assert sorted(frames["frame_number"].to_pylist()) == list(range(12))
    assert DeltaTable(layout.table("errors")).version() == 1  # not committed twice
    assert DeltaTable(layout.table("runs")).to_pyarrow_table()["run_id"].to_pylist() == ["r1"]
