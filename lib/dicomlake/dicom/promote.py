"""Promoted columns: the header values analysts filter on, with real types.

Direct identifiers (names, birth date, institution) are not promoted: the analyst tables are
built from de-identified headers (`dicomlake.dicom.deid`), and the identified values live in the
restricted identities table.

The values are read from the header's top-level element rows (`elements.element_rows`, or the
compiled core's rows of the same schema), so both header paths type them the same way: a
value's text is pydicom's ``str`` of each value joined with ``\\``, numbers are that text
read as numbers. Binary values, sequences and AT values give no text: None.
"""

from __future__ import annotations

import datetime
import functools
import math
from collections.abc import Callable

import numpy as np
import pyarrow as pa
from pydicom.dataset import Dataset

from dicomlake.dicom.deid import in_form
from dicomlake.dicom.elements import element_text
from dicomlake.dicom.split import SplitInstance
from dicomlake.dicom.values import (
    BINARY_VRS,
    TEXT_VRS,
    elements,
    named_instance,
    reads_as_number,
)

_STRING, _DATE, _INT, _DOUBLE = pa.string(), pa.date32(), pa.int32(), pa.float64()
_DOUBLES = pa.list_(pa.float64())

PROMOTED: pa.Schema = pa.schema(
    [
        ("PatientID", _STRING),
        ("PatientSex", _STRING),
        ("PatientAge", _STRING),
        ("StudyInstanceUID", _STRING),
        ("StudyDate", _DATE),
        ("StudyTime", _STRING),
        ("AccessionNumber", _STRING),
        ("StudyDescription", _STRING),
        ("SeriesInstanceUID", _STRING),
        ("SeriesNumber", _INT),
        ("Modality", _STRING),
        ("BodyPartExamined", _STRING),
        ("SeriesDescription", _STRING),
        ("SOPClassUID", _STRING),
        ("SOPInstanceUID", _STRING),
        ("InstanceNumber", _INT),
        ("Manufacturer", _STRING),
        ("ManufacturerModelName", _STRING),
        ("Rows", _INT),
        ("Columns", _INT),
        ("NumberOfFrames", _INT),
        ("BitsAllocated", _INT),
        ("BitsStored", _INT),
        ("PixelRepresentation", _INT),
        ("SamplesPerPixel", _INT),
        ("PhotometricInterpretation", _STRING),
        ("PixelSpacing", _DOUBLES),
        ("SliceThickness", _DOUBLE),
        ("ImagePositionPatient", _DOUBLES),
        ("ImageOrientationPatient", _DOUBLES),
        ("TransferSyntaxUID", _STRING),
        ("SpecificCharacterSet", _STRING),
        # Acquisition parameters, null where a modality has none (CT: KVP, ExposureTime,
        # ConvolutionKernel; MR: EchoTime, RepetitionTime, MagneticFieldStrength). Added to
        # existing lakes' tables on their next run; older rows read them as null.
        ("KVP", _DOUBLE),
        ("ExposureTime", _INT),
        ("EchoTime", _DOUBLE),
        ("RepetitionTime", _DOUBLE),
        ("MagneticFieldStrength", _DOUBLE),
        ("ConvolutionKernel", _STRING),
        ("SliceLocation", _DOUBLE),
        ("ContrastBolusAgent", _STRING),
    ]
)


Text = tuple[str, str, int]
"""A top-level element's VR, text (its values' ``str`` joined with ``\\``) and value count."""
TopLevel = dict[str, Text]
"""The top-level elements with a value, as `Text`, by keyword."""

# VRs whose values are no numbers, whatever their text reads
_NOT_NUMBERS = frozenset(["PN", "AT"])


def top_level(rows: pa.RecordBatch) -> TopLevel:
    """The top-level elements of a header's element rows (`ELEMENT_SCHEMA`) that hold text."""
    at = np.flatnonzero(rows.column("depth").to_numpy() == 0)
    keywords, vrs, texts, counts = (
        rows.column(name).take(at).to_pylist()
        for name in ("keyword", "vr", "value_text", "value_count")
    )
    return {
        keyword: (vr, text, count)
        for keyword, vr, text, count in zip(keywords, vrs, texts, counts, strict=True)
        if keyword is not None and text is not None and vr not in BINARY_VRS
    }


def _top_of(dataset: Dataset) -> TopLevel:
    """`top_level` of a dataset's element rows, made from its top-level elements alone."""
    top = {}
    for elem in elements(dataset):
        keyword = elem.keyword
        if keyword and elem.VR != "SQ" and elem.VR not in BINARY_VRS:
            text, _, count = element_text(elem.VR, elem.value)
            if text is not None:
                top[keyword] = (elem.VR, text, count)
    return top


def instance_uid(top: TopLevel, media: Callable[[], object]) -> str | None:
    """The header's SOP Instance UID: its own, else the one its file meta names (``media``:
    its MediaStorageSOPInstanceUID, read only then; `values.sop_instance_uid`)."""
    own = top.get("SOPInstanceUID")
    return named_instance(own[1] if own else None, media)[0]


def _string(element: Text) -> str | None:
    return element[1].strip() or None


def _date(element: Text) -> datetime.date | None:
    vr, text, count = element
    if count != 1 or vr not in TEXT_VRS:
        return None
    # DA is YYYYMMDD; ACR-NEMA files may still use YYYY.MM.DD
    text = text.strip().replace(".", "")
    if len(text) != 8 or not text.isdigit():
        return None
    try:
        return datetime.date(int(text[:4]), int(text[4:6]), int(text[6:]))
    except ValueError:
        return None


def _number(vr: str, text: str) -> float | None:
    """One value's number: None where it reads as none, or as no finite one."""
    if not reads_as_number(vr, text):
        return None
    try:
        number = float(text)
    except ValueError:
        return None
    return number if math.isfinite(number) else None


def _double(element: Text) -> float | None:
    """The first value's number (the others are not read)."""
    vr, text, count = element
    if vr in _NOT_NUMBERS:
        return None
    return _number(vr, text.split("\\", 1)[0] if count > 1 else text)


def _int(element: Text) -> int | None:
    number = _double(element)
    if number is None or not number.is_integer() or not -(2**31) <= number < 2**31:
        return None
    return int(number)


def _double_list(element: Text) -> list[float] | None:
    vr, text, count = element
    if vr in _NOT_NUMBERS:
        return None
    numbers = [_number(vr, value) for value in (text.split("\\") if count > 1 else [text])]
    return None if None in numbers else numbers  # type: ignore[return-value]


_CONVERTERS: dict[pa.DataType, Callable[[Text], object]] = {
    _STRING: _string,
    _DATE: _date,
    _INT: _int,
    _DOUBLE: _double,
    _DOUBLES: _double_list,
}
# Each column's name and converter, looked up once: iterating a schema makes a Field object
# per column, and hashing an Arrow type calls into Arrow
_PROMOTERS = tuple((field.name, _CONVERTERS[field.type]) for field in PROMOTED)


def promoted_values(
    split: SplitInstance, top: TopLevel | None = None, media: Callable[[], object] | None = None
) -> dict[str, object]:
    """Return the promoted column values of one instance, typed as in `PROMOTED`.

    ``top`` is `top_level` of the header's element rows, made from ``split.dataset`` when not
    given; ``media`` gives its file meta's MediaStorageSOPInstanceUID (``split``'s when not
    given), read only where the header has no SOPInstanceUID.
    Missing or malformed values are None; multi-valued strings are joined with '\\'.
    ``SOPInstanceUID`` is the file meta's MediaStorageSOPInstanceUID when the dataset has
    none (`SplitInstance.sop_uid_from_meta`), ``NumberOfFrames`` is 1 for pixel data without
    the attribute, and
    ``TransferSyntaxUID`` comes from the file meta or the syntax implied by the encoding.

    Examples
    --------
    >>> from pydicom.data import get_testdata_file
    >>> from dicomlake.dicom.split import split_instance
    >>> split = split_instance(open(get_testdata_file("CT_small.dcm"), "rb").read())
    >>> promoted_values(split)["StudyDate"]
    datetime.date(2004, 1, 19)
    """
    if top is None:
        top = _top_of(split.dataset)
    row: dict[str, object] = {}
    for name, convert in _PROMOTERS:
        element = top.get(name)
        row[name] = None if element is None else convert(element)
    if media is None:
        media = functools.partial(split.original.get, "MediaStorageSOPInstanceUID", meta=True)
    row["SOPInstanceUID"] = instance_uid(top, media)
    row["NumberOfFrames"] = split.number_of_frames or None
    # The file meta's text, which de-identification does not see here: a UID's form or nothing
    syntax = split.transfer_syntax_uid
    row["TransferSyntaxUID"] = syntax if syntax and in_form("UI", syntax) else None
    return row
