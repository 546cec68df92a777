"""A file's chunks are encoded a group at a time (`worker.HELD_BYTES` of them), then sealed:
whatever the groups, every chunk goes into the pack in order and opens to the file's own bytes.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pyarrow.parquet as pq
import pydicom
import pytest
from pydicom.data import get_testdata_file

from dicomlake.dicom.split import split_instance
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
    landing = tmp_path / "landing"
    landing.mkdir()
    (landing / "mr.dcm").write_bytes(data)
    monkeypatch.setattr(worker, "HELD_BYTES", group_bytes)
    limits = dataclasses.replace(config.ingest, stream_bytes=1000 if streamed else 1 << 30)
    ctx = TaskContext(
        "r1",
        str(tmp_path / "lake"),
        dataclasses.replace(config, ingest=limits),
        keyring.to_bytes(),
        1_700_000_000_000,
    )
    info = FileInfo(str(landing / "mr.dcm"), len(data), 1_700_000_000_000)
    result = process_task(0, 0, [info], str(landing), ctx, frozenset())
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
