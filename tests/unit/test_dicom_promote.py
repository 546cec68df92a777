"""Promoted columns: typed, None for missing or malformed values, checked against pydicom."""

from __future__ import annotations

import datetime
import warnings
from pathlib import Path

import pyarrow as pa
import pydicom
import pytest
from corpus import corpus_id, split_paths
from pydicom import config
from pydicom.data import get_testdata_file
from pydicom.dataelem import RawDataElement
from pydicom.tag import BaseTag

from dicomlake.dicom import PROMOTED, promoted_values, split_instance


@pytest.mark.parametrize("path", split_paths(), ids=corpus_id)
def test_values_fit_the_schema_and_match_pydicom(path: Path) -> None:
    split = split_instance(path.read_bytes())
    row = promoted_values(split)
    assert list(row) == PROMOTED.names
    table = pa.Table.from_pylist([row], schema=PROMOTED)  # raises on a wrong type
    assert table.num_rows == 1
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ds = pydicom.dcmread(path, force=True, stop_before_pixels=True)
        # A dataset without one is named by its file meta
        assert row["SOPInstanceUID"] == ds.get(
            "SOPInstanceUID", ds.file_meta.get("MediaStorageSOPInstanceUID")
        )
        assert row["SeriesInstanceUID"] == (ds.get("SeriesInstanceUID") or None)
        if "Rows" in ds:
            assert row["Rows"] == ds.Rows
    assert row["TransferSyntaxUID"] == ds.file_meta.get(
        "TransferSyntaxUID", split.transfer_syntax_uid
    )


def test_ct_small_values() -> None:
    split = split_instance(Path(get_testdata_file("CT_small.dcm")).read_bytes())
    row = promoted_values(split)
    assert row["StudyDate"] == datetime.date(2004, 1, 19)
    assert row["PixelSpacing"] == [0.661468, 0.661468]
    assert row["ImageOrientationPatient"] == [1.0, 0.0, 0.0, 0.0, 1.0, 0.0]
    assert row["SliceThickness"] == 5.0
    assert row["Rows"] == 128 and row["NumberOfFrames"] == 1
    assert row["Modality"] == "CT"
    assert row["PatientID"] == "1CT1"
    # direct identifiers are not promoted (they live in the restricted identities table)
    assert not {"PatientName", "PatientBirthDate", "InstitutionName"} & set(row)


# (column, type) as each attribute's VR reads (DS a double, IS an integer, SH/LO text)
ACQUISITION = {
    "KVP": float,
    "ExposureTime": int,
    "EchoTime": float,
    "RepetitionTime": float,
    "MagneticFieldStrength": float,
    "ConvolutionKernel": str,
    "SliceLocation": float,
    "ContrastBolusAgent": str,
}


@pytest.mark.parametrize("name", ["CT_small.dcm", "MR_small.dcm"])
def test_acquisition_parameters_where_the_modality_has_them(name: str) -> None:
    path = Path(get_testdata_file(name))
    row = promoted_values(split_instance(path.read_bytes()))
    ds = pydicom.dcmread(path, stop_before_pixels=True)
    for column, kind in ACQUISITION.items():
        value = ds.get(column)
        expected = kind(value) if value not in (None, "") else None
        assert row[column] == expected, column
    present = {c for c in ACQUISITION if row[c] is not None}
    if ds.Modality == "CT":
        assert {"KVP", "ExposureTime", "ConvolutionKernel"} <= present
        assert not {"EchoTime", "RepetitionTime"} & present
    else:
        assert {"EchoTime", "RepetitionTime"} <= present
        assert not {"KVP", "ExposureTime", "ConvolutionKernel"} & present


def test_malformed_and_multi_values() -> None:
    split = split_instance(Path(get_testdata_file("CT_small.dcm")).read_bytes())
    ds = split.dataset
    with config.disable_value_validation():  # pydicom refuses the bad values otherwise
        ds.StudyDate = "2010011"
        ds.SeriesDate = "20101340"
        ds.SpecificCharacterSet = ["ISO 2022 IR 6", "ISO 2022 IR 100"]
        ds.InstanceNumber = "7"
    # an IS that pydicom cannot even build, as read from a damaged file
    ds[0x00200011] = RawDataElement(BaseTag(0x00200011), "IS", 2, b"x1", 0, False, True)
    ds[0x00280030] = RawDataElement(BaseTag(0x00280030), "DS", 8, b"1.5\\abc", 0, False, True)
    # pydicom reads 100; an IS is a sign and digits (PS3.5 6.2), as DCMTK reads it
    ds[0x00181150] = RawDataElement(BaseTag(0x00181150), "IS", 4, b"+1e2", 0, False, True)
    row = promoted_values(split)
    assert row["ExposureTime"] is None
    assert row["StudyDate"] is None
    assert row["SeriesNumber"] is None
    assert row["SpecificCharacterSet"] == "ISO 2022 IR 6\\ISO 2022 IR 100"
    assert row["PixelSpacing"] is None
    assert row["InstanceNumber"] == 7


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (b"-2147483648", -(2**31)),  # the least IS (PS3.5 6.2) fits the int32 column
        (b"2147483647 ", 2**31 - 1),
        (b"2147483648", None),
        (b"-2147483649 ", None),
    ],
)
def test_an_integer_column_takes_the_whole_is_range(text: bytes, expected: int | None) -> None:
    split = split_instance(Path(get_testdata_file("CT_small.dcm")).read_bytes())
    tag = BaseTag(0x00200011)  # SeriesNumber
    split.dataset[tag] = RawDataElement(tag, "IS", len(text), text, 0, False, True)
    assert promoted_values(split)["SeriesNumber"] == expected


@pytest.mark.parametrize(
    ("tag", "vr", "text", "column", "expected"),
    [
        (0x00200011, "IS", b"7\\x1", "SeriesNumber", 7),  # a one-value column: the first
        (0x00180050, "DS", b"2.5\\abc", "SliceThickness", 2.5),
        (0x00180050, "DS", b"abc\\2.5", "SliceThickness", None),
        (0x00180050, "DS", b"1e400", "SliceThickness", None),  # no finite number
        (0x00280030, "DS", b" 0.5\\2 ", "PixelSpacing", [0.5, 2.0]),
        (0x00280030, "DS", b"0.5\\1e400", "PixelSpacing", None),
        (0x00280010, "US", b"\x00\x02", "Rows", 512),
    ],
)
def test_number_columns_read_their_values(
    tag: int, vr: str, text: bytes, column: str, expected: object
) -> None:
    split = split_instance(Path(get_testdata_file("CT_small.dcm")).read_bytes())
    split.dataset[BaseTag(tag)] = RawDataElement(BaseTag(tag), vr, len(text), text, 0, False, True)
    assert promoted_values(split)[column] == expected


def test_no_pixel_data_has_no_frame_count() -> None:
    split = split_instance(Path(get_testdata_file("rtplan.dcm")).read_bytes())
    row = promoted_values(split)
    assert row["NumberOfFrames"] is None
    assert row["TransferSyntaxUID"] == "1.2.840.10008.1.2"


def test_a_transfer_syntax_that_is_no_uid_is_not_promoted() -> None:
    """The file meta's text reaches the column unless checked: a name there is left out."""
    data = Path(get_testdata_file("CT_small.dcm")).read_bytes()
    syntax = b"1.2.840.10008.1.2.1\x00"
    assert data.count(syntax) == 1
    split = split_instance(data.replace(syntax, b"DOE^JANE^ZZPHI\x00\x00\x00\x00\x00\x00"))
    assert "DOE" in split.transfer_syntax_uid  # as the file meta holds it
    assert promoted_values(split)["TransferSyntaxUID"] is None
