"""header_json round-trips through pydicom's Dataset.from_json, bulk data left out."""

from __future__ import annotations

import functools
import json
import warnings
from pathlib import Path

import pytest
from corpus import corpus_id, split_paths
from pydicom.dataelem import DataElement, RawDataElement
from pydicom.dataset import Dataset
from pydicom.tag import Tag
from pydicom.valuerep import BYTES_VR

from dicomlake.dicom import header_json, split_instance
from dicomlake.dicom.dicomjson import BULK_DATA_URI, BULK_THRESHOLD
from dicomlake.dicom.elements import element_rows


def _is_bulk(elem) -> bool:
    return elem.VR in BYTES_VR and len(elem.value or b"") > BULK_THRESHOLD


# DICOM JSON's InlineBinary is little endian (PS3.18 F.2.7): the word size of each VR
_WORDS = {"OW": 2, "OL": 4, "OF": 4, "OD": 8, "OV": 8}


def _as_json_bytes(elem: DataElement, little: bool) -> DataElement:
    """``elem`` with the bytes DICOM JSON holds: words of a big endian file reversed."""
    width = _WORDS.get(elem.VR, 1)
    if little or width == 1 or not elem.value:
        return elem
    value = elem.value
    whole = len(value) - len(value) % width
    words = [value[i : i + width][::-1] for i in range(0, whole, width)]
    return DataElement(elem.tag, elem.VR, b"".join(words) + value[whole:])


# PS3.5 6.2: spaces that pad a value are no part of it: DICOM JSON drops them (as dcm2json)
# after each text value, before it too in these VRs, and around each person name group
_PADDED_BEFORE = {"AE", "CS", "LO", "SH"}
_TEXT = {"AS", "DA", "DT", "LT", "ST", "TM", "UC", "UI", "UR", "UT"} | _PADDED_BEFORE


def _unpadded(vr: str, value: object) -> object:
    """One value as DICOM means it, by the standard's rule written out again here."""
    if vr == "PN":
        return "=".join(group.strip(" ") for group in str(value).split("=")).rstrip("=")
    if vr not in _TEXT or not isinstance(value, str):
        return value
    return value.strip(" ") if vr in _PADDED_BEFORE else value.rstrip(" ")


def _unpadded_value(vr: str, value: object) -> object:
    if isinstance(value, (list, tuple)) or type(value).__name__ == "MultiValue":
        return [_unpadded(vr, v) for v in value]
    return _unpadded(vr, value)


def _assert_same(original: Dataset, restored: Dataset, where: str, little: bool) -> None:
    """Compare element by element; bulk elements must be absent from the restored set."""
    kept = [elem for elem in original if not _is_bulk(elem)]
    bulk = {elem.tag for elem in original if _is_bulk(elem)}
    assert {elem.tag for elem in kept} | bulk == set(restored.keys()), where
    for elem in map(functools.partial(_as_json_bytes, little=little), kept):
        other = restored[elem.tag]
        label = f"{where}{elem.tag}"
        assert other.VR == elem.VR, label
        if elem.VR == "SQ":
            assert len(other.value) == len(elem.value), label
            for index, (a, b) in enumerate(zip(elem.value, other.value, strict=True)):
                _assert_same(a, b, f"{label}[{index}].", little)
        elif elem.VR == "PN":
            assert str(other.value or "") == _unpadded("PN", elem.value or ""), label
        elif elem.is_empty:
            assert other.is_empty, label
        else:
            # from_json rebuilds IS/DS from numbers: compare values, not their text
            assert _unpadded_value(elem.VR, other.value) == _unpadded_value(elem.VR, elem.value), (
                label
            )
    for tag in bulk:
        assert restored[tag].value is None, f"{where}{tag} should be left out"


# pydicom warns on odd values (e.g. a UI holding a hash) as the test reads them
@pytest.mark.filterwarnings("ignore::UserWarning")
@pytest.mark.parametrize("path", split_paths(), ids=corpus_id)
def test_header_json_round_trip(path: Path) -> None:
    split = split_instance(path.read_bytes())
    text = header_json(split.dataset)
    document = json.loads(text)
    assert not any(key.startswith("0002") for key in document)  # file meta left out
    uris: list[str] = []

    def handler(tag: str, vr: str, value: str) -> None:
        uris.append(value)

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        restored = Dataset.from_json(text, bulk_data_uri_handler=handler)
    assert set(uris) <= {BULK_DATA_URI}
    _assert_same(split.dataset, restored, "", split.dataset.original_encoding[1] is not False)


def _pydicom_json(dataset: Dataset, little: bool) -> dict:
    """The document pydicom's own per-element writer gives, with the same bulk rule."""
    out = {}
    for elem in sorted(dataset, key=lambda e: e.tag):
        key = f"{elem.tag:08X}"
        if elem.VR == "SQ":
            out[key] = {"vr": "SQ", "Value": [_pydicom_json(item, little) for item in elem.value]}
        elif elem.tag in (0x7FE00008, 0x7FE00009, 0x7FE00010) or _is_bulk(elem):
            out[key] = {"vr": elem.VR, "BulkDataURI": BULK_DATA_URI}
        else:
            try:
                out[key] = _unpadded_json(
                    elem, _as_json_bytes(elem, little).to_json_dict(None, BULK_THRESHOLD)
                )
            except Exception:
                out[key] = None  # header_json keeps such a value as UN bytes instead
    return out


def _unpadded_json(elem: DataElement, written: dict) -> dict:
    """pydicom's JSON of ``elem`` with its values unpadded (`_unpadded`)."""
    if "Value" not in written or (elem.VR not in _TEXT and elem.VR != "PN"):
        return written
    values = elem.value if elem.VM > 1 else [elem.value]
    if elem.VR == "PN":
        names = [_unpadded("PN", v) for v in values]
        keys = ("Alphabetic", "Ideographic", "Phonetic")
        return {
            **written,
            "Value": [dict(zip(keys, n.split("="), strict=False)) if n else None for n in names],
        }
    return {**written, "Value": [_unpadded(elem.VR, v) for v in written["Value"]]}


def _assert_matches(ours: dict, reference: dict, where: str) -> None:
    assert ours.keys() == reference.keys(), where
    for key, expected in reference.items():
        if expected is None:
            continue  # pydicom cannot write it; header_json keeps its bytes as UN
        if expected["vr"] == "SQ":
            assert ours[key]["vr"] == "SQ", where + key
            items = zip(ours[key]["Value"], expected["Value"], strict=True)
            for index, (a, b) in enumerate(items):
                _assert_matches(a, b, f"{where}{key}[{index}].")
        else:
            assert ours[key] == expected, where + key


@pytest.mark.filterwarnings("ignore::UserWarning")
@pytest.mark.parametrize("path", split_paths(), ids=corpus_id)
def test_header_json_matches_pydicom_writer(path: Path) -> None:
    """Every element is written as pydicom's to_json_dict writes it."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        dataset = split_instance(path.read_bytes()).dataset
        little = dataset.original_encoding[1] is not False
        reference = json.loads(json.dumps(_pydicom_json(dataset, little)))
        ours = json.loads(header_json(dataset))
    _assert_matches(ours, reference, "")


@pytest.mark.filterwarnings("ignore::UserWarning")
def test_an_is_value_that_is_no_number_is_kept_as_its_text() -> None:
    """An IS of "1\\x" reads as two strings: the number is a number, the rest stays its text
    (as DCMTK's dcm2json writes it), and the element keeps its VR."""
    dataset = Dataset()
    raw = b"1\\x "
    dataset[0x00200013] = RawDataElement(Tag(0x00200013), "IS", len(raw), raw, 0, False, True)
    doc = json.loads(header_json(dataset))
    assert doc == {"00200013": {"vr": "IS", "Value": [1, "x"]}}


@pytest.mark.filterwarnings("ignore::UserWarning")
@pytest.mark.parametrize(
    ("raw", "json_value", "number"),
    [
        (b"+1e2", "+1e2", None),  # pydicom reads 100; IS is a sign and digits (PS3.5 6.2)
        (b"3.0 ", "3.0", None),
        (b" -7 ", -7, -7.0),
        (b"+12", 12, 12.0),
    ],
)
def test_an_is_value_is_a_number_only_by_the_standards_grammar(
    raw: bytes, json_value: object, number: float | None
) -> None:
    dataset = Dataset()
    dataset[0x00181150] = RawDataElement(Tag(0x00181150), "IS", len(raw), raw, 0, False, True)
    doc = json.loads(header_json(dataset))
    assert doc["00181150"]["Value"] == [json_value]
    (row,) = element_rows(dataset)["value_number"]
    assert row == number
