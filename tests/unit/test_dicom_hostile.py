"""Hostile inputs built from real corpus files: deep nesting, out-of-range numbers, deflate
bombs, and identifiers that must not reach an error message."""

from __future__ import annotations

import json
import os
import struct
import subprocess
import sys
import time
import zlib
from pathlib import Path

import pydicom
import pytest
from crafted import (
    CT,
    ITEM,
    ITEM_END,
    MR_IMPLICIT,
    SEQ_END,
    UNDEFINED,
    before_pixels,
    element_bytes,
    rewritten,
    tag_bytes,
)
from pydicom.data import get_testdata_file

import dicomlake
from dicomlake.dicom import element_rows, header_json, promoted_values, split_instance, split_stream
from dicomlake.dicom.deid import deidentify
from dicomlake.dicom.walk import MAX_DEPTH, MAX_ELEMENTS
from dicomlake.errors import DicomParseError

CONTENT_SEQUENCE = (0x0040, 0xA730)  # kept by de-identification, items and all


def _sequence_header(length: int, implicit: bool) -> bytes:
    vr = b"" if implicit else b"SQ\0\0"
    return tag_bytes(CONTENT_SEQUENCE) + vr + struct.pack("<L", length)


def _item_header(length: int) -> bytes:
    return tag_bytes(ITEM) + struct.pack("<L", length)


def nested(depth: int, defined: bool, implicit: bool = False) -> bytes:
    """ContentSequence items nested ``depth`` deep, a ValueType in the innermost item.

    Built in one pass (the lengths of defined-length levels computed, not re-encoded)."""
    inner = element_bytes((0x0040, 0xA040), "CS", b"INNERMOST ", implicit)
    if not defined:
        opening = (
            _sequence_header(UNDEFINED, implicit) + tag_bytes(ITEM) + struct.pack("<L", UNDEFINED)
        )
        closing = tag_bytes(ITEM_END) + b"\0" * 4 + tag_bytes(SEQ_END) + b"\0" * 4
        return opening * depth + inner + closing * depth
    header = len(_sequence_header(0, implicit))
    parts, size = [], len(inner)
    for _ in range(depth):  # innermost first; sizes grow outwards
        parts.append(
            _sequence_header(size + 8, implicit) + tag_bytes(ITEM) + struct.pack("<L", size)
        )
        size += header + 8
    return b"".join(reversed(parts)) + inner


def _reason(data: bytes, **kwargs: int) -> DicomParseError:
    with pytest.raises(DicomParseError) as info:
        split_instance(data, **kwargs)
    return info.value


def _depth_of(document: dict) -> int:
    """Nesting of ContentSequence items in a DICOM JSON document (an explicit loop)."""
    depth, items = 0, document.get("0040A730", {}).get("Value", [])
    while items:
        depth += 1
        items = items[0].get("0040A730", {}).get("Value", [])
    return depth


@pytest.mark.parametrize("defined", [False, True], ids=["undefined", "defined"])
@pytest.mark.parametrize("path", [CT, MR_IMPLICIT], ids=["explicit", "implicit"])
def test_nesting_at_the_limit_goes_through_every_step(path: Path, defined: bool) -> None:
    data = path.read_bytes()
    implicit = path == MR_IMPLICIT
    split = split_instance(before_pixels(data, nested(MAX_DEPTH, defined, implicit)))
    clean, _ = deidentify(split.dataset, bytes(32))
    assert _depth_of(json.loads(header_json(clean))) == MAX_DEPTH
    rows = element_rows(clean)
    assert max(rows["depth"]) == MAX_DEPTH
    assert "INNERMOST" in rows["value_text"]
    assert promoted_values(split)["SOPInstanceUID"] == pydicom.dcmread(path).SOPInstanceUID


@pytest.mark.parametrize("depth", [MAX_DEPTH + 1, 1_000, 10_000])
@pytest.mark.parametrize("defined", [False, True], ids=["undefined", "defined"])
@pytest.mark.parametrize("path", [CT, MR_IMPLICIT], ids=["explicit", "implicit"])
def test_deeper_nesting_is_too_deep_before_any_parse(path: Path, defined: bool, depth: int) -> None:
    data = before_pixels(path.read_bytes(), nested(depth, defined, path == MR_IMPLICIT))
    started = time.perf_counter()
    error = _reason(data)
    assert error.reason == "too_deep", error.message
    assert f"more than {MAX_DEPTH}" in error.message
    assert time.perf_counter() - started < 1.0
    streamed = pytest.raises(DicomParseError)
    with streamed as info:
        split_stream(lambda offset, n: data[offset : offset + n], len(data), limit=1 << 20)
    assert info.value.reason == "too_deep"


def test_deep_nesting_in_a_defined_length_value_of_another_vr_is_bytes() -> None:
    # An OB value that happens to hold nested items is not parsed as a sequence
    blob = element_bytes((0x0009, 0x1001), "OB", nested(10_000, defined=True))
    split = split_instance(before_pixels(CT.read_bytes(), blob))
    assert split.dataset[0x00091001].value == nested(10_000, defined=True)


RLE_2FRAME = Path(get_testdata_file("SC_rgb_rle_2frame.dcm"))


@pytest.mark.parametrize("path", [CT, RLE_2FRAME], ids=["native", "encapsulated"])
@pytest.mark.parametrize(
    ("frames", "says"),
    [
        ("2147483648", "out of its range 1-2147483647"),
        ("99999999999999999999", "out of its range"),
        ("-1", "out of its range"),
        ("0", "out of its range"),
        ("12AB", "not an integer"),
    ],
)
def test_number_of_frames_out_of_range_is_corrupt(path: Path, frames: str, says: str) -> None:
    error = _reason(rewritten(path, NumberOfFrames=frames))
    assert error.reason == "corrupt"
    assert f"NumberOfFrames (0028,0008) is {says}" in error.message
    assert f" {frames}" not in error.message  # the value is not quoted


@pytest.mark.parametrize(
    ("keyword", "value"),
    [("Rows", 0), ("Columns", 0), ("SamplesPerPixel", 0), ("BitsAllocated", 12)],
)
def test_a_zero_or_odd_frame_dimension_is_corrupt(keyword: str, value: int) -> None:
    error = _reason(rewritten(CT, **{keyword: value}))
    assert error.reason == "corrupt"
    assert keyword in error.message and "(0028," in error.message


def _tiny_frames(count: int, side: int = 1) -> bytes:
    """CT_small made into ``count`` frames of ``side`` x ``side`` 8-bit pixels."""
    pixels = count * side * side
    return rewritten(
        CT,
        Rows=side,
        Columns=side,
        BitsAllocated=8,
        BitsStored=8,
        HighBit=7,
        NumberOfFrames=str(count),
        PixelData=bytes(range(256)) * (pixels // 256) + bytes(pixels % 256),
    )


def test_many_tiny_frames_are_cut_without_a_part_per_frame_held() -> None:
    from dicomlake.dicom.split import FRAMES_OF_ANY_SIZE

    data = _tiny_frames(FRAMES_OF_ANY_SIZE)
    split = split_stream(lambda offset, n: data[offset : offset + n], len(data), limit=1 << 20)
    assert len(split.frames) == FRAMES_OF_ANY_SIZE == split.number_of_frames
    assert (split.frames[0], split.frames[255], split.frames[-1]) == (b"\0", b"\xff", b"\0")


def test_past_ten_thousand_frames_a_frame_must_hold_four_kib() -> None:
    from dicomlake.dicom.split import FRAMES_OF_ANY_SIZE, MAX_FRAMES, MIN_FRAME_BYTES

    assert (FRAMES_OF_ANY_SIZE, MIN_FRAME_BYTES) == (10_000, 4096)
    # A megabyte of one-byte frames would cost a chunk, a row and an index entry each
    for count in (FRAMES_OF_ANY_SIZE + 1, 1_000_000):
        with pytest.raises(DicomParseError) as info:
            split_instance(_tiny_frames(count))
        assert info.value.reason == "too_large"
        assert f"{count} frames of 1 bytes on average: past 10000 frames" in info.value.message
    with pytest.raises(DicomParseError, match=f"{MAX_FRAMES + 1} frames or fragments"):
        split_instance(_tiny_frames(MAX_FRAMES + 1))
    # Frames of 64 x 64 bytes, 4 KiB each, are kept apart however many
    split = split_instance(_tiny_frames(FRAMES_OF_ANY_SIZE + 1, side=64))
    assert len(split.frames) == FRAMES_OF_ANY_SIZE + 1
    assert all(len(split.frames[i]) == 4096 for i in (0, 5000, FRAMES_OF_ANY_SIZE))


def test_element_length_beyond_the_file_is_truncated_not_allocated() -> None:
    data = bytearray(CT.read_bytes())
    # (0008,0080) InstitutionName, LO: its 2-byte length says 0xFFFF, the file is shorter
    at = bytes(data).index(b"\x08\x00\x80\x00LO")
    data[at + 6 : at + 8] = b"\xff\xff"
    cut = bytes(data[: at + 2000])
    error = _reason(cut)
    assert (error.reason, "(0008,0080)") == ("truncated", error.message.split(" ")[1])
    assert f"offset {at} declares 65535 bytes" in error.message


def test_fragment_length_beyond_the_file_is_truncated() -> None:
    data = bytearray(RLE_2FRAME.read_bytes())
    first = len(split_instance(bytes(data)).prefix)
    data[first + 4 : first + 8] = struct.pack("<L", 0x7FFFFFF0)
    error = _reason(bytes(data))
    assert error.reason == "truncated"
    assert f"fragment at offset {first} declares {0x7FFFFFF0} bytes" in error.message


def test_basic_offset_table_entries_past_the_data_are_not_used() -> None:
    from pydicom.encaps import encapsulate, generate_frames

    ds = pydicom.dcmread(RLE_2FRAME)
    frames = list(generate_frames(ds.PixelData, number_of_frames=2))
    ds.PixelData = encapsulate(frames, fragments_per_frame=2, has_bot=True)
    data = bytearray(rewritten(RLE_2FRAME, PixelData=ds.PixelData))
    bot = bytes(data).rindex(b"\xfe\xff\x00\xe0\x08\x00\x00\x00")  # table of 2 entries
    data[bot + 8 : bot + 16] = b"\xff" * 8
    split = split_instance(bytes(data))
    # No usable table and RLE has no start marker: the frames stay one part
    assert len(split.frames) == 1 and split.number_of_frames == 2


@pytest.mark.parametrize(
    ("keyword", "value"), [("SeriesNumber", "2147483648"), ("InstanceNumber", "-2147483649")]
)
def test_promoted_integers_beyond_32_bits_are_null(keyword: str, value: str) -> None:
    split = split_instance(rewritten(CT, **{keyword: value}))
    assert promoted_values(split)[keyword] is None


DEFLATED = Path(get_testdata_file("image_dfl.dcm"))


def _deflated_parts() -> tuple[bytes, bytes]:
    """image_dfl.dcm's preamble and file meta, and its dataset inflated."""
    data = DEFLATED.read_bytes()
    meta_end = 132 + 12 + pydicom.dcmread(DEFLATED).file_meta.FileMetaInformationGroupLength
    return data[:meta_end], zlib.decompress(data[meta_end:], -zlib.MAX_WBITS)


def deflate_bomb(zeros_mib: int) -> bytes:
    """image_dfl.dcm with ``zeros_mib`` MiB of trailing padding (FFFC,FFFC) in its deflated
    dataset: a few hundred kilobytes that inflate past ``zeros_mib`` MiB.

    One fully flushed deflate block of 1 MiB of zeros, repeated: each starts on a byte
    boundary and refers to nothing before it, so the repeats form a valid stream."""
    meta, dataset = _deflated_parts()
    padding = tag_bytes((0xFFFC, 0xFFFC)) + b"OB\0\0" + struct.pack("<L", zeros_mib << 20)
    deflater = zlib.compressobj(9, zlib.DEFLATED, -zlib.MAX_WBITS)
    head = deflater.compress(dataset + padding) + deflater.flush(zlib.Z_FULL_FLUSH)
    block = deflater.compress(bytes(1 << 20)) + deflater.flush(zlib.Z_FULL_FLUSH)
    return meta + head + block * zeros_mib + deflater.flush()


def test_a_deflate_bomb_stops_at_the_inflate_limit() -> None:
    bomb = deflate_bomb(64)
    assert len(bomb) < 1 << 20
    # What pydicom's own reader would inflate
    assert len(zlib.decompress(bomb[len(_deflated_parts()[0]) :], -zlib.MAX_WBITS)) > 64 << 20
    for split in (
        lambda: split_instance(bomb, max_inflated=16 << 20),
        lambda: split_stream(lambda o, n: bomb[o : o + n], len(bomb), limit=16 << 20),
    ):
        with pytest.raises(DicomParseError) as info:
            split()
        assert info.value.reason == "too_large"
        assert f"inflates to more than {16 << 20} bytes" in info.value.message
    # Under a limit it fits, the file splits as one part, its header parsed
    split = split_instance(bomb, max_inflated=80 << 20)
    assert split.prefix == bomb and split.frames == []
    assert split.dataset.SOPInstanceUID == pydicom.dcmread(DEFLATED).SOPInstanceUID


_PEAK_RSS = """
import resource, sys
from dicomlake.dicom import split_instance
from dicomlake.errors import DicomParseError
bomb = open(sys.argv[1], "rb").read()
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
try:
    split_instance(bomb, max_inflated=int(sys.argv[2]))
except DicomParseError as exc:
    assert exc.reason == "too_large", exc
print(before, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)
"""


def test_a_deflate_bomb_never_holds_much_more_than_the_limit(tmp_path: Path) -> None:
    path = tmp_path / "bomb.dcm"
    path.write_bytes(deflate_bomb(1024))  # inflates to 1 GiB
    limit = 32 << 20
    out = subprocess.run(
        [sys.executable, "-c", _PEAK_RSS, str(path), str(limit)],
        capture_output=True,
        text=True,
        check=True,
        env={**os.environ, "PYTHONPATH": str(Path(dicomlake.__file__).parents[1])},
    ).stdout
    before_kib, after_kib = map(int, out.split())
    assert (after_kib - before_kib) * 1024 < 1.5 * limit


def test_a_cut_or_damaged_deflate_stream_is_truncated_or_corrupt() -> None:
    data = DEFLATED.read_bytes()
    meta_end = len(_deflated_parts()[0])
    assert _reason(data[: meta_end + 1000]).reason == "truncated"
    damaged = data[: meta_end + 10] + b"\xff" * 16 + data[meta_end + 26 :]
    error = _reason(damaged)
    assert error.reason == "corrupt" and "does not inflate" in error.message


def test_deep_nesting_inside_a_deflated_dataset_is_too_deep() -> None:
    meta, dataset = _deflated_parts()
    deflater = zlib.compressobj(9, zlib.DEFLATED, -zlib.MAX_WBITS)
    deep = nested(10_000, defined=False) + dataset
    assert _reason(meta + deflater.compress(deep) + deflater.flush()).reason == "too_deep"


NAME, UID = "DOE^JOHN", "1.2.826.0.1.3680043.9.7777.4242"


def _replaced(data: bytes, old: bytes, new: bytes) -> bytes:
    at = data.index(old)
    return data[:at] + new + data[at + len(new) :]


def _identifier_cases() -> dict[str, tuple[bytes, str, list[str]]]:
    """Damaged files, each with an identifier in the offending place: (file, reason, the
    identifier as text and as it would read if shown as bytes or as a tag)."""
    ct = CT.read_bytes()
    rle = RLE_2FRAME.read_bytes()
    as_tag = ["4F44", "5E45", "444F455E"]  # b"DOE^" read as a tag, or as hex
    name_tag = tag_bytes((0x0010, 0x0010)) + b"PN"
    undefined_sq = _sequence_header(UNDEFINED, implicit=False)
    return {
        "NumberOfFrames name": (rewritten(CT, NumberOfFrames=NAME), "corrupt", [NAME]),
        "NumberOfFrames UID": (rewritten(CT, NumberOfFrames=UID), "corrupt", [UID]),
        "name at the start": (NAME.encode() + ct[132:], "not_dicom", [NAME, *as_tag]),
        "name where a VR is": (
            _replaced(ct, name_tag, name_tag[:4] + NAME.lower().encode()),
            "corrupt",
            [NAME.lower()[:2], NAME.lower()],
        ),
        "name where a fragment is": (
            _replaced(rle, rle[len(split_instance(rle).prefix) :][:8], NAME.encode()),
            "corrupt",
            [NAME, *as_tag],
        ),
        "name where an item is": (
            before_pixels(ct, undefined_sq + NAME.encode() + bytes(8)),
            "corrupt",
            [NAME, *as_tag],
        ),
    }


@pytest.mark.parametrize("case", list(_identifier_cases()))
def test_error_messages_name_no_value_from_the_file(case: str) -> None:
    data, reason, identifiers = _identifier_cases()[case]
    error = _reason(data)
    assert error.reason == reason, error.message
    for text in identifiers:
        assert text.lower() not in error.message.lower(), (text, error.message)
    assert str(error) == f"{reason}: {error.message}"


def test_a_header_of_too_many_elements_is_too_large_before_pydicom_holds_them() -> None:
    """Millions of tiny elements would each become a parser object: the walk counts first."""
    data = Path(CT).read_bytes()
    item = element_bytes((0x0040, 0xA040), "CS", b"TEXT", False)  # 12 bytes
    contents = item * (MAX_ELEMENTS + 1)
    bomb = _sequence_header(8 + len(contents), False) + _item_header(len(contents)) + contents
    error = _reason(before_pixels(data, bomb))
    assert error.reason == "too_large"
    assert f"more than {MAX_ELEMENTS} data elements" in error.message
    # a header just within the limit is read (the file's own elements count too)
    fits = item * (MAX_ELEMENTS // 2)
    ok = _sequence_header(8 + len(fits), False) + _item_header(len(fits)) + fits
    assert split_instance(before_pixels(data, ok)).frames
