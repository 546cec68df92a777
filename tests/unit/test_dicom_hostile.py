"""Hostile inputs built from real corpus files: deep nesting, out-of-range numbers, deflate
bombs, and identifiers that must not reach an error message."""

from __future__ import annotations

import json
import struct
import time
from pathlib import Path

import pydicom
import pytest
from pydicom.data import get_testdata_file

from dicomlake.dicom import element_rows, header_json, promoted_values, split_instance, split_stream
from dicomlake.dicom.deid import deidentify
from dicomlake.dicom.walk import MAX_DEPTH
from dicomlake.errors import DicomParseError

CT = Path(get_testdata_file("CT_small.dcm"))  # explicit VR little endian
MR_IMPLICIT = Path(get_testdata_file("MR_small_implicit.dcm"))
CONTENT_SEQUENCE = (0x0040, 0xA730)  # kept by de-identification, items and all
ITEM, ITEM_END, SEQ_END = (0xFFFE, 0xE000), (0xFFFE, 0xE00D), (0xFFFE, 0xE0DD)
UNDEFINED = 0xFFFFFFFF


def _tag(tag: tuple[int, int]) -> bytes:
    return struct.pack("<HH", *tag)


def _element(tag: tuple[int, int], vr: str, value: bytes, implicit: bool = False) -> bytes:
    if implicit:
        return _tag(tag) + struct.pack("<L", len(value)) + value
    if vr in ("OB", "OW", "SQ", "UN", "UT", "UC", "UR"):
        return _tag(tag) + vr.encode() + b"\0\0" + struct.pack("<L", len(value)) + value
    return _tag(tag) + vr.encode() + struct.pack("<H", len(value)) + value


def _sequence_header(length: int, implicit: bool) -> bytes:
    vr = b"" if implicit else b"SQ\0\0"
    return _tag(CONTENT_SEQUENCE) + vr + struct.pack("<L", length)


def nested(depth: int, defined: bool, implicit: bool = False) -> bytes:
    """ContentSequence items nested ``depth`` deep, a ValueType in the innermost item.

    Built in one pass (the lengths of defined-length levels computed, not re-encoded)."""
    inner = _element((0x0040, 0xA040), "CS", b"INNERMOST ", implicit)
    if not defined:
        opening = _sequence_header(UNDEFINED, implicit) + _tag(ITEM) + struct.pack("<L", UNDEFINED)
        closing = _tag(ITEM_END) + b"\0" * 4 + _tag(SEQ_END) + b"\0" * 4
        return opening * depth + inner + closing * depth
    header = len(_sequence_header(0, implicit))
    parts, size = [], len(inner)
    for _ in range(depth):  # innermost first; sizes grow outwards
        parts.append(_sequence_header(size + 8, implicit) + _tag(ITEM) + struct.pack("<L", size))
        size += header + 8
    return b"".join(reversed(parts)) + inner


def before_pixels(data: bytes, insert: bytes) -> bytes:
    """``data`` with ``insert`` placed just before its top-level pixel data element."""
    offset = data.rindex(b"\xe0\x7f\x10\x00")
    return data[:offset] + insert + data[offset:]


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
    blob = _element((0x0009, 0x1001), "OB", nested(10_000, defined=True))
    split = split_instance(before_pixels(CT.read_bytes(), blob))
    assert split.dataset[0x00091001].value == nested(10_000, defined=True)
