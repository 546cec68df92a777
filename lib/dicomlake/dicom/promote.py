"""Promoted columns: the header values analysts filter on, with real types.

Direct identifiers (names, birth date, institution) are not promoted: the analyst tables are
built from de-identified headers (`dicomlake.dicom.deid`), and the identified values live in the
restricted identities table.
"""

from __future__ import annotations

import datetime
import math
from collections.abc import Callable

import pyarrow as pa

from dicomlake.dicom.split import SplitInstance
from dicomlake.dicom.values import get, sop_instance_uid, values_of

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


def _string(value: object) -> str | None:
    text = "\\".join(str(v) for v in values_of(value)).strip()
    return text or None


def _date(value: object) -> datetime.date | None:
    # DA is YYYYMMDD; ACR-NEMA files may still use YYYY.MM.DD
    text = str(value).strip().replace(".", "") if isinstance(value, str) else ""
    if len(text) != 8 or not text.isdigit():
        return None
    try:
        return datetime.date(int(text[:4]), int(text[4:6]), int(text[6:]))
    except ValueError:
        return None


def _float(value: object) -> float | None:
    try:
        number = float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return None
    return number if math.isfinite(number) else None


def _int(value: object) -> int | None:
    number = _float(values_of(value)[0])
    if number is None or not number.is_integer() or abs(number) >= 2**31:
        return None
    return int(number)


def _double(value: object) -> float | None:
    return _float(values_of(value)[0])


def _double_list(value: object) -> list[float] | None:
    numbers = [_float(v) for v in values_of(value)]
    return None if any(n is None for n in numbers) else numbers  # type: ignore[return-value]


_CONVERTERS: dict[pa.DataType, Callable[[object], object]] = {
    _STRING: _string,
    _DATE: _date,
    _INT: _int,
    _DOUBLE: _double,
    _DOUBLES: _double_list,
}


def promoted_values(split: SplitInstance) -> dict[str, object]:
    """Return the promoted column values of one instance, typed as in `PROMOTED`.

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
    dataset = split.dataset
    row: dict[str, object] = {}
    for field in PROMOTED:
        value = get(dataset, field.name)
        row[field.name] = None if value is None else _CONVERTERS[field.type](value)
    row["SOPInstanceUID"] = sop_instance_uid(dataset)[0]
    row["NumberOfFrames"] = split.number_of_frames or None
    row["TransferSyntaxUID"] = split.transfer_syntax_uid
    return row
