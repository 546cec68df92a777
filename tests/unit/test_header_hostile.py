"""Hostile headers that the compiled core declines: the pydicom path reads them without failing.

An element that pydicom cannot convert is kept as UN with its bytes, in the JSON and the element
rows alike. Each case here made `header_records` (or the split) raise before, so the worker
quarantined the file as an internal error; they were found by mutating real files (random
bytes, lengths and VRs) and are written out by hand here. Expected values come from the bytes
each case puts in the file.
"""

from __future__ import annotations

import base64
import json
import struct
from collections.abc import Iterator

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
    swallowing,
)
from crafted import element_bytes as element
from crafted import tag_bytes as tag
from pydicom.config import disable_value_validation

from dicomlake.config import DeidConfig
from dicomlake.dicom import header
from dicomlake.dicom.header import HeaderRecords, header_records
from dicomlake.dicom.native import dicomlake_native as native
from dicomlake.dicom.split import split_instance
from dicomlake.lake.schemas import partition_text

SECRET = bytes(range(32))
OPTIONS = {"deid-off": None, "deid-default": DeidConfig()}


def _records(data: bytes, options: DeidConfig | None) -> HeaderRecords:
    with disable_value_validation():  # as the worker reads headers
        return header_records(split_instance(data), SECRET, options)


def _top_rows(records: HeaderRecords) -> dict[str, dict]:
    rows = records.elements.to_pylist()
    return {row["tag"]: row for row in rows if row["depth"] == 0}


def _un(value: bytes) -> dict:
    return {"vr": "UN", "InlineBinary": base64.b64encode(value).decode()}


def _pixel_representation(vr: bytes) -> bytes:
    """CT_small with its PixelRepresentation (US, 1) written with VR ``vr``, and a sequence."""
    data = CT.read_bytes()
    at = data.index(b"\x28\x00\x03\x01US")
    data = data[:at] + b"\x28\x00\x03\x01" + vr + data[at + 6 :]
    return before_pixels(data, element((0x0008, 0x1115), "SQ", tag(ITEM) + bytes(4)))


# A known tag with a VR no reader knows, and a value its dictionary VR cannot hold: pydicom gave
# the UN fallback its dictionary VR back and failed on the bytes again.
UNKNOWN_VR = {
    "uid-not-utf8": ((0x0008, 0x1150), b"\xa1\xa2"),
    "sequence": ((0x0008, 0x1115), b"\x01\x02"),
    "attribute-tag": ((0x0028, 0x0009), b"\x01\x02"),
}

HOSTILE = {
    **{
        f"unknown-vr-{name}": before_pixels(CT.read_bytes(), element(at, "ZZ", value))
        for name, (at, value) in UNKNOWN_VR.items()
    },
    # An item tag where an element belongs (pydicom's VR 'NONE')
    "item-tag-explicit": before_pixels(CT.read_bytes(), tag(ITEM) + struct.pack("<L", 4) + b"abcd"),
    "item-tag-implicit": before_pixels(
        MR_IMPLICIT.read_bytes(), tag(ITEM) + struct.pack("<L", 4) + b"abcd"
    ),
    "private-creator-unknown-vr": before_pixels(
        CT.read_bytes(),
        element((0x0045, 0x0010), "LF", b"ACME 1") + element((0x0045, 0x1001), "LO", b"text"),
    ),
    # Read as each sequence is converted, to tell its items
    "pixel-representation-unknown-vr": _pixel_representation(b"HQ"),
    "pixel-representation-wrong-length": _pixel_representation(b"SL"),  # SL: 4 bytes a value
    # A top-level undefined-length private sequence, left unread by the split, whose creator
    # (FD: 8 bytes a value) cannot be read
    "private-sequence-creator-unreadable": before_pixels(
        CT.read_bytes(),
        element((0x0049, 0x0010), "FD", b"GEMS_CT_CARDIAC_001 ")
        + tag((0x0049, 0x1001))
        + b"SQ\0\0"
        + struct.pack("<L", UNDEFINED)
        + tag(ITEM)
        + struct.pack("<L", UNDEFINED)
        + element((0x0008, 0x0100), "SH", b"CODE")
        + tag(ITEM_END)
        + bytes(4)
        + tag(SEQ_END)
        + bytes(4),
    ),
}


def _cases() -> Iterator[object]:
    for name, data in HOSTILE.items():
        for label, options in OPTIONS.items():
            yield pytest.param(data, options, id=f"{name}-{label}")


@pytest.mark.parametrize(("data", "options"), list(_cases()))
def test_hostile_headers_give_json_and_rows_that_agree(
    data: bytes, options: DeidConfig | None
) -> None:
    records = _records(data, options)
    assert records.path == "reference"
    document = json.loads(records.header_json)
    rows = _top_rows(records)
    # Every top-level element has its row, with the VR its JSON gives it
    assert {key for key in document if not key.startswith("0002")} == set(rows) - {"7FE00010"}
    for key, row in rows.items():
        if key in document:
            assert document[key]["vr"] == row["vr"], key


@pytest.mark.parametrize("name", UNKNOWN_VR)
def test_a_value_pydicom_cannot_convert_is_kept_as_un_bytes(name: str) -> None:
    (group, number), value = UNKNOWN_VR[name]
    records = _records(HOSTILE[f"unknown-vr-{name}"], None)
    key = f"{group:04X}{number:04X}"
    assert json.loads(records.header_json)[key] == _un(value)
    row = _top_rows(records)[key]
    assert (row["vr"], row["value_text"], row["value_count"]) == ("UN", value.hex(), 1)


@pytest.mark.parametrize("name", ["item-tag-explicit", "item-tag-implicit"])
def test_an_item_tag_read_as_an_element_is_un_in_the_json(name: str) -> None:
    records = _records(HOSTILE[name], None)
    assert json.loads(records.header_json)["FFFEE000"] == _un(b"abcd")


def test_an_unreadable_private_creator_names_no_creator() -> None:
    records = _records(HOSTILE["private-creator-unknown-vr"], None)
    rows = _top_rows(records)
    assert (rows["00450010"]["vr"], rows["00450010"]["value_text"]) == ("UN", b"ACME 1".hex())
    assert (rows["00451001"]["value_text"], rows["00451001"]["private_creator"]) == ("text", None)


def test_a_lazy_private_sequence_with_an_unreadable_creator_is_read() -> None:
    records = _records(HOSTILE["private-sequence-creator-unreadable"], None)
    sequence = json.loads(records.header_json)["00491001"]
    assert sequence == {"vr": "SQ", "Value": [{"00080100": {"vr": "SH", "Value": ["CODE"]}}]}


def _swallowing_modality() -> tuple[bytes, list[str]]:
    """CT_small with a Modality length that takes in every element up to PatientName, and the
    identifying values it swallowed (as pydicom reads the untouched file)."""
    original = pydicom.dcmread(CT)
    data = swallowing(CT.read_bytes(), 0x00080060, 0x00100010)
    return data, [str(original.PatientName), str(original.InstitutionName)]


@pytest.mark.parametrize("path", ["fast", "reference"])
def test_a_code_string_that_swallowed_a_name_is_removed(path: str) -> None:
    data, identifying = _swallowing_modality()
    with disable_value_validation():
        split = split_instance(data)
        read = header._fast if path == "fast" else header._reference
        records = read(split, SECRET, DeidConfig())
    assert "00080060" not in json.loads(records.header_json)
    assert records.values["Modality"] is None
    assert records.identities is not None
    assert records.identities["deid_counts"]["removed_invalid"] == 1
    texts = [t for t in records.elements.column("value_text").to_pylist() if t]
    for value in identifying:
        assert value not in records.header_json
        assert not [t for t in texts if value in t]


def _swallowing_numbers() -> bytes:
    """CT_small given a RequestingPhysician, with a PixelPaddingValue length (SS, VM 1) that
    takes in every element up to that name: numbers holding the name's bytes."""
    ds = pydicom.dcmread(CT)
    ds.RequestingPhysician = "Numberfield^Olga"
    out = pydicom.filebase.DicomBytesIO()
    ds.save_as(out)
    return swallowing(out.getvalue(), 0x00280120, 0x00321032)


@pytest.mark.parametrize("path", ["fast", "reference"])
def test_numbers_that_swallowed_a_name_are_removed(path: str) -> None:
    with disable_value_validation():
        split = split_instance(_swallowing_numbers())
        read = header._fast if path == "fast" else header._reference
        records = read(split, SECRET, DeidConfig())
    assert "00280120" not in json.loads(records.header_json)
    assert "00280120" not in _top_rows(records)
    assert records.identities is not None
    assert records.identities["deid_counts"]["removed_invalid"] == 1
    # The numbers that held the name (pydicom's raw reading of the file) are nowhere
    raw = split_instance(_swallowing_numbers()).dataset.get_item(0x00280120).value
    numbers = struct.unpack(f"<{len(raw) // 2}h", raw)
    assert len(numbers) > 8
    assert ",".join(map(str, numbers[:8])) not in records.header_json


# Binary data of any VM that a bad length made swallow the elements after it, a name
# among them: (template, what the template is given, the swallowing tag, the last swallowed)
SWALLOWING_BINARY = {
    "numbers-of-any-vm": (CT, {"SimpleFrameList": [1, 2]}, 0x00081161, 0x00100040),
    "words-explicit": (
        CT,
        {"RedPaletteColorLookupTableData": bytes(8), "RequestingPhysician": "Numberfield^Olga"},
        0x00281201,
        0x00321032,
    ),
    "words-implicit": (
        MR_IMPLICIT,
        {"RedPaletteColorLookupTableData": bytes(8), "RequestingPhysician": "Numberfield^Olga"},
        0x00281201,
        0x00321032,
    ),
}


def _swallowing_binary(name: str) -> tuple[bytes, int, bytes]:
    """The file, the swallowing tag, and the bytes of the last element it swallowed."""
    template, values, first, last = SWALLOWING_BINARY[name]
    ds = pydicom.dcmread(template)
    for keyword, value in values.items():
        setattr(ds, keyword, value)
    out = pydicom.filebase.DicomBytesIO()
    ds.save_as(out)
    swallowed = ds[last].value
    text = str(swallowed).encode() if not isinstance(swallowed, bytes) else swallowed
    return swallowing(out.getvalue(), first, last), first, text


def _swallowing_safe_private() -> tuple[bytes, int, bytes]:
    """CT_small with a safe-listed private B_matrix (FD) that takes in every element up to an
    ImageComments naming someone, padded to whole doubles so that the numbers read."""
    for pad in range(0, 8, 2):
        ds = pydicom.dcmread(CT)
        block = ds.private_block(0x0019, "SIEMENS MR HEADER", create=True)
        block.add_new(0x27, "FD", [1.0, 2.0])
        ds.ImageComments = "Wordsworth^Petra" + "x" * pad
        out = pydicom.filebase.DicomBytesIO()
        ds.save_as(out)
        data = swallowing(out.getvalue(), block.get_tag(0x27), 0x00204000)
        read = pydicom.dcmread(pydicom.filebase.DicomBytesIO(data))
        if read.get_item(block.get_tag(0x27)).length % 8 == 0:
            return data, block.get_tag(0x27), b"Wordsworth^Petra"
    raise AssertionError("no padding gives whole doubles")


@pytest.mark.parametrize("path", ["fast", "reference"])
@pytest.mark.parametrize("name", [*SWALLOWING_BINARY, "safe-private-numbers"])
def test_binary_data_that_swallowed_a_name_is_removed(name: str, path: str) -> None:
    if name == "safe-private-numbers":
        data, first, name_bytes = _swallowing_safe_private()
    else:
        data, first, name_bytes = _swallowing_binary(name)
    options = DeidConfig(safe_private=True)
    with disable_value_validation():
        split = split_instance(data)
        assert name_bytes in split.dataset.get_item(first).value  # the name is in its bytes
        read = header._fast if path == "fast" else header._reference
        records = read(split, SECRET, options)
    assert f"{first:08X}" not in json.loads(records.header_json)
    assert f"{first:08X}" not in _top_rows(records)
    assert records.identities is not None
    assert records.identities["deid_counts"]["removed_invalid"] == 1


def _retyped(at: int, vr: bytes, value: bytes) -> bytes:
    """CT_small with the element at tag ``at`` given another VR and value (of its length)."""
    data = bytearray(CT.read_bytes())
    elem = pydicom.dcmread(CT).get_item(at)
    assert len(value) == elem.length
    data[elem.value_tell - 4 : elem.value_tell - 2] = vr
    data[elem.value_tell : elem.value_tell + elem.length] = value
    return bytes(data)


# Found by comparing the two header paths over mutated files (VR swaps, swallowing lengths)
RETYPED = {
    # StudyID (action Z) as FD with 4 bytes: it cannot be read, so it is removed, not emptied;
    # the core declines it for pydicom to do so
    "unreadable-emptied": (0x00200010, b"FD", b"1CT1", 0, False),
    # SeriesNumber as AE holding a NUL: AE keeps what is not white space, the NUL included;
    # the core reads it and removes it as deid does
    "ae-with-a-nul": (0x00200011, b"AE", b"1\x00", 1, True),
}


@pytest.mark.parametrize("name", RETYPED)
def test_both_header_paths_remove_what_they_cannot_keep(name: str) -> None:
    at, vr, value, invalid, read_by_core = RETYPED[name]
    data = _retyped(at, vr, value)
    with disable_value_validation():
        reference = header._reference(split_instance(data), SECRET, DeidConfig())
        try:
            fast = header._fast(split_instance(data), SECRET, DeidConfig())
        except native.Declined:
            fast = None
    assert (fast is not None) == read_by_core
    fast = fast or reference
    assert f"{at:08X}" not in json.loads(reference.header_json)
    assert reference.identities is not None
    assert reference.identities["deid_counts"]["removed_invalid"] == invalid
    assert (fast.header_json, fast.identities) == (reference.header_json, reference.identities)


@pytest.mark.parametrize(
    ("value", "kept"),
    [
        ("CT", "CT"),
        ("RTSTRUCT", "RTSTRUCT"),
        ("ST", "ST"),  # retired (SPECT), still a defined term
        ("CT\\MR", None),
        ("DOE JANE", None),  # a valid code string: a name
        ("SMITH", None),
        ("ct", None),
        ("CT/..", None),
        ("CT" * 150, None),
        ("CT\x00", None),
        ("\u00c9CHO", None),
        ("", None),
        (None, None),
    ],
)
def test_only_a_defined_term_of_modality_names_a_partition(value: str | None, kept: str) -> None:
    assert partition_text(value) == kept
