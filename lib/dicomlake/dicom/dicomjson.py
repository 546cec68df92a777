"""The whole header as DICOM JSON (PS3.18 F.2), bulk data left out."""

from __future__ import annotations

import base64
import json
import math
import re
from typing import Any

import numpy as np
from pydicom.dataset import Dataset
from pydicom.jsonrep import convert_to_python_number
from pydicom.valuerep import FLOAT_VR, INT_VR, VR

from dicomlake.dicom.values import (
    BINARY_VRS,
    PIXEL_TAGS,
    elements,
    reads_as_number,
    significant,
    values_of,
)

BULK_DATA_URI = "dicomlake:bulk"
BULK_THRESHOLD = 1024  # binary values longer than this many bytes are left out


def header_json(dataset: Dataset) -> str:
    """Return the header as DICOM JSON, without file meta and without bulk data.

    Pixel data and binary values (OB, OD, OF, OL, OV, OW, UN) longer than
    `BULK_THRESHOLD` bytes, at any depth, are replaced by ``{"BulkDataURI":
    "dicomlake:bulk"}``: their bytes stay in the rebuilt file, not in the table.

    pydicom's own ``to_json`` compares its threshold with the base64 length and raises
    on an unconvertible value; this walk uses the byte length and keeps such a value as
    inline UN bytes instead.

    ``InlineBinary`` is little endian (PS3.18 F.2.7), as DCMTK's ``dcm2json`` writes it: the
    words of OW, OL, OF, OD and OV values read from a big endian dataset are swapped.
    """
    little = getattr(dataset, "original_encoding", (None, None))[1] is not False
    return json.dumps(_json_dict(dataset, little), separators=(",", ":"))


def _json_dict(dataset: Dataset, little: bool) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for elem in elements(dataset):
        key = f"{elem.tag:08X}"
        if elem.VR == "SQ":
            out[key] = {"vr": "SQ", "Value": [_json_dict(item, little) for item in elem.value]}
        elif elem.tag in PIXEL_TAGS or (
            elem.VR in BINARY_VRS and len(elem.value or b"") > BULK_THRESHOLD
        ):
            out[key] = {"vr": elem.VR, "BulkDataURI": BULK_DATA_URI}
        else:
            out[key] = _element_json(elem, little)
    return out


# VRs whose JSON "Value" is the element's values as they are (numbers made numbers): the
# bulk of any header, written here without pydicom's general per-element path.
_NUMBER_VRS = (INT_VR - {VR.AT}) | {VR.US_SS} | FLOAT_VR
_PLAIN_VRS = frozenset(
    {"AE", "AS", "CS", "DA", "DT", "LO", "LT", "SH", "ST", "TM", "UC", "UI", "UR", "UT"}
    | _NUMBER_VRS
)

_VRS = frozenset(str(vr) for vr in VR)

# Bytes per word of the binary VRs whose byte order follows the dataset's
_WORD_BYTES = {"OW": 2, "OL": 4, "OF": 4, "OD": 8, "OV": 8}


def _little_endian(value: bytes, width: int) -> bytes:
    """Big endian words as little endian; a trailing partial word is kept as it is."""
    whole = len(value) - len(value) % width
    words = np.frombuffer(value, f">u{width}", whole // width).astype(f"<u{width}")
    return words.tobytes() + value[whole:]


# PS3.5 Table 6.2-1: the most bytes a DS or IS value holds (without its padding). A longer one
# is still read as its number for the rows (writers such as ITK write 17 digits), but the JSON
# keeps its text, as dcm2json does: a double holds fewer digits than it may have.
_MOST_BYTES = {"DS": 16, "IS": 12}
_INTEGER = re.compile(r"[+-]?[0-9]+")


def _numbers(values: list[Any], vr: str) -> list[Any]:
    """The values as JSON numbers; one that is no finite number (a DS or IS string such as
    ``1.06,0.206``, a NaN, an IS such as ``1e2``, a DS of 17 bytes) stays the string it is, as
    DCMTK's dcm2json writes it, so that the element keeps its VR; an empty one among several
    is null."""
    if vr not in _MOST_BYTES:
        try:
            numbers = convert_to_python_number(values, vr)
            if all(n is None or math.isfinite(n) for n in numbers):
                return numbers
        except (TypeError, ValueError, OverflowError):
            pass
    return [_number_or_text(value, vr) for value in values]


def _not_a_number(value: Any, vr: str) -> bool:
    """A DS or IS value that is no JSON number: not one by the standard's grammar
    (`reads_as_number`), or longer than its VR allows."""
    text = str(value)
    return not reads_as_number(vr, text) or len(text) > _MOST_BYTES.get(vr, len(text))


def _number_or_text(value: Any, vr: str) -> Any:
    if value == "":
        return None
    if _not_a_number(value, vr):
        return str(value)
    if vr == "DS" and _INTEGER.fullmatch(str(value)):
        # Its digits exactly, as dcm2json writes them: 16 are more than a double holds
        return int(str(value))
    try:
        number = convert_to_python_number(value, vr)
    except (TypeError, ValueError, OverflowError):
        return str(value)
    return number if number is None or math.isfinite(number) else str(value)


def _element_json(elem: Any, little: bool) -> dict[str, Any]:
    vr = elem.VR
    if vr not in _VRS:  # an item tag read as an element (pydicom's VR 'NONE'), say
        return _unknown(elem)
    try:
        if not little and vr in _WORD_BYTES and elem.value:
            swapped = _little_endian(elem.value, _WORD_BYTES[vr])
            return {"vr": vr, "InlineBinary": base64.b64encode(swapped).decode("ascii")}
        if vr not in _PLAIN_VRS and vr not in ("AT", "PN"):
            return elem.to_json_dict(None, BULK_THRESHOLD)
        values = significant(vr, values_of(elem.value))
        if not values:
            return {"vr": vr}
        if vr == "AT":  # pydicom reads a value and a partial tag as a list it cannot write
            values = [f"{int(v):08X}" for v in values]
        elif vr == "PN":
            values = [_person_name(str(v)) for v in values]
        elif vr in _NUMBER_VRS:
            values = _numbers(values, vr)
        return {"vr": vr, "Value": values}
    except Exception:  # a value pydicom read but cannot write back
        return _unknown(elem)


_NAME_GROUP_KEYS = ("Alphabetic", "Ideographic", "Phonetic")


def _person_name(text: str) -> dict[str, str] | None:
    """One person name (`values.person_name`'s text) as its JSON object; null when empty
    (PS3.18 F.2.5). Groups past the third are left out, as pydicom reads them."""
    return dict(zip(_NAME_GROUP_KEYS, text.split("="), strict=False)) if text else None


def _unknown(elem: Any) -> dict[str, Any]:
    """The element as UN, its bytes (or its values' text) kept inline."""
    value = elem.value
    raw = value if isinstance(value, bytes) else "\\".join(map(str, values_of(value))).encode()
    return {"vr": "UN", "InlineBinary": base64.b64encode(raw).decode("ascii")}
