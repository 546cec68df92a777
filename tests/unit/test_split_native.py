"""Headers built from the compiled walk's elements (`split._from_walk`) are the datasets
pydicom's read_partial gives (`split._parse_header` without them): element by element and
attribute by attribute, on every sample file, hostile input and seeded mutation of a sample
file; and split_instance cuts and rejects every one of them as it does on the pydicom path."""

from __future__ import annotations

import contextlib
import random
import struct
import warnings
import weakref
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import pytest
from corpus import corpus_id, dataset_walker, mutated, pydicom_value, same_value, split_paths
from crafted import ITEM, SEQ_END, big_endian_un, element_bytes, tag_bytes, undefined_item
from hostile_corpus import make_hostile_landing
from pydicom import dcmread
from pydicom.data import get_testdata_file
from pydicom.datadict import keyword_for_tag, tag_for_keyword
from pydicom.dataelem import RawDataElement
from pydicom.dataset import Dataset
from pydicom.sequence import Sequence
from pydicom.tag import _LUT_DESCRIPTOR_TAGS
from pydicom.uid import DeflatedExplicitVRLittleEndian

from dicomlake.dicom import split
from dicomlake.dicom.split import (
    _from_walk,
    _parse_header,
    _top_level,
    header_from_prefix,
    split_instance,
    split_stream,
)
from dicomlake.errors import DicomParseError

# The sample files whose header pydicom reads rather than the compiled walk's elements
READ_BY_PYDICOM = {
    "test_files/UN_sequence.dcm",  # an undefined-length UN sequence, read as items at once
}


def _element(elem: Any) -> tuple:
    """An element's fields; a converted sequence's items by their state (comparing datasets
    would convert their elements)."""
    if isinstance(elem, RawDataElement):
        return ("raw", *((type(field), field) for field in elem))
    fields = _attributes(elem)
    if isinstance(elem.value, Sequence):
        items = [_state(item) for item in elem.value]
        fields["_value"] = _attributes(elem.value, "_list") | {"items": items}
    return ("converted", type(elem), fields)


def _attributes(obj: Any, *skip: str) -> dict[str, Any]:
    """An object's attributes but ``skip`` and the back references to its parents."""
    return {
        k: v
        for k, v in vars(obj).items()
        if k not in skip and not isinstance(v, weakref.ReferenceType)
    }


def _state(ds: Dataset) -> dict[str, Any]:
    """All a dataset holds: its attributes, its elements in their order, its file meta's, and
    the buffer it was read from and where reading stopped."""
    state = _attributes(ds, "_dict", "file_meta", "buffer")
    state["elements"] = [(type(t), t, _element(e)) for t, e in ds._dict.items()]
    if "file_meta" in vars(ds):
        state["file_meta"] = _state(ds.file_meta)
    if "buffer" in vars(ds):
        state["buffer"] = (type(ds.buffer), ds.buffer.getvalue(), ds.buffer.tell())
    return state


def _header_both_ways(data: bytes, monkeypatch: pytest.MonkeyPatch) -> bool:
    """Assert the header built from the walk's elements is the one pydicom reads; whether it
    was built from them."""
    walker, start, implicit = dataset_walker(data)
    pixel, lazy, walked = _top_level(walker, start, implicit)
    header = data[: pixel.offset if pixel else len(data)]
    built = []
    with monkeypatch.context() as m:
        m.setattr(split, "_from_walk", lambda *a: built.append(_from_walk(*a)) or built[-1])
        compiled = _parse_header(header, lazy, walked)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        assert _state(compiled.dataset) == _state(_parse_header(header, lazy).dataset)
    return built not in ([], [None])


def _outcome(data: bytes) -> Any:
    """split_instance's parts and header, and header_from_prefix's; or the error."""
    try:
        parts = split_instance(data, max_inflated=8 << 20)
        dataset, spec = header_from_prefix(parts.prefix)
    except DicomParseError as exc:
        return exc.reason, exc.message
    read = {k: v for k, v in vars(parts).items() if k != "original"}
    return read | {"dataset": _state(parts.dataset), "from_prefix": (_state(dataset), spec)}


def _deflated(data: bytes) -> bool:
    return split_instance(data).transfer_syntax_uid == DeflatedExplicitVRLittleEndian


def _split_both_ways(data: bytes, monkeypatch: pytest.MonkeyPatch) -> None:
    """Assert split_instance gives the same parts, header and error on either path."""
    compiled = _outcome(data)
    with monkeypatch.context() as m:
        m.setattr(split, "_from_walk", lambda *_: None)
        reference = _outcome(data)
    with warnings.catch_warnings():  # comparing sequences reads their items' odd values
        warnings.simplefilter("ignore")
        assert compiled == reference


@pytest.mark.parametrize("path", split_paths(), ids=corpus_id)
def test_sample_headers_are_built_as_pydicom_reads_them(path: Path, monkeypatch):
    data = path.read_bytes()
    _split_both_ways(data, monkeypatch)
    if _deflated(data):  # its inflated dataset is read by pydicom
        return
    assert _header_both_ways(data, monkeypatch) or corpus_id(path) in READ_BY_PYDICOM


def _all_both_ways(inputs: Iterable[bytes], monkeypatch) -> tuple[int, int]:
    """Split every input both ways; of those with a dataset that is not deflated, how many
    had their header compared, and how many of those were built from the walk."""
    tried = built = 0
    for data in inputs:
        _split_both_ways(data, monkeypatch)
        try:
            if _deflated(data):
                continue
        except DicomParseError:
            continue
        tried += 1
        built += _header_both_ways(data, monkeypatch)
    return tried, built


def test_hostile_inputs_split_as_on_the_pydicom_path(tmp_path, monkeypatch):
    make_hostile_landing(tmp_path / "landing", tmp_path / "outside", count=200, seed=23)
    paths = sorted((tmp_path / "landing").rglob("*"))
    tried, built = _all_both_ways(
        (
            path.read_bytes()
            for path in paths
            if not path.is_symlink() and path.is_file() and path.stat().st_size <= 8 << 20
        ),
        monkeypatch,
    )
    assert tried > 50 and built > tried // 2


def test_mutated_sample_files_split_as_on_the_pydicom_path(monkeypatch):
    rng = random.Random(43)
    files = [p.read_bytes() for p in split_paths() if 1024 < p.stat().st_size < 300_000]
    inputs = (mutated(rng.choice(files), rng) for _ in range(1500))
    tried, built = _all_both_ways(inputs, monkeypatch)
    assert tried > 500 and built > tried // 2


def _inserted(at: bytes, raw: bytes) -> bytes:
    """CT_small.dcm with ``raw`` inserted before the first occurrence of ``at``."""
    data = Path(get_testdata_file("CT_small.dcm")).read_bytes()
    where = data.index(at)
    return data[:where] + raw + data[where:]


def _group_length_as_sequence() -> bytes:
    """CT_small.dcm with its file meta group length read as a sequence (VR UL made SQ): its
    "items" are the file meta elements after it."""
    data = bytearray(Path(get_testdata_file("CT_small.dcm")).read_bytes())
    assert data[132:138] == b"\x02\x00\x00\x00UL"
    data[136:138] = b"SQ"
    return bytes(data)


PATIENT_NAME = b"\x10\x00\x10\x00PN"
# Made-up elements pydicom reads in its own way: each must give what it gives
ODD = {
    # read_dataset ends at a top-level item delimiter
    "item_delimiter": _inserted(PATIENT_NAME, b"\xfe\xff\x0d\xe0\x00\x00\x00\x00"),
    # a command set element, read as implicit VR before the dataset
    "command_set": _inserted(b"\x08\x00\x05\x00CS", b"\x00\x00\x00\x01UL\x04\x00\x07\x00\x00\x00"),
    # VR bytes out of 'AA'-'ZZ': read as an implicit VR element
    "vr_out_of_range": _inserted(PATIENT_NAME, b"\x09\x00\x10\x00\x04\x00\x00\x00abcd"),
    # an unknown VR in that range: read with a 2-byte length
    "unknown_vr": _inserted(PATIENT_NAME, b"\x09\x00\x10\x00QQ\x04\x00abcd"),
    # an element in the file meta group after the dataset started
    "late_meta_element": _inserted(PATIENT_NAME, b"\x02\x00\x99\x00UL\x04\x00\x01\x00\x00\x00"),
    # read_partial logs a group length that does not match, and fails formatting this one
    "group_length_as_sequence": _group_length_as_sequence(),
}


@pytest.mark.parametrize("name", list(ODD))
def test_odd_elements_split_as_on_the_pydicom_path(name: str, monkeypatch):
    data = ODD[name]
    _split_both_ways(data, monkeypatch)
    with contextlib.suppress(DicomParseError):
        split_instance(data)
        _header_both_ways(data, monkeypatch)


MODALITY = element_bytes((0x0008, 0x0060), "CS", b"MR", implicit=True)
# Undefined-length UN elements of a big endian file, their items implicit VR little endian
BIG_ENDIAN_UN = {
    "item": big_endian_un((0x0040, 0x0275), undefined_item(MODALITY)),
    "nested_sequence": big_endian_un(
        (0x0040, 0x0275),
        undefined_item(
            MODALITY,
            tag_bytes((0x0040, 0x0008)) + b"\xff" * 4 + undefined_item(MODALITY),
            tag_bytes(SEQ_END) + bytes(4),
        ),
    ),
    "private_defined_length_item": big_endian_un(
        (0x0041, 0x1001), tag_bytes(ITEM) + struct.pack("<L", len(MODALITY)) + MODALITY
    ),
}


@pytest.mark.parametrize("name", list(BIG_ENDIAN_UN))
def test_a_big_endian_un_sequence_is_read_implicit_vr_little_endian(name: str, monkeypatch):
    """PS3.5 6.2.2: both walks read the items of an undefined-length UN implicit VR little
    endian in a big endian file, then go on big endian; the header holds them as a sequence
    read so, from the compiled walk's elements as from pydicom's, and the frames after it are
    cut as ever."""
    data = BIG_ENDIAN_UN[name]
    _split_both_ways(data, monkeypatch)
    assert _header_both_ways(data, monkeypatch)
    parts = split_instance(data)
    assert parts.prefix + b"".join(parts.frames) + parts.suffix == data
    assert len(parts.frames) == 1 and len(parts.frames[0]) == 64 * 64 * 2
    streamed = split_stream(lambda at, n: data[at : at + n], len(data), limit=1 << 20, block=64)
    assert (streamed.prefix, list(streamed.frames), streamed.suffix) == (
        parts.prefix,
        parts.frames,
        parts.suffix,
    )
    for dataset in (parts.dataset, streamed.dataset):
        sequence = dataset[0x00400275 if name != "private_defined_length_item" else 0x00411001]
        assert sequence.VR == "SQ" and sequence.value[0].Modality == "MR"
        assert dataset.Rows == 64  # read big endian again after the sequence


@pytest.mark.filterwarnings("ignore::UserWarning")
@pytest.mark.parametrize("path", split_paths()[::3], ids=corpus_id)
def test_walked_values_are_pydicom_values_each_read_once(path: Path) -> None:
    """`Original.get` gives the value pydicom's dataset gives for each top-level keyword, and
    the same one on every later access, as the dataset gives what it converted first."""
    original = split_instance(path.read_bytes()).original
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        reference = dcmread(path, force=True)
    for tag in original.tags():
        keyword = keyword_for_tag(tag)
        # A repeating group's keyword names its first group; a LUT descriptor is read as its
        # VR says (`values.direct`)
        if tag_for_keyword(keyword) != tag or tag in _LUT_DESCRIPTOR_TAGS:
            continue
        value = original.get(keyword)
        expected = pydicom_value(reference, tag)
        if not isinstance(expected, Sequence):
            assert same_value(value, expected), keyword
        assert original.get(keyword) is value, keyword


def test_an_element_after_the_pixel_data_is_read_over_the_one_read_before():
    original = split_instance(Path(get_testdata_file("CT_small.dcm")).read_bytes()).original
    assert original.get("PatientName") == "CompressedSamples^CT1"
    after = Dataset()
    after.PatientName = "Other^Name"
    original.merge(after)
    assert original.get("PatientName") == "Other^Name"


def _with_uid(data: bytes, tag: bytes, value: bytes) -> bytes:
    """``data`` with the value of its explicit VR UI element ``tag`` (its first) replaced."""
    at = data.index(tag + b"UI")
    (length,) = struct.unpack_from("<H", data, at + 6)
    return data[: at + 6] + struct.pack("<H", len(value)) + value + data[at + 8 + length :]


DIRECTORY = b"1.2.840.10008.1.3.10"
MEDIA_CLASS, SOP_CLASS = b"\x02\x00\x02\x00", b"\x08\x00\x16\x00"


@pytest.mark.parametrize("tag", [MEDIA_CLASS, SOP_CLASS], ids=["file meta", "dataset"])
@pytest.mark.parametrize(
    "value",
    [DIRECTORY, DIRECTORY + b"\0", b" " + DIRECTORY + b" ", DIRECTORY + b"\\1.2", DIRECTORY + b"0"],
    ids=["class", "padded", "spaced", "two values", "longer"],
)
def test_a_directory_class_is_told_as_on_the_pydicom_path(tag, value, monkeypatch):
    """A class UID read from its bytes (`Original.may_be`) or converted gives the same."""
    data = _with_uid(Path(get_testdata_file("CT_small.dcm")).read_bytes(), tag, value)
    _split_both_ways(data, monkeypatch)
    if value.strip(b" \0") == DIRECTORY:
        with pytest.raises(DicomParseError, match="DICOMDIR"):
            split_instance(data)
