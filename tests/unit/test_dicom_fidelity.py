"""Header fidelity on real files changed in one place: what pydicom (and DCMTK, with the
matching option) read from odd but readable encodings, dicomlake reads the same."""

from __future__ import annotations

import json

import pytest
from crafted import (
    CT,
    ITEM,
    ITEM_END,
    SEQ_END,
    before_pixels,
    element_bytes,
    rewritten,
    tag_bytes,
)

from dicomlake.dicom import element_rows, header_json, split_instance

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
