"""A file's chunks are encoded a group at a time (`worker.HELD_BYTES` of them), then sealed:
whatever the groups, every chunk goes into the pack in order and opens to the file's own bytes.
The chunks of a file not held are encoded on ``pixels.encode_threads`` threads at once.
"""

from __future__ import annotations

import dataclasses
import threading
import time
from pathlib import Path

import pyarrow.parquet as pq
import pydicom
import pytest
from pydicom.data import get_testdata_file

from dicomlake.config import load_config
from dicomlake.dicom.split import split_instance
from dicomlake.errors import ConfigError
from dicomlake.ingest import worker
from dicomlake.ingest.worker import TaskContext, process_task
from dicomlake.lake.commit import staged
from dicomlake.lake.layout import LakeLayout
from dicomlake.pixels.pack import data_key_for, open_chunk, read_header, read_index
from dicomlake.storage import FileInfo

MULTIFRAME = Path(get_testdata_file("emri_small.dcm"))  # MR, 10 frames of 64 x 64, 16-bit


@pytest.mark.parametrize("group_bytes", [1, 3 * 64 * 64 * 2, 1 << 30], ids=["1", "3-frames", "all"])
@pytest.mark.parametrize("streamed", [False, True], ids=["whole", "streamed"])
def test_chunks_encoded_in_groups_are_sealed_in_order(
    tmp_path, config, keyring, monkeypatch, group_bytes, streamed
):
    data = MULTIFRAME.read_bytes()
    monkeypatch.setattr(worker, "HELD_BYTES", group_bytes)
    result = _ingest_one(tmp_path, config, keyring, data, streamed)
    assert [s["outcome"] for s in result.sources] == ["ingested"]

    layout = LakeLayout(str(tmp_path / "lake"))
    (frames,) = [p for p in result.staged if p.startswith("tables/frames/")]
    rows = pq.read_table(staged(layout, "r1", frames)).to_pylist()
    assert [(r["chunk_kind"], r["frame_number"]) for r in rows] == [
        ("prefix", 0),
        *(("frame", n) for n in range(1, 11)),
        ("suffix", 0),
    ]
    spec = split_instance(data).frame_spec
    opened = []
    for row in rows:
        pack = Path(staged(layout, "r1", row["pack_path"])).read_bytes()
        header = read_header(pack)
        key = data_key_for(header, keyring)
        (record,) = [
            r
            for r in read_index(pack, key, header.pack_id)
            if (r.kind, r.index) == (row["chunk_kind"], row["frame_number"])
        ]
        assert (record.offset, record.length) == (row["offset"], row["length"])
        sealed = pack[record.offset : record.offset + record.length]
        kind_spec = spec if record.kind == "frame" else None
        opened.append(
            open_chunk(sealed, data_key=key, pack_id=header.pack_id, record=record, spec=kind_spec)
        )
    assert b"".join(opened) == data  # prefix, frames, suffix: the file's bytes
    pixels = pydicom.dcmread(MULTIFRAME).PixelData
    assert b"".join(opened[1:-1]) == pixels


def _ingest_one(tmp_path, config, keyring, data, streamed, threads=2):
    landing = tmp_path / "landing"
    landing.mkdir()
    (landing / "mr.dcm").write_bytes(data)
    limits = dataclasses.replace(config.ingest, stream_bytes=1000 if streamed else 1 << 30)
    pixels = dataclasses.replace(config.pixels, encode_threads=threads)
    ctx = TaskContext(
        "r1",
        str(tmp_path / "lake"),
        dataclasses.replace(config, ingest=limits, pixels=pixels),
        keyring.to_bytes(),
        1_700_000_000_000,
    )
    info = FileInfo(str(landing / "mr.dcm"), len(data), 1_700_000_000_000)
    return process_task(0, 0, [info], str(landing), ctx, frozenset())


@pytest.mark.parametrize("streamed", [False, True], ids=["whole", "streamed"])
def test_the_frames_of_a_file_not_held_are_encoded_on_two_threads_at_once(
    tmp_path, config, keyring, monkeypatch, streamed
):
    # Groups of three frames: each frame's encode lasts 50 ms, so two at once overlap
    real, lock = worker.codecs.encode, threading.Lock()
    running, most, threads = 0, 0, set()

    def slow(raw, spec=None, codec="auto", verify=True):
        nonlocal running, most
        if spec is None:  # the prefix and suffix
            return real(raw, spec, codec=codec, verify=verify)
        with lock:
            running += 1
            most = max(most, running)
            threads.add(threading.current_thread().name)
        time.sleep(0.05)
        with lock:
            running -= 1
        return real(raw, spec, codec=codec, verify=verify)

    monkeypatch.setattr(worker.codecs, "encode", slow)
    monkeypatch.setattr(worker, "HELD_BYTES", 3 * 64 * 64 * 2)  # the file is not held
    result = _ingest_one(tmp_path, config, keyring, MULTIFRAME.read_bytes(), streamed)
    assert [s["outcome"] for s in result.sources] == ["ingested"], result.errors
    assert most == 2 and len(threads) == 2  # the task's own and one more
    assert any(t.startswith("dicomlake-encode") for t in threads)


def test_a_bad_encode_threads_names_the_key_and_the_value():
    with pytest.raises(ConfigError, match="pixels.encode_threads has a bad value 0"):
        load_config(env={"DICOMLAKE_PIXELS_ENCODE_THREADS": "0"})
