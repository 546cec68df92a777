"""Deep verify opens every chunk of every backed-up pack, with re-wrapped keys after rotation."""

from __future__ import annotations

import io
import os
from datetime import datetime, timezone
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from pydicom.data import get_testdata_file
from snapshot_helpers import T0, write

from dicomlake.backup import take_snapshot, verify
from dicomlake.crypto.keyring import Keyring
from dicomlake.dicom.split import split_instance
from dicomlake.errors import PrivateKeyRequiredError
from dicomlake.lake.schemas import PACKS
from dicomlake.pixels.pack import PackWriter

# A real instance, so frames are stored with an image codec whose decoding needs the geometry
# that deep verify reads back from the instance's prefix chunk.
CT = split_instance(Path(get_testdata_file("CT_small.dcm")).read_bytes())
MR = split_instance(Path(get_testdata_file("MR_small.dcm")).read_bytes())


def build_pack(pack_id: str, keyring) -> tuple[bytes, list, object]:
    buf = io.BytesIO()
    writer = PackWriter(buf, pack_id, keyring)
    records = []
    for name, split in (("ct", CT), ("mr", MR)):
        records.append(writer.add(instance=name, kind="prefix", index=0, raw=split.prefix))
        records.append(
            writer.add(
                instance=name, kind="frame", index=1, raw=split.frames[0], spec=split.frame_spec
            )
        )
    info = writer.close()
    return buf.getvalue(), records, info


def test_deep_verify_opens_every_chunk_with_rotated_keys(tmp_path, config, keyring):
    lake, backup = tmp_path / "lake", tmp_path / "backup"
    rotated = keyring.rotate()
    packs_rows = []
    for n, pack_id in enumerate(("pack-good", "pack-bad")):
        data, records, info = build_pack(pack_id, keyring)
        if pack_id == "pack-bad":  # damaged at the source, before the backup saw it
            damaged = bytearray(data)
            damaged[records[1].offset + 20] ^= 0x40
            data = bytes(damaged)
        write(lake, f"pixels/r1/{pack_id}.pack", data, T0 + n)
        kek_id, wrapped = rotated.rewrap(info.kek_id, info.wrapped_key, pack_id.encode())
        packs_rows.append(
            {
                "pack_path": f"pixels/r1/{pack_id}.pack",
                "pack_id": pack_id,
                "kek_id": kek_id,
                "wrapped_key": wrapped,
                "size": len(data),
                "chunks": len(records),
                "ingest_run_id": "r1",
                "wrapped_at": datetime(2026, 11, 1, tzinfo=timezone.utc),
            }
        )
    packs_file = lake / "tables/packs/part-r1-rot.parquet"
    packs_file.parent.mkdir(parents=True)
    pq.write_table(pa.Table.from_pylist(packs_rows, schema=PACKS), packs_file)
    os.utime(packs_file, ns=((T0 + 10) * 10**9,) * 2)
    snap = take_snapshot(
        str(lake), str(backup), "full", keyring=keyring, config=config, now_label="20261101T010000Z"
    )
    # Only the rotated KEK is left: every pack opens only through the packs table's keys.
    only_new = rotated.without(keyring.active_kek_id)

    # The stored bytes are what the lake had
    assert verify(str(backup), keyring=keyring, config=config).ok
    deep = verify(str(backup), snap.snapshot_id, deep=True, keyring=only_new, config=config)
    assert [(p.path, p.snapshot_id, p.unchecked) for p in deep.problems] == [
        ("pixels/r1/pack-bad.pack", snap.snapshot_id, False)
    ]
    assert "pack-bad chunk ct/frame/1" in deep.problems[0].reason
    # Every chunk is opened; all but the damaged one decode to their recorded hash.
    assert (deep.packs_checked, deep.chunks_checked, deep.chunks_hash_checked) == (2, 8, 7)
    assert {r.codec for r in build_pack("p", keyring)[1] if r.kind == "frame"} - {"zstd", "store"}

    # Without the packs table the old KEK is needed: the deep check says so for each pack.
    os.remove(packs_file)
    places = str(lake), str(backup)
    later = take_snapshot(
        *places, "incremental", keyring=keyring, config=config, now_label="20261102T010000Z"
    )
    no_table = verify(str(backup), later.snapshot_id, deep=True, keyring=only_new, config=config)
    assert {p.path for p in no_table.problems} == {
        "pixels/r1/pack-good.pack",
        "pixels/r1/pack-bad.pack",
    }
    assert all(p.unchecked and "is not in this keyring" in p.reason for p in no_table.problems)


# A streamed instance: prefix and frames 1-4 in one pack, frames 5-10 and suffix in the next.
# Its 16-bit frames are stored with an image codec, so each needs the geometry of the prefix.
EMRI = split_instance(Path(get_testdata_file("emri_small.dcm")).read_bytes())
EMRI_CHUNKS = (
    [("prefix", 0, EMRI.prefix, None)]
    + [("frame", n, f, EMRI.frame_spec) for n, f in enumerate(EMRI.frames, 1)]
    + [("suffix", 0, EMRI.suffix, None)]
)


def write_spanning(lake: Path, keyring, head: str | None, rest: str) -> set[str]:
    """Write the instance's two packs (the head one only when named); the frames' codecs."""
    codecs = set()
    for pack_id, chunks in ((head, EMRI_CHUNKS[:5]), (rest, EMRI_CHUNKS[5:])):
        if pack_id is None:
            continue
        buf = io.BytesIO()
        writer = PackWriter(buf, pack_id, keyring)
        for kind, index, raw, spec in chunks:
            record = writer.add(instance="emri", kind=kind, index=index, raw=raw, spec=spec)
            codecs |= {record.codec} if kind == "frame" else set()
        writer.close()
        write(lake, f"pixels/r1/{pack_id}.pack", buf.getvalue(), T0)
    return codecs


# Packs are checked in path order: the one holding the prefix comes first, or last.
@pytest.mark.parametrize(("head", "rest"), [("pack-a", "pack-b"), ("pack-b", "pack-a")])
def test_an_instance_spanning_two_packs_verifies_in_either_order(
    tmp_path, config, keyring, head, rest
):
    lake, backup = tmp_path / "lake", tmp_path / "backup"
    assert write_spanning(lake, keyring, head, rest) - {"zstd", "store"}
    snap = take_snapshot(
        str(lake), str(backup), "full", keyring=keyring, config=config, now_label="20261101T010000Z"
    )
    deep = verify(str(backup), snap.snapshot_id, deep=True, keyring=keyring, config=config)
    assert deep.problems == ()
    assert (deep.packs_checked, deep.chunks_checked, deep.chunks_hash_checked) == (2, 12, 12)


def test_a_public_only_keyring_is_refused_before_any_pack_is_read(tmp_path, config):
    lake, backup = tmp_path / "lake", tmp_path / "backup"
    full = Keyring.generate("x25519")
    write_spanning(lake, full, "pack-a", "pack-b")
    # An ingest host's public half has the secret that authenticates manifests
    snap = take_snapshot(
        str(lake),
        str(backup),
        "full",
        keyring=full.public_only(),
        config=config,
        now_label="20261101T010000Z",
    )
    with pytest.raises(PrivateKeyRequiredError, match="only public keys"):
        verify(str(backup), snap.snapshot_id, deep=True, keyring=full.public_only(), config=config)
    deep = verify(str(backup), snap.snapshot_id, deep=True, keyring=full, config=config)
    assert deep.ok and deep.packs_checked == 2


def test_packs_another_keyring_cannot_open_are_unchecked_not_damaged(tmp_path, config, keyring):
    lake, backup = tmp_path / "lake", tmp_path / "backup"
    write_spanning(lake, keyring, "pack-a", "pack-b")
    snap = take_snapshot(
        str(lake), str(backup), "full", keyring=keyring, config=config, now_label="20261101T010000Z"
    )
    # The lake's keyring (its secret authenticates the manifest) without the packs' KEK
    other = keyring.rotate().without(keyring.active_kek_id)
    deep = verify(str(backup), snap.snapshot_id, deep=True, keyring=other, config=config)
    assert not deep.ok
    assert [(p.path, p.unchecked) for p in deep.problems] == [
        ("pixels/r1/pack-a.pack", True),
        ("pixels/r1/pack-b.pack", True),
    ]
    assert all(
        f"{keyring.active_kek_id!r} is not in this keyring" in p.reason for p in deep.problems
    )


def test_frames_whose_prefix_pack_is_missing_are_reported(tmp_path, config, keyring):
    lake, backup = tmp_path / "lake", tmp_path / "backup"
    write_spanning(lake, keyring, None, "pack-b")
    snap = take_snapshot(
        str(lake), str(backup), "full", keyring=keyring, config=config, now_label="20261101T010000Z"
    )
    deep = verify(str(backup), snap.snapshot_id, deep=True, keyring=keyring, config=config)
    assert [p.path for p in deep.problems] == ["pixels/r1/pack-b.pack"]
    assert "pack-b chunk emri/frame/5" in deep.problems[0].reason
    # Frames 5-10 cannot decode without the geometry; the suffix needs none
    assert (deep.chunks_checked, deep.chunks_hash_checked) == (7, 1)
