"""Safe access to header values: a malformed value never stops a row from being built."""

from __future__ import annotations

import contextlib
import functools
import re
import struct
import warnings
from collections.abc import Callable

from pydicom import config as pydicom_config
from pydicom.charset import default_encoding
from pydicom.datadict import tag_for_keyword
from pydicom.dataelem import DataElement, RawDataElement
from pydicom.dataset import Dataset
from pydicom.multival import MultiValue
from pydicom.tag import BaseTag
from pydicom.valuerep import AMBIGUOUS_VR, BYTES_VR, CUSTOMIZABLE_CHARSET_VR
from pydicom.values import convert_value, converters

BINARY_VRS = frozenset(str(vr) for vr in BYTES_VR)
# VRs whose values are text, a single one held by pydicom as a ``str``
TEXT_VRS = frozenset(
    ["AE", "AS", "CS", "DA", "DT", "LO", "LT", "SH", "ST", "TM", "UC", "UI", "UR", "UT"]
)
PIXEL_TAGS = frozenset({0x7FE00008, 0x7FE00009, 0x7FE00010})

# Raw elements `element` leaves to pydicom's full conversion: VRs it looks up or corrects
# (implicit, UN, ambiguous), and sequences.
_PYDICOM_VRS = frozenset({"SQ", "UN", *AMBIGUOUS_VR})
_CHARSET_VRS = frozenset(str(vr) for vr in CUSTOMIZABLE_CHARSET_VR)
NUMBER_FORMATS = {str(vr): c[1] for vr, c in converters.items() if isinstance(c, tuple)}
"""The struct format of each binary number VR (US "H", FD "d", ...), from pydicom's converters."""
# One number of each of these VRs, big and little endian (as indexed by ``is_little_endian``)
_ONE_NUMBER = {
    vr: (struct.Struct(">" + form), struct.Struct("<" + form))
    for vr, form in NUMBER_FORMATS.items()
}


def elements(dataset: Dataset) -> list[DataElement]:
    """Return the dataset's elements in tag order, converted from their raw form.

    An element whose value pydicom cannot convert is returned with VR UN and its raw
    bytes, so that it is kept as binary rather than lost.
    """
    with warnings.catch_warnings():
        # Values outside their VR's rules warn; they are still kept as read
        warnings.simplefilter("ignore")
        return [_element(dataset, tag, elem) for tag, elem in sorted(dataset.items(), key=_key)]


def _key(item: tuple[BaseTag, object]) -> int:
    return int(item[0])


def _element(dataset: Dataset, tag: BaseTag, elem: object) -> DataElement:
    if isinstance(elem, DataElement):
        return _inheriting(dataset, elem)  # converted already (as a de-identified copy's are)
    try:
        return converted_element(dataset, tag)
    except Exception:
        value = elem.value if isinstance(elem, RawDataElement) else b""
        unread = DataElement(
            tag, "OB", value if isinstance(value, bytes) else b"", already_converted=True
        )
        # Set after: given "UN", pydicom restores a known tag's dictionary VR (its
        # replace_un_with_known_vr) and converts the bytes again, as it failed to here
        unread.VR = "UN"
        # Kept in the dataset, so every later reading sees the same: pydicom may have stored
        # the element converted before failing (a sequence, as it read PixelRepresentation)
        dataset._dict[tag] = unread
        return unread


def converted_element(dataset: Dataset, tag: BaseTag) -> DataElement:
    """``dataset[tag]``: the converted element, kept in the dataset for the next access.

    Most raw elements of a header are converted here directly with pydicom's own value
    converter, the result pydicom's ``Dataset.__getitem__`` gives at a third of its cost;
    the rest (see `_PYDICOM_VRS`), and text whose decoding depends on the character set
    (anything but ASCII without escape sequences), take pydicom's full path.
    Raises what pydicom raises for a value it cannot convert.
    """
    raw = dataset.get_item(tag, keep_deferred=True)
    if isinstance(raw, DataElement):
        return _inheriting(dataset, raw)
    if not direct(raw):
        return _inheriting(dataset, dataset[tag])
    vr = raw.VR
    converted = DataElement(
        tag,
        vr,
        convert_value(vr, raw, default_encoding),
        raw.value_tell,
        raw.length == 0xFFFFFFFF,
        already_converted=True,
    )
    dataset[tag] = converted
    return converted


def direct(raw: RawDataElement) -> bool:
    """Whether pydicom's value converter alone gives what ``Dataset.__getitem__`` gives for
    ``raw``: not for VRs it looks up or corrects (`_PYDICOM_VRS`), a callback's elements, nor
    text whose decoding depends on the character set (anything but ASCII without escape
    sequences). A LUT descriptor written SS is read here as its VR says, as DCMTK and the
    compiled core read it: pydicom would add 65536 to a negative first value (the standard
    reads that value unsigned), a value the element's VR cannot hold."""
    vr, value = raw.VR, raw.value
    return not (
        vr is None
        or vr in _PYDICOM_VRS
        or value is None
        or pydicom_config.data_element_callback is not None
        or (vr in _CHARSET_VRS and (not value.isascii() or b"\x1b" in value))
    )


def _inheriting(dataset: Dataset, elem: DataElement) -> DataElement:
    """``elem``, its items (if a sequence) told the nearest PixelRepresentation.

    pydicom resolves an implicit VR 'US or SS' element (PS3.5 Annex A) by the Pixel
    Representation of its own or an enclosing dataset, which it hands down to the items of a
    sequence it converts from raw; an undefined-length sequence is read already converted, so
    its items are told here, in pydicom's own way, before their elements are converted.
    """
    if elem.VR == "SQ":
        # One pydicom cannot read (an unknown VR, a wrong length) tells the items nothing
        with contextlib.suppress(Exception):
            dataset._set_pixel_representation(elem)
    return elem


# PS3.5 6.2: a DS value is a fixed or floating point number, an IS value an optional sign and
# digits within -2**31..2**31-1, each padded with spaces (pydicom also reads "1_0", "1e2" or
# "3.0" as integers or decimals; DCMTK and the standard keep them as the text they are)
_NUMBER_STRINGS = {
    "IS": re.compile(r" *([+-]?)0*([0-9]{1,10}) *"),
    "DS": re.compile(r" *[+-]?([0-9]+(\.[0-9]*)?|\.[0-9]+)([eE][+-]?[0-9]+)? *"),
}


def reads_as_number(vr: str, text: str) -> bool:
    """Whether ``text``, a value of VR ``vr``, may be read as a number: for DS and IS only by
    the standard's grammar (and range), for any other VR always (its converter decides)."""
    grammar = _NUMBER_STRINGS.get(vr)
    if grammar is None:
        return True
    match = grammar.fullmatch(text)
    if match is None or vr == "DS":
        return match is not None
    # at most ten significant digits by the pattern: int() never sees a hostile length
    number = int(match.group(1) + match.group(2))
    return -(2**31) <= number < 2**31


# PS3.5 6.2: spaces that pad a value rather than belong to it. pydicom strips them from the end
# of an element only; the lake's JSON and element rows drop them from each value, as DCMTK's
# dcm2json does: after each value of a text VR, and before it too in these VRs (a DS or IS
# value pydicom keeps as text) and around each component of a person name (PS3.5 6.2.1 holds
# them insignificant there: "Doe ^ Jane" is "Doe^Jane"). NULs after a value pad it too: some
# writers pad with them as a UI is padded, and NUL is in no text VR's repertoire; pydicom drops
# them from every VR but AE (dcm2json keeps them but in PN and UI: a convention of the DCMTK
# comparison). Tabs around an AE, DS or IS value pydicom strips itself, as no control character
# is in these VRs' repertoires (dcm2json keeps them: another convention).
_PADDED_BEFORE = frozenset({"AE", "CS", "DS", "IS", "LO", "SH"})
_PADDED = TEXT_VRS | _PADDED_BEFORE
_NAME_GROUPS = 3
"""A person name has at most three component groups (PS3.5 6.2.1): alphabetic, ideographic
and phonetic; pydicom reads no more."""


def significant(vr: str, values: list[object]) -> list[object]:
    """``values`` (`values_of` an element of VR ``vr``) without their padding; a person
    name's as its text (`person_name`)."""
    if vr == "PN":
        return [person_name(str(v)) for v in values]
    if vr not in _PADDED:
        return values
    before = vr in _PADDED_BEFORE
    return [_unpadded(v, before) if isinstance(v, str) else v for v in values]


def _unpadded(text: str, before: bool) -> str:
    text = text.rstrip(" \0")
    return text.lstrip(" ") if before else text


def person_name(text: str) -> str:
    """A person name's text: its first three component groups, each component stripped of
    spaces, without the empty groups it ends with."""
    groups = [
        "^".join(part.strip(" ") for part in group.split("^"))
        for group in text.split("=")[:_NAME_GROUPS]
    ]
    while groups and not groups[-1]:
        groups.pop()
    return "=".join(groups)


def values_of(value: object) -> list[object]:
    """An element's value as a list of its values: [] when empty, one item when single."""
    if value is None or value == "":
        return []
    return list(value) if isinstance(value, (MultiValue, list, tuple)) else [value]


def get(dataset: Dataset, keyword: str) -> object:
    """Return an element's value, or None when missing, empty or unreadable."""
    tag = tag_of(keyword)
    return None if tag is None else value_at(dataset, tag)


def value_at(dataset: Dataset, tag: BaseTag) -> object:
    """`get` by tag (a private element's, say)."""
    try:
        elem = dataset.get_item(tag, keep_deferred=True)
        if elem is None:
            return None
        if not isinstance(elem, DataElement):
            value = raw_value(elem)
            if value is not IN_DATASET:
                return value
            with warnings.catch_warnings():
                # Values outside their VR's rules warn as they are converted
                warnings.simplefilter("ignore")
                elem = converted_element(dataset, tag)
        value = elem.value
    except Exception:
        return None
    return None if value is None or value == "" else value


IN_DATASET = object()
"""`raw_value` of an element that pydicom reads its dataset's way."""


def raw_value(raw: RawDataElement) -> object:
    """`value_at` of a raw element whose value its converter alone gives (see `direct`),
    without making and keeping its DataElement, which costs as much again (the identity and
    frame geometry of every file are read so); `IN_DATASET` for any other."""
    number = _one_number(raw)
    if number is not None:
        return number
    if not direct(raw):
        return IN_DATASET
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            value = convert_value(raw.VR, raw, default_encoding)
    except Exception:
        return None
    return None if value is None or value == "" else value


def _one_number(raw: RawDataElement) -> int | float | None:
    """A raw element's value where it is one binary number (explicit VR), read as pydicom's
    converter reads it (a tenth of the cost of its conversion of any value); else None."""
    forms = _ONE_NUMBER.get(raw.VR)
    if forms is None or pydicom_config.data_element_callback is not None:
        return None
    value = raw.value
    if not isinstance(value, bytes) or len(value) != forms[0].size:
        return None
    # convert_numbers' own unpacking of one value, without its per-call format string
    number: int | float = forms[raw.is_little_endian].unpack(value)[0]
    return number


@functools.cache
def tag_of(keyword: str) -> BaseTag | None:
    tag = tag_for_keyword(keyword)
    return None if tag is None else BaseTag(tag)


def sop_instance_uid(dataset: Dataset) -> tuple[str | None, bool]:
    """The instance's SOP Instance UID, and whether it came from the file meta.

    A dataset without (0008,0018) is still an instance when its file meta names it in
    (0002,0003) MediaStorageSOPInstanceUID, as DCMTK reads it.
    """
    meta = getattr(dataset, "file_meta", None)
    return named_instance(
        get(dataset, "SOPInstanceUID"),
        lambda: None if meta is None else get(meta, "MediaStorageSOPInstanceUID"),
    )


def named_instance(own: object, media: Callable[[], object]) -> tuple[str | None, bool]:
    """`sop_instance_uid` given the SOPInstanceUID's value and (read when that is empty) the
    file meta's MediaStorageSOPInstanceUID."""
    text = _uid_text(own)
    if text:
        return text, False
    text = _uid_text(media())
    return (text, True) if text else (None, False)


def _uid_text(value: object) -> str:
    return "\\".join(str(v) for v in values_of(value)).strip(" \x00")
