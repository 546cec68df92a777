"""`walk.ends_in_elements`: binary data that ends in whole elements (what a value holds when a
bad length made it swallow the elements after it), and real data that does not."""

from __future__ import annotations

import json
import random
import struct
import warnings

import pydicom
import pytest
from corpus import corpus_id, split_paths
from crafted import CT, ITEM, SEQ_END, UNDEFINED
from crafted import element_bytes as element
from crafted import tag_bytes as tag

from dicomlake.config import DeidConfig
from dicomlake.dicom import header
from dicomlake.dicom.deid import _NUMBER_VRS, _as_read, _known
from dicomlake.dicom.split import split_instance
from dicomlake.dicom.values import BINARY_VRS
from dicomlake.dicom.walk import ends_in_elements

LUT_DATA = 0x00281201  # RedPaletteColorLookupTableData, OW
NAME = element((0x0032, 0x1032), "PN", b"Numberfield^Olga")
PHYSICIAN_ID = element((0x0032, 0x1033), "LO", b"ID7 ")


def _ends(value: bytes, implicit: bool = False, little: bool = True) -> bool:
    return ends_in_elements(value, LUT_DATA, implicit, little, _known)


def test_words_then_a_name() -> None:
    assert _ends(b"\x00\x01" * 4 + NAME)
    assert _ends(b"\x00\x01" * 3 + b"\x07" + NAME)  # an odd own length too
    assert _ends(b"\x00\x01" * 4 + NAME + PHYSICIAN_ID)


def test_implicit_and_big_endian_elements() -> None:
    implicit = element((0x0032, 0x1032), "PN", b"Numberfield^Olga", implicit=True)
    assert _ends(bytes(8) + implicit, implicit=True)
    assert not _ends(bytes(8) + implicit)  # an explicit VR dataset would not hold it so
    big = struct.pack(">HH", 0x0032, 0x1032) + b"PN" + struct.pack(">H", 16) + b"Numberfield^Olga"
    assert _ends(bytes(8) + big, little=False)
    assert not _ends(bytes(8) + big)


def test_a_swallowed_sequence_of_undefined_length() -> None:
    item = tag(ITEM) + struct.pack("<L", UNDEFINED) + NAME + tag((0xFFFE, 0xE00D)) + bytes(4)
    sequence = tag((0x0032, 0x1064)) + b"SQ\0\0" + struct.pack("<L", UNDEFINED) + item
    assert _ends(bytes(8) + sequence + tag(SEQ_END) + bytes(4))
    assert not _ends(bytes(8) + sequence)  # no delimiter: no whole element


@pytest.mark.parametrize(
    "value",
    [
        pytest.param(bytes(8) + element((0x0032, 0x1032), "PN", b""), id="only-empty"),
        pytest.param(bytes(8) + NAME + b"\0\0", id="not-at-the-end"),
        pytest.param(
            bytes(8) + NAME + element((0x0028, 0x1101), "US", b"\1\0"), id="tags-descending"
        ),
        pytest.param(bytes(8) + element((0x0028, 0x1101), "US", b"\1\0"), id="tag-before-own"),
        pytest.param(bytes(8) + element((0x0032, 0x10FF), "LO", b"ID7 "), id="unknown-tag"),
        pytest.param(bytes(8) + element((0xFFFE, 0xE000), "OB", b"ID7 "), id="item-tag"),
        pytest.param(bytes(8) + tag((0x0032, 0x1032)) + b"P\0" + bytes(2), id="no-vr"),
        pytest.param(b"", id="empty"),
    ],
)
def test_what_is_not_a_run_of_elements(value: bytes) -> None:
    assert not _ends(value)
    assert not _ends(value, implicit=True) or value.endswith(b"ID7 ")


def test_a_private_element_counts_as_an_element() -> None:
    private = element((0x0033, 0x1001), "LO", b"secret")
    assert _ends(bytes(8) + private)


def test_random_data_is_no_run_of_elements() -> None:
    rng = random.Random(5)
    for size in (9, 64, 4096, 1 << 16):
        data = rng.randbytes(size)
        assert not _ends(data)
        assert not _ends(data, implicit=True)


@pytest.mark.parametrize("path", split_paths(), ids=corpus_id)
def test_no_binary_element_of_a_real_file_ends_in_elements(path) -> None:
    """What the rule would remove from a real header: nothing."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ds = pydicom.dcmread(path, force=True)
        implicit, little = (bool(flag) for flag in ds.original_encoding)
        for elem in ds.iterall():
            vr, at = elem.VR, int(elem.tag)
            # Bytes and numbers of standard elements (not pixel data): what the rule sees
            group = at >> 16
            if vr not in _NUMBER_VRS | BINARY_VRS or group in (0x7FE0, 0xFFFE) or group % 2:
                continue
            value = _as_read(elem, little)
            assert not ends_in_elements(value, at, implicit, little, _known), elem.tag


def _long_run(count: int) -> bytes:
    """``count`` empty private elements, tags ascending, then two stray bytes: each of them
    starts a run that is read to the end before it fails."""
    return b"".join(element((0x0033, 0x1000 + n), "LO", b"") for n in range(count)) + b"\0\0"


def test_runs_too_long_to_rule_out_count_as_elements() -> None:
    # Read from each start, these runs would take 20,000**2 / 2 element headers
    assert _ends(bytes(8) + _long_run(20_000))
    assert not _ends(bytes(8) + _long_run(20))  # within the budget: ruled out


@pytest.mark.parametrize("path", ["fast", "reference"])
def test_a_value_of_long_runs_is_removed_by_both_header_paths(path: str) -> None:
    ds = pydicom.dcmread(CT)
    ds.add_new(0x0008041B, "OB", _long_run(20_000))  # RecordKey, kept by the profile
    out = pydicom.filebase.DicomBytesIO()
    ds.save_as(out)
    split = split_instance(out.getvalue())
    read = header._fast if path == "fast" else header._reference
    records = read(split, bytes(32), DeidConfig())
    assert "0008041B" not in json.loads(records.header_json)
    assert records.identities is not None
    assert records.identities["deid_counts"]["removed_invalid"] == 1
