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
MR_BIG_ENDIAN = Path(get_testdata_file("MR_small_bigendian.dcm"))  # explicit VR big endian
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


def undefined_item(*elements: bytes) -> bytes:
    """An item of undefined length holding ``elements``, little endian."""
    return tag_bytes(ITEM) + b"\xff" * 4 + b"".join(elements) + tag_bytes(ITEM_END) + bytes(4)


def big_endian_un(tag: tuple[int, int], items: bytes) -> bytes:
    """MR_small_bigendian.dcm with an undefined-length UN element ``tag`` before its pixel
    data: ``items`` and its sequence delimiter implicit VR little endian (PS3.5 6.2.2)."""
    data = MR_BIG_ENDIAN.read_bytes()
    un = struct.pack(">HH", *tag) + b"UN\0\0" + b"\xff" * 4 + items
    offset = data.rindex(b"\x7f\xe0\x00\x10")
    return data[:offset] + un + tag_bytes(SEQ_END) + bytes(4) + data[offset:]


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
