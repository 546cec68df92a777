"""The encrypted pack file: write, read one chunk by offset, detect tampering."""

from __future__ import annotations

import io
from dataclasses import replace

import numpy as np
import pytest
from corpus import frame_spec

from dicomlake.crypto.keyring import Keyring
from dicomlake.errors import (
    IntegrityError,
    MissingKeyError,
    TamperedChunkError,
    TruncatedPackError,
)
from dicomlake.pixels.pack import (
    HEADER_READ_BYTES,
    PackWriter,
    data_key_for,
    open_chunk,
    read_header,
    read_index,
)

PACK_ID = "pack-20261127-0001"
PHI = b"DOE^JOHN^SECRET-PATIENT-NAME-1234567"


SPEC = frame_spec(48, 40, bits_stored=12)


def make_chunks() -> list[dict]:
    """Three instances of prefix + frames + suffix; frames are smooth 12-bit images."""
    rng = np.random.default_rng(3)
    chunks = []
    for i in range(3):
        instance = f"1.2.826.0.1.{i}"
        prefix = b"DICM" + PHI + bytes(range(i, 200 + i))
        chunks.append({"instance": instance, "kind": "prefix", "index": 0, "raw": prefix})
        for f in range(8):
            y, x = np.mgrid[0:48, 0:40]
            img = 1000 + 20 * x + 10 * y + rng.integers(0, 30, (48, 40)) + 100 * f
            chunks.append(
                {
                    "instance": instance,
                    "kind": "frame",
                    "index": f,
                    "raw": img.astype("<u2").tobytes(),
                    "spec": SPEC,
                }
            )
        chunks.append({"instance": instance, "kind": "suffix", "index": 0, "raw": b"\xfe\xff" * 9})
    return chunks


@pytest.fixture(scope="module")
def keyring() -> Keyring:
    return Keyring.generate("x25519")


@pytest.fixture(scope="module")
def written(keyring):
    """(pack bytes, records, chunks, info) for one pack written from a public-only keyring."""
    out = io.BytesIO()
    writer = PackWriter(out, PACK_ID, keyring.public_only())
    chunks = make_chunks()
    records = [writer.add(**chunk) for chunk in chunks]
    info = writer.close()
    return out.getvalue(), records, chunks, info


def test_each_chunk_reads_back_from_header_plus_one_range(written, keyring):
    pack, records, chunks, info = written
    assert info.size == len(pack) and info.chunks == len(chunks) == len(records)
    header = read_header(pack[:HEADER_READ_BYTES])
    assert (header.pack_id, header.kek_id, header.wrapped_key) == (
        PACK_ID,
        info.kek_id,
        info.wrapped_key,
    )
    assert records[0].offset == header.data_start
    key = data_key_for(header, keyring)
    for record, chunk in zip(records, chunks, strict=True):
        sealed = pack[record.offset : record.offset + record.length]
        raw = open_chunk(
            sealed, data_key=key, pack_id=PACK_ID, record=record, spec=chunk.get("spec")
        )
        assert raw == chunk["raw"]
    assert {r.codec for r in records if r.kind == "frame"} == {"htj2k"}
    assert read_index(pack, key, PACK_ID) == records


def test_no_pixel_or_header_bytes_in_clear(written):
    pack, _, chunks, _ = written
    assert PHI not in pack
    for chunk in chunks:
        raw = chunk["raw"]
        for start in range(0, len(raw) - 15, 8):
            assert raw[start : start + 16] not in pack, (chunk["instance"], chunk["kind"], start)


def test_flipped_byte_in_a_chunk_is_detected(written, keyring):
    pack, records, _, _ = written
    key = data_key_for(read_header(pack), keyring)
    record = records[5]
    sealed = bytearray(pack[record.offset : record.offset + record.length])
    sealed[len(sealed) // 2] ^= 0x01
    with pytest.raises(TamperedChunkError, match=f"{PACK_ID} chunk 1.2.826.0.1.0/frame/4"):
        open_chunk(bytes(sealed), data_key=key, pack_id=PACK_ID, record=record, spec=SPEC)


def test_swapped_chunks_are_detected(written, keyring):
    pack, records, _, _ = written
    key = data_key_for(read_header(pack), keyring)
    a, b = records[2], records[3]  # two frames of one instance
    # The bytes of a at b's place and vice versa, with the records' offsets swapped too.
    moved_a = replace(a, offset=b.offset, length=b.length)
    sealed_b = pack[b.offset : b.offset + b.length]
    with pytest.raises(TamperedChunkError):
        open_chunk(sealed_b, data_key=key, pack_id=PACK_ID, record=moved_a, spec=SPEC)
    sealed_a = pack[a.offset : a.offset + a.length]
    with pytest.raises(TamperedChunkError):  # another pack id
        open_chunk(sealed_a, data_key=key, pack_id="pack-other", record=a, spec=SPEC)
    with pytest.raises(TamperedChunkError):  # record edited to claim another codec
        open_chunk(sealed_a, data_key=key, pack_id=PACK_ID, record=replace(a, codec="zstd"))


def test_hash_mismatch_and_short_read(written, keyring):
    pack, records, _, _ = written
    key = data_key_for(read_header(pack), keyring)
    record = records[1]
    sealed = pack[record.offset : record.offset + record.length]
    with pytest.raises(IntegrityError, match="SHA-256"):
        open_chunk(
            sealed,
            data_key=key,
            pack_id=PACK_ID,
            spec=SPEC,
            record=replace(record, raw_sha256="0" * 64),
        )
    with pytest.raises(TruncatedPackError):
        open_chunk(sealed[:-1], data_key=key, pack_id=PACK_ID, record=record, spec=SPEC)


def test_truncated_pack_and_header(written, keyring):
    pack, _, _, _ = written
    key = data_key_for(read_header(pack), keyring)
    for cut in (1, 9, 17, len(pack) // 2):
        with pytest.raises(TruncatedPackError, match=PACK_ID):
            read_index(pack[:-cut], key, PACK_ID)
    with pytest.raises(TruncatedPackError):
        read_header(pack[:20], name="p.pack")
    with pytest.raises(IntegrityError, match="not a dicomlake pack"):
        read_header(b"GARBAGE!" + pack[8:100])


def test_edited_header_is_caught_by_the_index(written, keyring):
    pack, _, _, _ = written
    key = data_key_for(read_header(pack), keyring)
    edited = pack.replace(b'"created": "', b'"created": "1', 1)
    length = int.from_bytes(edited[8:12], "little") + 1
    edited = edited[:8] + length.to_bytes(4, "little") + edited[12:]
    with pytest.raises(TamperedChunkError, match="index"):
        read_index(edited, key, PACK_ID)


def test_other_keyring_and_rotation_override(written, keyring):
    pack, records, chunks, info = written
    header = read_header(pack)
    with pytest.raises(MissingKeyError):
        data_key_for(header, Keyring.generate("x25519"))
    rotated = keyring.rotate()
    override = rotated.rewrap(info.kek_id, info.wrapped_key, PACK_ID.encode())
    trimmed = rotated.without(info.kek_id)
    with pytest.raises(MissingKeyError):
        data_key_for(header, trimmed)
    key = data_key_for(header, trimmed, wrapped_override=override)
    record = records[-1]
    sealed = pack[record.offset : record.offset + record.length]
    assert open_chunk(sealed, data_key=key, pack_id=PACK_ID, record=record) == chunks[-1]["raw"]


def test_writer_refuses_misuse(keyring):
    writer = PackWriter(io.BytesIO(), PACK_ID, keyring)
    writer.add(instance="1.2", kind="frame", index=0, raw=b"x")
    for bad in (
        {"instance": "1.2", "kind": "frame", "index": 0},  # duplicate
        {"instance": "1.2", "kind": "pixels", "index": 1},
        {"instance": "", "kind": "frame", "index": 1},
    ):
        with pytest.raises(ValueError):
            writer.add(raw=b"x", **bad)
    info = writer.close()
    assert info.chunks == 1 and writer.bytes_written == info.size
    with pytest.raises(ValueError, match="closed"):
        writer.add(instance="1.2", kind="frame", index=1, raw=b"x")
