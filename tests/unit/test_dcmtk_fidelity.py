"""The header and frames as dicomlake reads them, against DCMTK, an independent reader.

Every corpus file that `split_instance` accepts, and crafted files, are read twice: the header
as `header_json` writes it (before de-identification) against ``dcm2json``; frames against
DCMTK's own native writing (``dcmconv +te``) or decompression (``dcmdjpeg``, ``dcmdrle``,
``dcmdjpls``). The conventions in which the two JSON writers differ are normalised in one place,
`normalised`; any other difference fails. DCMTK is needed: without it the tests fail.
"""

from __future__ import annotations

import base64
import contextlib
import json
import shutil
import struct
import subprocess
import warnings
from collections import Counter
from collections.abc import Callable, Container
from pathlib import Path
from typing import Any

import numpy as np
import pydicom
import pytest
from corpus import corpus_id, split_paths
from crafted import (
    CT,
    SEQ_END,
    before_pixels,
    big_endian_un,
    element_bytes,
    rewritten,
    tag_bytes,
    undefined_item,
)

from dicomlake.dicom import encapsulated_frame_array, header_json, split_instance
from dicomlake.dicom.dicomjson import BULK_THRESHOLD
from dicomlake.dicom.elements import element_rows

# Files DCMTK cannot read, or cannot write as JSON, by name, with why
DCMTK_UNREADABLE = {
    # (4544,4952) declares 1329808723 bytes, past the end: DCMTK stops, pydicom reads on
    "SC_rgb_jpeg.dcm": "DCMTK stops at an element longer than the file",
    # SpecificCharacterSet holds ten values, the first '49': dcm2json cannot convert to UTF-8
    "explicit_VR-UN.dcm": "dcm2json cannot convert its character set '49' to UTF-8",
    # dcm2json converts text with the C library's iconv, which lacks ISO 2022 IR 87
    "J2K_pixelrep_mismatch.dcm": "dcm2json cannot convert ISO 2022 IR 87 (Japanese) text",
}
# Frames pydicom's decoders (the lake's) cannot decode, by name, with why; their stored
# fragments are the file's own bytes all the same
UNDECODABLE = {"JPEG-lossy.dcm": "12-bit JPEG Extended: neither pylibjpeg nor Pillow decodes it"}
# Lossy syntaxes are not decoded bit for bit alike: DCMTK's IJG decoder and libjpeg-turbo
# differ in IDCT and chroma upsampling by a few levels (3 seen in color3d_jpeg_baseline.dcm)
_LOSSY = {"1.2.840.10008.1.2.4.50", "1.2.840.10008.1.2.4.51", "1.2.840.10008.1.2.4.81"}
_LOSSY_TOLERANCE = 4
_DECOMPRESSORS = {
    "1.2.840.10008.1.2.5": "dcmdrle",
    **dict.fromkeys(
        ["1.2.840.10008.1.2.4.50", "1.2.840.10008.1.2.4.51", "1.2.840.10008.1.2.4.57"],
        "dcmdjpeg",
    ),
    "1.2.840.10008.1.2.4.70": "dcmdjpeg",
    "1.2.840.10008.1.2.4.80": "dcmdjpls",
    "1.2.840.10008.1.2.4.81": "dcmdjpls",
}
_WORD_BYTES = {"OB": 1, "OW": 2, "OF": 4, "OD": 8}


def dcmtk(tool: str, *args: str | Path) -> bytes:
    """Run a DCMTK tool and return its output; fail (never skip) when DCMTK is missing."""
    if shutil.which(tool) is None:
        pytest.fail(
            f"DCMTK's {tool} is not installed: dev/setup.sh installs it (apt-get install dcmtk)"
        )
    return subprocess.run(
        [tool, *map(str, args)], capture_output=True, check=True, timeout=60
    ).stdout


# -- the conventions in which dicomlake's JSON and dcm2json's differ


def _float32(values: list[Any]) -> list[Any]:
    return [v if v is None else struct.unpack("<f", struct.pack("<f", v))[0] for v in values]


def _even(value: bytes) -> bytes:
    return value + b"\0" * (len(value) % 2)


def _pn(value: Any) -> Any:
    if not isinstance(value, dict):
        return value
    groups = {k: v.rstrip("^") for k, v in value.items() if v.rstrip("^")}
    return groups or None


Transform = Callable[[str, dict[str, Any]], dict[str, Any]]


def _stripped(value: Any, vr: str, strip: Callable[[str], str]) -> Any:
    """A text value as ``strip`` leaves it; a DS or IS one so changed as its number."""
    if not isinstance(value, str) or strip(value) == value:
        return value
    text = strip(value)
    if vr in ("DS", "IS"):
        with contextlib.suppress(ValueError):
            return int(text) if vr == "IS" else float(text)
    return text


def _stripping(strip: Callable[[str], str], vrs: Container[str] | None = None) -> Transform:
    """A transform of the text values (of ``vrs``, else of any VR) as ``strip`` leaves them."""
    return lambda key, e: (
        _values(e, lambda vs: [_stripped(v, e["vr"], strip) for v in vs])
        if vrs is None or e.get("vr") in vrs
        else e
    )


def _values(elem: dict[str, Any], convert: Callable[[list[Any]], list[Any]]) -> dict[str, Any]:
    if "Value" not in elem:
        return elem
    return {**elem, "Value": convert(elem["Value"])}


def _bulk(ours: dict[str, Any], theirs: dict[str, Any]) -> bool:
    inline = theirs.get("InlineBinary")
    return (
        "BulkDataURI" in ours
        and inline is not None
        and ours["vr"] == theirs["vr"]
        and len(base64.b64decode(inline)) > BULK_THRESHOLD
    )


# (name, transform applied to both sides); in order, each on the result of the ones before
_TRANSFORMS: list[tuple[str, Transform]] = [
    (
        "charset_utf8",
        lambda key, e: {**e, "Value": ["ISO_IR 192"]} if key == "00080005" else e,
    ),
    (
        "float_print",
        lambda key, e: _values(e, _float32) if e.get("vr") == "FL" else e,
    ),
    (
        "float_print",
        lambda key, e: (
            _values(e, lambda vs: [None if v is None else float(f"{v:.15g}") for v in vs])
            if e.get("vr") == "FD"
            else e
        ),
    ),
    (
        "big_integers_as_text",
        lambda key, e: (
            _values(e, lambda vs: [int(v) for v in vs]) if e.get("vr") in ("UV", "SV") else e
        ),
    ),
    (
        "odd_length_padding",
        lambda key, e: (
            {
                **e,
                "InlineBinary": base64.b64encode(
                    _even(base64.b64decode(e["InlineBinary"]))
                ).decode(),
            }
            if "InlineBinary" in e
            else e
        ),
    ),
    ("nul_padding", _stripping(lambda text: text.rstrip("\0"))),
    ("whitespace_around_values", _stripping(str.strip, ("AE", "DS", "IS"))),
    (
        "pn_trailing_carets",
        lambda key, e: _values(e, lambda vs: [_pn(v) for v in vs]) if e.get("vr") == "PN" else e,
    ),
    (
        "empty_values",
        lambda key, e: (
            {k: v for k, v in e.items() if k != "Value"}
            if all(v in ("", None) for v in e.get("Value", [0]))
            else _values(e, lambda vs: [None if v == "" else v for v in vs])
        ),
    ),
]


def normalised(
    ours: dict[str, Any], theirs: dict[str, Any], counts: Counter[str], top: bool = True
) -> tuple[dict[str, Any], dict[str, Any]]:
    """The two DICOM JSON documents of one header with their conventional differences removed;
    ``counts`` counts each convention met. What is left different is a real difference.

    The conventions, and why each is no difference in what was read:

    dcm2json runs on the file as ``dcmconv +uc`` rewrites it: defined-length UN elements of
    tags the dictionary knows take their dictionary VR there, as pydicom reads them.

    - ``group_length``: (gggg,0000) group lengths are kept in the lake as the file has them;
      dcm2json never writes them (they only count bytes, and are wrong once anything changes).
    - ``pixel_data``: the top-level pixel data is not in the split header (it is cut into
      frames, compared below); dcm2json writes it inline, or, for encapsulated pixel data it
      cannot write, it is removed with ``dcmodify -ea`` before dcm2json runs.
    - ``bulk_data``: binary values longer than `BULK_THRESHOLD` bytes are a ``BulkDataURI`` in
      the lake (their bytes stay in the rebuilt file); dcm2json writes them ``InlineBinary``.
    - ``charset_utf8``: dcm2json converts all text to UTF-8 and declares ``ISO_IR 192``; the
      lake's JSON keeps the declared character set (its text is decoded to Unicode as well,
      so a wrong decoding still shows in the text values compared).
    - ``float_print``: dcm2json writes FL with 9 significant digits, and FD with 17 digits not
      always correctly rounded (one unit in the last place off); the lake writes the shortest
      repr of the exact value. FL compare as 32-bit floats, FD to 15 significant digits. (A
      ``2`` against ``2.0`` is already equal as a JSON number.)
    - ``trailing_padding``: (FFFC,FFFC) Data Set Trailing Padding has no meaning (PS3.5 7.1);
      DCMTK drops it as it reads the file again.
    - ``big_integers_as_text``: dcm2json writes UV and SV values as strings (beyond what a
      JSON number holds exactly); the lake writes numbers.
    - ``odd_length_padding``: DCMTK pads an odd-length binary value with a zero byte, as a
      DICOM value must be of even length; the lake keeps the bytes the file holds.
    - ``nul_padding``: some writers pad text values with NULs, which the standard pads a UI
      with only (PS3.5 6.2); dcm2json keeps them as part of the value (but in PN and UI), so
      a DS or IS so padded is no number to it. The lake drops them as padding, as pydicom
      reads them (an AE's too), and reads the number: NUL is in no text VR's repertoire.
    - ``whitespace_around_values``: pydicom reads an AE, DS or IS value without the
      whitespace around it, tabs included (``str.strip``); dcm2json keeps a tab as part of
      the value, so a DS or IS with one is no number to it. No control character is in these
      VRs' repertoires (PS3.5 6.2): the lake reads the value the tabs surround.
    - ``pn_trailing_carets``: dcm2json drops empty trailing name components (``A^B^^`` is
      ``A^B``, ``^^`` is no name); the lake keeps the name as written.
    - ``empty_values``: an empty value among several is ``""`` in the lake and ``null`` in
      dcm2json; a value of padding alone is no ``Value`` in the lake and ``[null]`` there.

    Outside the JSON, an AT value's element row text is its tags as dcmdump writes them but
    in upper-case hex (`test_at_values_in_rows_are_dcmdumps_tags`).
    """
    ours, theirs = dict(ours), dict(theirs)
    for key in sorted(set(ours) | set(theirs)):
        a, b = ours.get(key), theirs.get(key)
        if key.endswith("0000") and b is None:
            counts["group_length"] += 1
            del ours[key]
        elif key == "FFFCFFFC" and b is None:
            counts["trailing_padding"] += 1
            del ours[key]
        elif top and key == "7FE00010" and a is None:
            counts["pixel_data"] += 1
            theirs.pop(key, None)
        elif a is None or b is None or a == b:
            continue
        elif a.get("vr") == b.get("vr") == "SQ" and len(_items(a)) == len(_items(b)):
            pairs = [
                normalised(x, y, counts, False) for x, y in zip(_items(a), _items(b), strict=True)
            ]
            ours[key] = {**a, "Value": [x for x, _ in pairs]}
            theirs[key] = {**b, "Value": [y for _, y in pairs]}
        elif _bulk(a, b):
            counts["bulk_data"] += 1
            theirs[key] = a
        else:
            met = []
            for name, transform in _TRANSFORMS:
                x, y = transform(key, a), transform(key, b)
                if (x, y) != (a, b):
                    met.append(name)
                a, b = x, y
                if a == b:
                    counts.update(set(met))
                    ours[key] = theirs[key] = a
                    break
    return ours, theirs


def _items(elem: dict[str, Any]) -> list[dict[str, Any]]:
    return elem.get("Value", [])


def _leaves(document: dict[str, Any]) -> int:
    return sum(
        1 + sum(_leaves(item) for item in elem.get("Value", [])) if elem.get("vr") == "SQ" else 1
        for elem in document.values()
    )


def _differences(ours: dict[str, Any], theirs: dict[str, Any]) -> list[str]:
    return [
        f"{key}: lake {ours.get(key)!r:.300} dcm2json {theirs.get(key)!r:.300}"
        for key in sorted(set(ours) | set(theirs))
        if ours.get(key) != theirs.get(key)
    ]


def _dcm2json(path: Path, encapsulated: bool, tmp_path: Path) -> dict[str, Any]:
    """dcm2json of the file as DCMTK reads it with defined-length UN elements of known tags
    taken by their dictionary VR (``dcmconv +uc``, as pydicom reads them)."""
    copy = tmp_path / "dcmtk.dcm"
    dcmtk("dcmconv", "-q", "+uc", path, copy)
    if encapsulated:  # dcm2json cannot write encapsulated pixel data inline: remove it
        dcmtk("dcmodify", "-q", "-nb", "-ea", "(7fe0,0010)", copy)
    return json.loads(dcmtk("dcm2json", "-q", "-fc", copy))


def compare_header(path: Path, tmp_path: Path, counts: Counter[str]) -> int:
    """Compare one file's header with dcm2json's; return the elements compared."""
    split = split_instance(path.read_bytes())
    ours = json.loads(header_json(split.dataset))
    theirs = _dcm2json(path, split.encapsulated, tmp_path)
    ours, theirs = normalised(ours, theirs, counts)
    assert not _differences(ours, theirs), "\n".join(_differences(ours, theirs))
    return _leaves(theirs)


HEADER_PATHS = [p for p in split_paths() if p.name not in DCMTK_UNREADABLE]


def test_excluded_files_are_still_in_the_corpus() -> None:
    names = {p.name for p in split_paths()}
    assert set(DCMTK_UNREADABLE) | set(UNDECODABLE) <= names


@pytest.mark.parametrize("path", HEADER_PATHS, ids=corpus_id)
def test_header_agrees_with_dcm2json(path: Path, tmp_path: Path) -> None:
    assert compare_header(path, tmp_path, Counter()) > 0


# Corpus files with attributes set to these texts, written as they are
_REWRITTEN: dict[str, dict[str, str]] = {
    "invalid-ds-is": {
        "PixelSpacing": "1.06,0.206",
        "SeriesNumber": "12A",
        "SliceThickness": "10.50/ 15.00",
    },
    # Padding around values (PS3.5 6.2) is no part of them: the lake drops it as dcm2json
    "padded-values": {
        "StudyDescription": "  leading and trailing  ",
        "InstitutionName": " A \\  B",
        "StationName": " SH ",
        "Modality": " CT",
        "ImageType": "ORIGINAL \\ PRIMARY \\AXIAL ",
        "RetrieveAETitle": " AET ",
        "ReferringPhysicianName": " Doe^Jane \\ Roe^R = Ideo ",
        "ImageComments": "  leading spaces kept in text  ",
        "DerivationDescription": " kept ",
        "StudyTime": "120000 ",
        "AcquisitionDateTime": "20200101120000 ",
    },
    # Spaces around a name's components pad them (PS3.5 6.2.1): dcm2json drops them
    "name-components": {
        "ReferringPhysicianName": "Doe ^ Jane = Ideo ^ G \\ Van Der ^  ^ R ",
        "PerformingPhysicianName": " ^ \\Roe^  Richard",
    },
    # Values padded with NULs instead of spaces (an AE's too)
    "nul-padded": {
        "StudyDescription": "Desc\0\0",
        "InstitutionName": "Inst\0\\B\0",
        "Modality": "CT\0\0",
        "StudyTime": "120000\0\0",
        "SliceThickness": "1.5\0",
        "SeriesNumber": "12\0\0",
        "ImageComments": "text\0\0",
        "RetrieveAETitle": "AET\0",
        "PatientName": "Doe^Jane\0\0",
    },
    # Tabs around AE, DS and IS values
    "tabbed-values": {
        "RetrieveAETitle": "\tAET\t\\ B\t",
        "SliceThickness": "\t1.5\t",
        "PixelSpacing": "1.5\t\\\t2",
        "SeriesNumber": "\t12\t",
        "AcquisitionNumber": "3 \t",
    },
    # A number string is a number by the standard's grammar and range only (PS3.5 6.2)
    "number-strings": {
        "ImagePositionPatient": "1\\ \\2 ",
        "PixelSpacing": "1\\ x ",
        "SliceLocation": "1_0 ",
        "SeriesNumber": "2147483648",
        "AcquisitionNumber": "12\\ \\13 ",
        "ReferringPhysicianName": "A=B=C=D ",
    },
    # A DS or IS value longer than PS3.5 allows is its text, and one of 16 digits (more than a
    # double holds) a number of exactly those digits
    "number-string-lengths": {
        "SliceThickness": "9007199254740993",
        "PixelSpacing": "1.2345678901234567890\\12345678901234567",
        "SliceLocation": "  1.23456789012  ",
        "ImagePositionPatient": "-0\\+0000000000001\\-.5e+3",
        "ImageOrientationPatient": "1\\0\\0\\0\\1\\+0000000000000000",
        "SeriesNumber": "+0000000000012",
        "AcquisitionNumber": " 00000000012 ",
    },
}


def _crafted() -> dict[str, bytes]:
    """Crafted files whose headers DCMTK reads: odd values and encodings the lake keeps."""
    uid = b"1.2.826.0.1.3680043.9.7777.10"
    un_items = (
        tag_bytes((0x0008, 0x1115))
        + b"UN\0\0\xff\xff\xff\xff"
        + tag_bytes((0xFFFE, 0xE000))
        + b"\xff" * 4
        + element_bytes((0x0020, 0x000E), "UI", uid, implicit=True)
        + tag_bytes((0xFFFE, 0xE00D))
        + bytes(4)
        + tag_bytes((0xFFFE, 0xE0DD))
        + bytes(4)
    )
    no_sop = pydicom.dcmread(CT)
    del no_sop.SOPInstanceUID
    out = pydicom.filebase.DicomBytesIO()
    no_sop.save_as(out, enforce_file_format=False)
    return {
        **{name: rewritten(CT, **values) for name, values in _REWRITTEN.items()},
        "un-sequence-implicit-items": before_pixels(CT.read_bytes(), un_items),
        "no-sop-instance-uid": out.getvalue(),
        # 65535 entries: the first value is unsigned by the standard, -1 as written
        "lut-descriptor-written-ss": before_pixels(
            CT.read_bytes(),
            element_bytes((0x0028, 0x1101), "SS", struct.pack("<3h", -1, -32768, 16)),
        ),
        "padded-private-creator-and-partial-tag": before_pixels(
            CT.read_bytes(),
            element_bytes((0x0020, 0x9165), "AT", struct.pack("<HHH", 0x10, 0x10, 0x20))
            + element_bytes((0x0013, 0x0010), "LO", b" ACME ")
            + element_bytes((0x0013, 0x1001), "LO", b"v "),
        ),
    }


@pytest.mark.filterwarnings("ignore::UserWarning")
@pytest.mark.parametrize("name", sorted(_crafted()))
def test_crafted_header_agrees_with_dcm2json(name: str, tmp_path: Path) -> None:
    path = tmp_path / f"{name}.dcm"
    path.write_bytes(_crafted()[name])
    assert compare_header(path, tmp_path, Counter()) > 0


def test_an_un_sequence_in_a_big_endian_file_agrees_with_dcm2json(tmp_path: Path) -> None:
    """An undefined-length UN in explicit VR big endian holds implicit VR little endian items
    (PS3.5 6.2.2), as DCMTK reads them: a nested sequence in them too."""
    modality = element_bytes((0x0008, 0x0060), "CS", b"MR", implicit=True)
    nested = tag_bytes((0x0040, 0x0008)) + b"\xff" * 4 + undefined_item(modality)
    items = undefined_item(modality, nested + tag_bytes(SEQ_END) + bytes(4))
    path = tmp_path / "un-big-endian.dcm"
    path.write_bytes(big_endian_un((0x0040, 0x0275), items))  # RequestAttributesSequence
    assert compare_header(path, tmp_path, Counter()) > 0


@pytest.mark.parametrize(
    "value", [struct.pack("<4H", 0x7FE0, 0x10, 0x18, 0x50), struct.pack("<3H", 0x10, 0x10, 0x20)]
)
def test_at_values_in_rows_are_dcmdumps_tags(value: bytes, tmp_path: Path) -> None:
    """An AT value's element row text is its tags as dcmdump writes them, ``(gggg,eeee)``
    joined with ``\\`` (a partial tag after them left out); dcmdump's hex is lower-case, the
    row's upper-case, as PS3.6 writes tags and the rows' ``tag`` column holds them."""
    path = tmp_path / "at.dcm"
    path.write_bytes(before_pixels(CT.read_bytes(), element_bytes((0x0020, 0x9165), "AT", value)))
    dump = dcmtk("dcmdump", "-q", "+P", "0020,9165", path).decode()
    rows = element_rows(split_instance(path.read_bytes()).dataset)
    text = rows["value_text"][rows["tag"].index("00209165")]
    assert dump.split()[2] == text.lower() and text == text.upper()


# -- frames


def _native(path: Path) -> pydicom.Dataset:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return pydicom.dcmread(path)


def compare_frames(path: Path, tmp_path: Path) -> int:
    """Compare the frames the lake keeps with DCMTK's pixels; return the frames compared.

    Native frames are the file's bytes: against DCMTK's little endian writing of them, the
    stored words swapped by the pixel VR's word size where the file is big endian (PS3.5 7.3).
    Encapsulated frames are decoded (pydicom's decoders, as the lake does), the stored colour
    space kept, against DCMTK's decompression without colour conversion (``+cn``).
    """
    split = split_instance(path.read_bytes())
    out = tmp_path / "native.dcm"
    if not split.encapsulated:
        dcmtk("dcmconv", "-q", "+te", path, out)  # DCMTK's own native, little endian writing
        ours = b"".join(split.frames)
        width = _WORD_BYTES[split.frame_spec.pixel_vr]
        if not split.frame_spec.little_endian and width > 1:
            ours = np.frombuffer(ours, f">u{width}").astype(f"<u{width}").tobytes()
        assert _native(out).PixelData[: len(ours)] == ours
        return len(split.frames)
    syntax = split.transfer_syntax_uid
    tool = _DECOMPRESSORS[syntax]
    dcmtk(tool, "-q", *(["+cn"] if tool == "dcmdjpeg" else []), path, out)
    native = _native(out)
    pixels = native.PixelData
    start = 0
    for index, frame in enumerate(split.frames):
        ours = encapsulated_frame_array(frame, split.dataset, raw=True)
        theirs = np.frombuffer(pixels, ours.dtype, ours.size, start)
        start += ours.nbytes
        if native.get("PlanarConfiguration") == 1:  # as DCMTK wrote it
            theirs = theirs.reshape(ours.shape[-1], *ours.shape[:-1]).transpose(1, 2, 0)
        difference = np.abs(ours.astype(np.int64) - theirs.reshape(ours.shape)).max()
        assert difference <= (_LOSSY_TOLERANCE if syntax in _LOSSY else 0), (index, difference)
    return len(split.frames)


def _frames_comparable(path: Path) -> bool:
    """Native frames, or encapsulated ones of a syntax DCMTK decompresses, cut one per frame."""
    split = split_instance(path.read_bytes())
    if split.encapsulated:
        return (
            split.transfer_syntax_uid in _DECOMPRESSORS
            and len(split.frames) == split.number_of_frames
        )
    return split.frame_spec is not None and len(split.frames) > 0


FRAME_PATHS = [
    p
    for p in split_paths()
    if p.name not in {*DCMTK_UNREADABLE, *UNDECODABLE} and _frames_comparable(p)
]


@pytest.mark.parametrize("path", FRAME_PATHS, ids=corpus_id)
def test_frames_agree_with_dcmtk_decoding(path: Path, tmp_path: Path) -> None:
    assert compare_frames(path, tmp_path) > 0
