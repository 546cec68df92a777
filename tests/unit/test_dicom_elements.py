"""element_rows: one row per element, checked against pydicom's own walk (iterall)."""

from __future__ import annotations

import warnings
from pathlib import Path

import pyarrow as pa
import pytest
from corpus import corpus_id, split_paths
from pydicom.data import get_testdata_file

from dicomlake.dicom import ELEMENT_SCHEMA, element_rows, split_instance


@pytest.mark.filterwarnings("ignore::UserWarning")
@pytest.mark.parametrize("path", split_paths(), ids=corpus_id)
def test_one_row_per_element(path: Path) -> None:
    split = split_instance(path.read_bytes())
    rows = element_rows(split.dataset)
    table = pa.Table.from_pydict(rows, schema=ELEMENT_SCHEMA)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        # The split header never holds top-level pixel data; icons in sequences stay
        expected = list(split.dataset.iterall())
    assert table.num_rows == len(expected)
    assert sorted(rows["tag"]) == sorted(f"{elem.tag:08X}" for elem in expected)
    sequences = [elem for elem in expected if elem.VR == "SQ"]
    assert rows["vr"].count("SQ") == len(sequences)
    assert len(set(rows["path"])) == len(rows["path"])  # paths are unique
    assert rows["depth"] == [path.count("[") for path in rows["path"]]


def test_values_of_a_known_file() -> None:
    split = split_instance(Path(get_testdata_file("CT_small.dcm")).read_bytes())
    rows = element_rows(split.dataset)
    by_path = {path: index for index, path in enumerate(rows["path"])}
    name = by_path["00100010"]
    assert rows["keyword"][name] == "PatientName"
    assert rows["value_text"][name] == "CompressedSamples^CT1"
    assert rows["depth"][name] == 0
    spacing = by_path["00280030"]
    assert rows["value_text"][spacing] == "0.661468\\0.661468"
    assert rows["value_number"][spacing] == 0.661468
    assert rows["value_count"][spacing] == 2
    # private tags carry their creator
    private = [i for i, tag in enumerate(rows["tag"]) if int(tag[:4], 16) % 2 and tag[4:6] != "00"]
    assert private and all(rows["private_creator"][i] for i in private)
    assert all(rows["keyword"][i] is None for i in private)


def test_nested_sequence_paths() -> None:
    split = split_instance(Path(get_testdata_file("rtplan.dcm")).read_bytes())
    rows = element_rows(split.dataset)
    seq = rows["path"].index("300A00B0")  # Beam Sequence
    assert rows["value_text"][seq] is None
    assert rows["value_count"][seq] == len(split.dataset.BeamSequence)
    nested = [p for p in rows["path"] if p.startswith("300A00B0[0].300A0111[1].")]
    assert "300A00B0[0].300A0111[1].300C0050[0].300A010C" in nested
    assert rows["depth"][rows["path"].index(nested[0])] == 2


def test_short_binary_as_hex() -> None:
    from pydicom import Dataset

    ds = Dataset()
    ds.add_new(0x00091010, "OB", b"\x01\x02")
    ds.add_new(0x00090010, "LO", "ACME")
    ds.add_new(0x00091011, "OB", bytes(100))
    rows = element_rows(ds)
    assert rows["value_text"] == ["ACME", "0102", None]
    assert rows["private_creator"] == [None, "ACME", "ACME"]
