"""Header fidelity on real files changed in one place: what pydicom (and DCMTK, with the
matching option) read from odd but readable encodings, dicomlake reads the same."""

from __future__ import annotations

import base64
import json
import struct

import pydicom
import pytest
from crafted import (
    CT,
    ITEM,
    ITEM_END,
    MR_IMPLICIT,
    SEQ_END,
    before_pixels,
    element_bytes,
    rewritten,
    tag_bytes,
)

from dicomlake.dicom import element_rows, header_json, split_instance
from dicomlake.dicom.deid import deidentify

SERIES_UID = b"1.2.826.0.1.3680043.9.7777.10"  # 30 bytes: even, no padding


def _un_sequence(implicit_items: bool) -> bytes:
    """ReferencedSeriesSequence (0008,1115) written as UN with undefined length, its item's
    SeriesInstanceUID in implicit VR (PS3.5 6.2.2) or explicit VR (as some writers do)."""
    element = element_bytes((0x0020, 0x000E), "UI", SERIES_UID, implicit=implicit_items)
    return (
        tag_bytes((0x0008, 0x1115))
        + b"UN\0\0\xff\xff\xff\xff"
        + tag_bytes(ITEM)
        + b"\xff" * 4
        + element
        + tag_bytes(ITEM_END)
        + bytes(4)
        + tag_bytes(SEQ_END)
        + bytes(4)
    )


@pytest.mark.parametrize("implicit_items", [True, False], ids=["implicit", "explicit"])
def test_undefined_length_un_items_are_read_in_their_own_encoding(implicit_items: bool) -> None:
    split = split_instance(before_pixels(CT.read_bytes(), _un_sequence(implicit_items)))
    document = json.loads(header_json(split.dataset))
    # dcmdump +ui (implicit) / -ui (explicit) shows the same sequence, item and UID
    assert document["00081115"] == {
        "vr": "SQ",
        "Value": [{"0020000E": {"vr": "UI", "Value": [SERIES_UID.decode()]}}],
    }
    rows = element_rows(split.dataset)
    at = rows["path"].index("00081115[0].0020000E")
    assert (rows["vr"][at], rows["value_text"][at], rows["depth"][at]) == (
        "UI",
        SERIES_UID.decode(),
        1,
    )


def test_invalid_ds_and_is_strings_keep_their_vr_and_text_in_json() -> None:
    data = rewritten(
        CT,
        PixelSpacing="1.06,0.206",
        SliceThickness="10.50/ 15.00",
        SeriesNumber="12A",
        ImagePositionPatient="1.5\\abc\\2",
    )
    document = json.loads(header_json(split_instance(data).dataset))
    # What DCMTK's dcm2json writes for the same file (2 there, 2.0 here: the same JSON number)
    assert document["00280030"] == {"vr": "DS", "Value": ["1.06,0.206"]}
    assert document["00180050"] == {"vr": "DS", "Value": ["10.50/ 15.00"]}
    assert document["00200011"] == {"vr": "IS", "Value": ["12A"]}
    assert document["00200032"] == {"vr": "DS", "Value": [1.5, "abc", 2]}
    # Valid values stay numbers
    assert document["00280010"] == {"vr": "US", "Value": [128]}


def _real_world_value_mapping(undefined: bool) -> bytes:
    """RealWorldValueMappingSequence (0040,9096), implicit VR, one item whose first and last
    values mapped ('US or SS': SS where the image's PixelRepresentation is 1) are -5, -100."""
    item = element_bytes((0x0040, 0x9216), "", struct.pack("<h", -5), implicit=True)
    item += element_bytes((0x0040, 0x9211), "", struct.pack("<h", -100), implicit=True)
    items = tag_bytes(ITEM) + struct.pack("<L", len(item)) + item
    if undefined:
        return tag_bytes((0x0040, 0x9096)) + b"\xff" * 4 + items + tag_bytes(SEQ_END) + bytes(4)
    return tag_bytes((0x0040, 0x9096)) + struct.pack("<L", len(items)) + items


@pytest.mark.parametrize("undefined", [True, False], ids=["undefined", "defined"])
def test_us_or_ss_in_an_item_follows_the_images_pixel_representation(undefined: bool) -> None:
    assert pydicom.dcmread(MR_IMPLICIT).PixelRepresentation == 1
    data = before_pixels(MR_IMPLICIT.read_bytes(), _real_world_value_mapping(undefined))
    expected = {"00409211": {"vr": "SS", "Value": [-100]}, "00409216": {"vr": "SS", "Value": [-5]}}
    document = json.loads(header_json(split_instance(data).dataset))
    assert document["00409096"]["Value"] == [expected]
    rows = element_rows(split_instance(data).dataset)
    got = {
        path: (vr, text)
        for path, vr, text in zip(rows["path"], rows["vr"], rows["value_text"], strict=True)
        if path.startswith("00409096[0].")
    }
    assert got == {"00409096[0].00409211": ("SS", "-100"), "00409096[0].00409216": ("SS", "-5")}
    clean, _ = deidentify(split_instance(data).dataset, bytes(32))
    assert json.loads(header_json(clean))["00409096"]["Value"] == [expected]


def test_inline_binary_of_a_big_endian_file_is_little_endian() -> None:
    ds = pydicom.dcmread(CT)
    ds.file_meta.TransferSyntaxUID = pydicom.uid.ExplicitVRBigEndian
    # Two OW words, 0x0102 and 0x0304, as a big endian file holds them
    ds.add_new(0x00281201, "OW", b"\x01\x02\x03\x04")
    out = pydicom.filebase.DicomBytesIO()
    pydicom.dcmwrite(out, ds, little_endian=False, implicit_vr=False, force_encoding=True)
    assert b"\x00\x28\x12\x01OW\0\0\0\0\0\x04\x01\x02\x03\x04" in out.getvalue()
    document = json.loads(header_json(split_instance(out.getvalue()).dataset))
    # PS3.18 F.2.7 (and DCMTK's dcm2json): InlineBinary holds the little endian words
    assert document["00281201"] == {"vr": "OW", "InlineBinary": "AgEEAw=="}
    assert base64.b64decode("AgEEAw==") == b"\x02\x01\x04\x03"
