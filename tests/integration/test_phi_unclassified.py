"""What de-identification cannot classify stays out of the analyst tables: identifiers in
attributes the dictionary does not know, text in safe-listed private slots, and names that a
bad length made part of a kept code string or of kept binary data, ingested for real, with
the run's counts of what was removed."""

from __future__ import annotations

import base64
from pathlib import Path

import pyarrow.parquet as pq
import pydicom
import pytest
from crafted import swallowing
from pydicom.data import get_testdata_file
from pydicom.dataset import Dataset
from pydicom.sequence import Sequence

from dicomlake.ingest.job import run_ingest

pytestmark = pytest.mark.spark

UNKNOWN_NAME = "Doemaker^Johnathan"
PRIVATE_TEXT = "Smithfield^Alicia"
NESTED_NAME = "Brownstone^Carlos"
SWALLOWED_NAME = "Swallowfield^Marta"
WORDS_NAME = "Wordsworth^Petra"


def _crafted(landing: Path) -> None:
    """Three real CT slices, each carrying an identifier where no rule of the profile keeps it."""
    landing.mkdir()
    for n in range(3):
        ds = pydicom.dcmread(get_testdata_file("CT_small.dcm"))
        ds.SOPInstanceUID = f"1.2.826.0.1.3680043.2.1125.{n}"
        ds.add_new(0x00107777, "LO", UNKNOWN_NAME)  # even group, no dictionary entry
        block = ds.private_block(0x0019, "SIEMENS MR HEADER", create=True)
        block.add_new(0x0C, "LO", PRIVATE_TEXT)  # the B_value slot, holding text
        item = Dataset()
        item.add_new(0x00107778, "PN", NESTED_NAME)
        ds.add_new(0x00117010, "SQ", Sequence([item]))  # a private sequence, whole
        ds.save_as(landing / f"ct{n}.dcm", enforce_file_format=True)
    # A fourth whose Modality length takes in every element up to the patient's name: the
    # header still parses, and Modality (kept by the profile) holds the name
    ds = pydicom.dcmread(get_testdata_file("CT_small.dcm"))
    ds.SOPInstanceUID = "1.2.826.0.1.3680043.2.1125.9"
    ds.PatientName = SWALLOWED_NAME
    path = landing / "swallowed.dcm"
    ds.save_as(path, enforce_file_format=True)
    path.write_bytes(swallowing(path.read_bytes(), 0x00080060, 0x00100010))
    assert SWALLOWED_NAME in str(pydicom.dcmread(path).Modality)
    # A fifth whose palette data (OW, kept by the profile) takes in the requesting physician
    ds = pydicom.dcmread(get_testdata_file("CT_small.dcm"))
    ds.SOPInstanceUID = "1.2.826.0.1.3680043.2.1125.10"
    ds.RedPaletteColorLookupTableData = bytes(8)
    ds.RequestingPhysician = WORDS_NAME
    path = landing / "swallowed-words.dcm"
    ds.save_as(path, enforce_file_format=True)
    path.write_bytes(swallowing(path.read_bytes(), 0x00281201, 0x00321032))
    assert WORDS_NAME.encode() in pydicom.dcmread(path).RedPaletteColorLookupTableData


def _forms(landing: Path) -> list[str]:
    """Each identifier as the tables could hold it: as text, and the swallowed words also as
    the hex and base64 of the bytes that hold the name."""
    words = pydicom.dcmread(landing / "swallowed-words.dcm").RedPaletteColorLookupTableData
    surnames = [v.split("^")[0] for v in (UNKNOWN_NAME, PRIVATE_TEXT, NESTED_NAME, SWALLOWED_NAME)]
    surname = WORDS_NAME.split("^")[0].encode()
    return [*surnames, surname.decode(), surname.hex(), base64.b64encode(words).decode()]


def test_unclassified_identifiers_are_removed_and_counted(tmp_path, sc, config, keyring):
    landing, lake = tmp_path / "landing", tmp_path / "lake"
    _crafted(landing)
    for n in range(3):  # the inputs do hold them
        held = (landing / f"ct{n}.dcm").read_bytes()
        assert all(v.encode() in held for v in (UNKNOWN_NAME, PRIVATE_TEXT))
    assert SWALLOWED_NAME.encode() in (landing / "swallowed.dcm").read_bytes()
    summary = run_ingest(sc, str(landing), str(lake), config, keyring)
    assert summary.ingested == 5
    assert summary.deid_removed["removed_unknown"] == 3
    assert summary.deid_removed["removed_private_text"] == 3
    assert summary.deid_removed["removed_invalid"] == 2
    assert summary.deid_removed["removed_private"] >= 3  # the sequence and its creator
    files = sorted((lake / "tables").rglob("*.parquet"))
    assert files
    for path in files:
        text = str(pq.read_table(path).to_pylist()) + str(pq.read_metadata(path).metadata)
        text += str(path)  # the partition directories too
        for form in _forms(landing):
            assert form not in text, (form, path)
    for log in (lake / "tables").rglob("_delta_log/*.json"):  # partition values, statistics
        for form in _forms(landing):
            assert form not in log.read_text(), (form, log)
