"""Damaged and odd files made from real corpus files: bytes inserted or replaced where a DICOM
writer would refuse or fix them, or values pydicom writes unchecked."""

from __future__ import annotations

import struct
import warnings
from pathlib import Path

import pydicom
from pydicom.data import get_testdata_file
from pydicom.datadict import dictionary_VR
from pydicom.dataelem import RawDataElement
from pydicom.tag import Tag

CT = Path(get_testdata_file("CT_small.dcm"))  # explicit VR little endian
MR_IMPLICIT = Path(get_testdata_file("MR_small_implicit.dcm"))
ITEM, ITEM_END, SEQ_END = (0xFFFE, 0xE000), (0xFFFE, 0xE00D), (0xFFFE, 0xE0DD)
UNDEFINED = 0xFFFFFFFF
LONG_VRS = ("OB", "OD", "OF", "OL", "OV", "OW", "SQ", "SV", "UC", "UN", "UR", "UT", "UV")


def tag_bytes(tag: tuple[int, int]) -> bytes:
    """A (group, element) tag, little endian."""
    return struct.pack("<HH", *tag)


def element_bytes(tag: tuple[int, int], vr: str, value: bytes, implicit: bool = False) -> bytes:
    """One data element, little endian, explicit VR unless ``implicit``."""
    if implicit:
        return tag_bytes(tag) + struct.pack("<L", len(value)) + value
    if vr in LONG_VRS:
        return tag_bytes(tag) + vr.encode() + b"\0\0" + struct.pack("<L", len(value)) + value
    return tag_bytes(tag) + vr.encode() + struct.pack("<H", len(value)) + value


def before_pixels(data: bytes, insert: bytes) -> bytes:
    """``data`` with ``insert`` placed just before its top-level pixel data element."""
    offset = data.rindex(b"\xe0\x7f\x10\x00")
    return data[:offset] + insert + data[offset:]


def rewritten(path: Path, **values: object) -> bytes:
    """The corpus file at ``path`` with attributes set; text is written as it is, unchecked."""
    ds = pydicom.dcmread(path)
    with warnings.catch_warnings():  # pydicom warns on the values it is made to write
        warnings.simplefilter("ignore")
        for keyword, value in values.items():
            if isinstance(value, str):
                tag = Tag(keyword)
                raw = value.encode() + b" " * (len(value) % 2)
                ds[tag] = RawDataElement(tag, dictionary_VR(tag), len(raw), raw, 0, False, True)
            else:
                setattr(ds, keyword, value)
        out = pydicom.filebase.DicomBytesIO()
        ds.save_as(out)
    return out.getvalue()


def swallowing(data: bytes, first: int, last: int) -> bytes:
    """``data`` (little endian) with the length of element ``first`` made to take in every
    element after it up to ``last``: the header still parses, and ``first`` holds their
    bytes, as a bad length leaves it."""
    read = pydicom.dcmread(pydicom.filebase.DicomBytesIO(data))
    start, end = read.get_item(first), read.get_item(last)
    length = end.value_tell + end.length - start.value_tell
    wide = start.is_implicit_VR or start.VR in LONG_VRS  # a 4-byte length
    field = struct.pack("<L", length) if wide else struct.pack("<H", length)
    out = bytearray(data)
    out[start.value_tell - len(field) : start.value_tell] = field
    return bytes(out)
