"""Files over ingest.stream_bytes are streamed: a file that changes between its two readings
is rejected whole, and a 1 GB file is ingested and exported in a fraction of its size in memory.

(The sample corpus ingested with a tiny ``stream_bytes`` is in test_ingest_local.py.)
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import os
import shutil
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from ingest_helpers import ingest_command, table, with_paths
from pydicom.data import get_testdata_file

import dicomlake.ingest.worker as worker
from dicomlake.config import load_config
from dicomlake.crypto.keyring import Keyring
from dicomlake.errors import StorageError
from dicomlake.ingest.worker import TaskContext, process_task
from dicomlake.keyring_file import save_keyring
from dicomlake.lake.commit import staged
from dicomlake.lake.layout import LakeLayout
from dicomlake.lake.restricted import read_rows
from dicomlake.storage import FileInfo, ReadStream, filesystem_for
from dicomlake.storage.local import LocalFileSystem
from ingest_bench import MemoryPeak
from synth_landing import build_huge_file

MiB = 1 << 20


class _ChangesOnceRead(LocalFileSystem):
    """A landing filesystem on which one file changes once it has been read to its end (the
    first reading of a streamed file, which hashes it, reads it as one stream)."""

    def __init__(self, victim: str, change: Callable[[Path], None]) -> None:
        super().__init__(beneath=str(Path(victim).parent))
        self.victim, self.change = victim, change
        self.changed = False

    @contextlib.contextmanager
    def open_read(self, path: str, offset: int = 0) -> Iterator[ReadStream]:
        with super().open_read(path, offset) as stream:
            yield _EndWatched(stream, lambda: self._ended(path))

    def _ended(self, path: str) -> None:
        if path == self.victim and not self.changed:
            self.change(Path(path))
            self.changed = True


class _EndWatched:
    """A stream that calls ``at_end`` when a read finds its end."""

    def __init__(self, stream: ReadStream, at_end: Callable[[], None]) -> None:
        self._stream, self._at_end = stream, at_end

    def read(self, size: int = -1) -> bytes:
        data = self._stream.read(size)
        if not data:
            self._at_end()
        return data


class _BreaksOnceRead(_ChangesOnceRead):
    """A landing filesystem on which one file, once read to its end, can be read again only in
    part: the next stream fails after 1000 bytes, as a disk or a DataNode gone mid-read."""

    def __init__(self, victim: str) -> None:
        super().__init__(victim, lambda path: None)

    @contextlib.contextmanager
    def open_read(self, path: str, offset: int = 0) -> Iterator[ReadStream]:
        with super().open_read(path, offset) as stream:
            yield _BreaksAfter(stream, 1000) if self.changed and path == self.victim else stream


class _BreaksAfter:
    """A stream that gives ``good`` bytes, then fails as `ReadStream` says a failed read does."""

    def __init__(self, stream: ReadStream, good: int) -> None:
        self._stream, self._left = stream, good

    def read(self, size: int = -1) -> bytes:
        if not self._left:
            raise StorageError("cannot read: the stream broke off")
        data = self._stream.read(self._left if size < 0 else min(size, self._left))
        self._left -= len(data)
        return data


def _flip_a_pixel_byte(path: Path) -> None:
    content = bytearray(path.read_bytes())
    content[-1000] ^= 0xFF  # CT_small's frame ends 138 bytes before the file does
    path.write_bytes(bytes(content))


@pytest.mark.parametrize(
    ("landing_of", "reason", "outcome"),
    [
        (
            lambda victim: _ChangesOnceRead(victim, _flip_a_pixel_byte),
            "changed_while_reading",
            "quarantined",
        ),
        # "failed" is tried again by the next run
        (lambda victim: _ChangesOnceRead(victim, Path.unlink), "unreadable", "failed"),
        (_BreaksOnceRead, "unreadable", "failed"),
    ],
    ids=["changed", "deleted", "broken-mid-read"],
)
def test_a_file_changed_between_its_readings_keeps_no_row(
    tmp_path, config, keyring, monkeypatch, landing_of, reason, outcome
):
    landing, lake = tmp_path / "landing", tmp_path / "lake"
    landing.mkdir()
    files = {}
    for name in ("CT_small.dcm", "MR_small.dcm"):
        target = landing / name
        target.write_bytes(Path(get_testdata_file(name)).read_bytes())
        files[name] = FileInfo(str(target), target.stat().st_size, 1_700_000_000_000)
    changing = landing_of(str(landing / "CT_small.dcm"))
    monkeypatch.setattr(
        worker,
        "filesystem_for",
        lambda uri, hdfs, **how: changing if uri == str(landing) else filesystem_for(uri, hdfs),
    )
    streamed = dataclasses.replace(
        config, ingest=dataclasses.replace(config.ingest, stream_bytes=1000)
    )
    # The header is split in 4 KiB reads before the file is hashed; the frame, past those, is
    # read after the hash, from the file as it then is
    monkeypatch.setattr(worker, "READ_BLOCK", 4096)
    ctx = TaskContext("r1", str(lake), streamed, keyring.to_bytes(), 1_700_000_000_000)
    result = process_task(0, 0, list(files.values()), str(landing), ctx, frozenset())

    assert changing.changed
    paths = [f.path for f in files.values()]
    errors = with_paths(result.errors, keyring, paths)
    assert [(e["source_path"], e["reason"]) for e in errors] == [
        (files["CT_small.dcm"].path, reason)
    ]
    outcomes = {s["source_path"]: s["outcome"] for s in with_paths(result.sources, keyring, paths)}
    assert outcomes == {files["CT_small.dcm"].path: outcome, files["MR_small.dcm"].path: "ingested"}
    mr_sha = hashlib.sha256(Path(files["MR_small.dcm"].path).read_bytes()).hexdigest()
    layout = LakeLayout(str(lake))
    ids = {}
    for relative in result.staged:
        uri = staged(layout, "r1", relative)
        if relative.startswith("restricted/identities/"):
            rows = read_rows(LocalFileSystem(), [uri], "identities", keyring)
        elif relative.startswith("tables/"):
            rows = pq.read_table(uri)
        else:
            continue
        ids[relative.split("/")[1]] = set(rows.column("instance_id").to_pylist())
    # The changed file's chunks stay in the pack, but no row of any table names them
    assert ids == {name: {mr_sha} for name in ("instances", "frames", "elements", "identities")}


class _CountedReads(LocalFileSystem):
    """The local filesystem, counting its ranged reads and the streams it opens (on HDFS each
    of either is two HTTP round trips and a new DataNode stream), and the most open at once."""

    reads = opened = open_now = most_open = 0

    def read(self, path: str, offset: int = 0, length: int | None = None) -> bytes:
        self.reads += 1
        return super().read(path, offset, length)

    @contextlib.contextmanager
    def open_read(self, path: str, offset: int = 0) -> Iterator[ReadStream]:
        self.opened += 1
        self.open_now += 1
        self.most_open = max(self.most_open, self.open_now)
        try:
            with super().open_read(path, offset) as stream:
                yield stream
        finally:
            self.open_now -= 1


def test_a_streamed_file_is_read_as_a_few_streams_not_block_by_block(
    tmp_path, config, keyring, monkeypatch
):
    landing = tmp_path / "landing"
    landing.mkdir()
    target = landing / "ct.dcm"
    built = build_huge_file(target, 32 * MiB)  # 64 frames of 512 KB
    counted = _CountedReads()
    monkeypatch.setattr(
        worker,
        "filesystem_for",
        lambda uri, hdfs, **how: counted if uri == str(landing) else filesystem_for(uri, hdfs),
    )
    streamed = dataclasses.replace(
        config, ingest=dataclasses.replace(config.ingest, stream_bytes=MiB)
    )
    ctx = TaskContext("r1", str(tmp_path / "lake"), streamed, keyring.to_bytes(), 0)
    info = FileInfo(str(target), built.bytes, 1_700_000_000_000)
    result = process_task(0, 0, [info], str(landing), ctx, frozenset())

    assert [s["outcome"] for s in result.sources] == ["ingested"]
    assert -(-built.bytes // worker.READ_BLOCK) >= 4  # blocks the split would read one by one
    # Its header split from one stream, closed while the file is hashed from a second (an idle
    # DataNode stream may time out during a long hash); the frames read on from a third
    assert (counted.reads, counted.opened, counted.most_open) == (0, 3, 1)


def _run(command: list[str], env: dict[str, str]) -> tuple[subprocess.CompletedProcess, MemoryPeak]:
    """Run a command; its result and the peak memory of its process tree, sampled."""
    memory = MemoryPeak()
    child = subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    watcher = memory.watch(child.pid, interval=0.05)
    out, err = child.communicate(timeout=300)
    memory.stop()
    watcher.join()
    return subprocess.CompletedProcess(
        command, child.returncode, out.decode(), err.decode()
    ), memory


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(8 * MiB):
            digest.update(block)
    return digest.hexdigest()


@pytest.mark.spark
@pytest.mark.slow
def test_a_1_gb_file_is_ingested_and_exported_in_bounded_memory(tmp_path):
    landing, lake, out = tmp_path / "landing", tmp_path / "lake", tmp_path / "out"
    try:
        huge = build_huge_file(landing / "huge.dcm", 1_000_000_000)
        original = _sha256(landing / "huge.dcm")
        keyring = tmp_path / "keyring.json"
        save_keyring(str(keyring), Keyring.generate(), load_config(env={}))
        # Default config (the file is over stream_bytes), but for smaller packs and one core
        env = {k: v for k, v in os.environ.items() if not k.startswith("DICOMLAKE_")}
        env.update(DICOMLAKE_SPARK_MASTER="local[1]", DICOMLAKE_PIXELS_PACK_BYTES=str(64 * MiB))
        ingest, ingest_memory = _run(ingest_command(landing, lake, keyring), env)
        assert ingest.returncode == 0, ingest.stderr
        # The Python workers (the daemon and the one that ingested) never hold the file
        assert ingest_memory.workers < 0.4 * huge.bytes, ingest_memory.as_dict()
        summary = json.loads(ingest.stdout.strip().splitlines()[-1])
        assert (summary["ingested"], summary["bytes_read"]) == (1, huge.bytes)
        assert summary["packs_written"] > 1

        sop = table(lake, "instances").column("SOPInstanceUID")[0].as_py()
        export = [sys.executable, "-m", "dicomlake.cli", "export", "--lake", str(lake)]
        export += ["--sop", sop, "--out", str(out), "--keyring", str(keyring)]
        exported, export_memory = _run(export, env)
        assert exported.returncode == 0, exported.stderr
        assert _sha256(out / f"{sop}.dcm") == original
        assert export_memory.tree < 0.4 * huge.bytes, export_memory.as_dict()
    finally:  # GBs that pytest would otherwise keep with its last temporary directories
        for path in (landing, lake, out):
            shutil.rmtree(path, ignore_errors=True)
