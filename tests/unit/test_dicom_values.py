"""converted_element and value_at give what pydicom's own Dataset[tag] gives, for every corpus
element and every binary number, whatever its length and byte order; a DS or IS reads as a
number only by the standard's grammar."""

from __future__ import annotations

import copy
import warnings
from pathlib import Path

import pydicom
import pytest
from corpus import corpus_id, pydicom_value, same_value, split_paths
from pydicom.data import get_charset_files
from pydicom.dataelem import RawDataElement
from pydicom.dataset import Dataset
from pydicom.tag import BaseTag

from dicomlake.dicom import split_instance
from dicomlake.dicom.values import converted_element, reads_as_number, value_at


def _pairs(ours: Dataset, theirs: Dataset, where: str):
    """Every element of both copies of one header, sequence items included."""
    for tag in list(theirs.keys()):
        try:
            expected = theirs[tag]
        except Exception as exc:  # pydicom cannot convert it: neither may we
            with pytest.raises(type(exc)):
                converted_element(ours, tag)
            continue
        got = converted_element(ours, tag)
        yield f"{where}{tag}", got, expected
        if expected.VR == "SQ":
            for index, (a, b) in enumerate(zip(got.value, expected.value, strict=True)):
                yield from _pairs(a, b, f"{where}{tag}[{index}].")


# The corpus as split_instance reads it, and pydicom's character set files (Japanese, Korean,
# Chinese, Greek, Hebrew, in sequences too; some have no SOP Instance UID) as pydicom reads them.
CHARSET_FILES = sorted(Path(p) for p in get_charset_files("*.dcm"))
PATHS = split_paths() + CHARSET_FILES


def _read(path: Path) -> Dataset:
    if path in CHARSET_FILES:
        return pydicom.dcmread(path, force=True)
    return split_instance(path.read_bytes()).dataset


@pytest.mark.filterwarnings("ignore::UserWarning")
@pytest.mark.parametrize("path", PATHS, ids=corpus_id)
def test_same_elements_as_pydicom(path: Path) -> None:
    ours = _read(path)
    theirs = copy.deepcopy(ours)  # still raw: pydicom converts its copy itself
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for where, got, expected in _pairs(ours, theirs, ""):
            assert got.VR == expected.VR, where
            assert type(got.value) is type(expected.value), where
            if expected.VR != "SQ":
                assert got.value == expected.value, where
                assert got.VM == expected.VM, where
                assert got.file_tell == expected.file_tell, where
                assert got.is_undefined_length == expected.is_undefined_length, where
                assert got.to_json_dict(None, 1024) == expected.to_json_dict(None, 1024), where


@pytest.mark.filterwarnings("ignore::UserWarning")
@pytest.mark.parametrize("path", PATHS[::7], ids=corpus_id)
def test_value_at_gives_pydicom_values(path: Path) -> None:
    ours = _read(path)
    theirs = copy.deepcopy(ours)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for tag in list(theirs.keys()):
            expected = pydicom_value(theirs, tag)
            if not isinstance(expected, pydicom.Sequence):
                assert same_value(value_at(ours, tag), expected), tag


@pytest.mark.parametrize("vr", ["US", "SS", "UL", "SL", "FL", "FD", "UV", "SV", "AT", "OW"])
@pytest.mark.parametrize("little", [True, False], ids=["little", "big"])
def test_value_at_reads_binary_numbers_as_pydicom(vr: str, little: bool) -> None:
    tag = BaseTag(0x00280010)
    for length in range(17):
        data = bytes(range(0xF0, 0xF0 + length))  # high bits set: signed values are negative
        raw = RawDataElement(tag, vr, length, data, 0, False, little)
        expected = pydicom_value(Dataset({tag: raw}), tag)
        assert same_value(value_at(Dataset({tag: raw}), tag), expected), (vr, length)


@pytest.mark.parametrize(
    ("vr", "text", "number"),
    [
        ("IS", " -7 ", True),
        ("IS", "+0000000000000000012", True),  # zeros before ten digits
        ("IS", "2147483647", True),
        ("IS", "2147483648", False),  # past the range PS3.5 6.2 gives
        ("IS", "-2147483649", False),
        ("IS", "9" * 5000, False),  # a hostile length: refused before any int()
        ("IS", "1e2", False),
        ("IS", "3.0", False),
        ("DS", " .5e-3 ", True),
        ("DS", "1_0", False),  # Python's float() reads it as 10
        ("DS", "1.06,0.206", False),
        ("FD", "anything", True),  # not a number string: its converter decides
    ],
)
def test_a_number_string_reads_as_a_number_by_the_standards_grammar(vr, text, number):
    assert reads_as_number(vr, text) is number
