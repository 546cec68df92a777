"""split_instance on every corpus file, on cut and damaged copies, and on made-up layouts;
split_stream against it, reading through small ranged reads."""

from __future__ import annotations

import os
import struct
import warnings
from pathlib import Path

import pydicom
import pytest
from corpus import corpus_id, corpus_paths
from pydicom.data import get_testdata_file
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.encaps import encapsulate, encapsulate_extended, generate_frames
from pydicom.filereader import data_element_generator
from pydicom.uid import ExplicitVRLittleEndian

from dicomlake.dicom import fragments_payload, split_instance, split_stream
from dicomlake.dicom.promote import promoted_values
from dicomlake.dicom.split import MAX_INFLATED, header_from_prefix
from dicomlake.dicom.walk import MAX_DEPTH
from dicomlake.errors import DicomParseError

PATHS = corpus_paths()
TEST_FILES = Path(pydicom.__file__).parent / "data" / "test_files"

# Every rejected corpus file, with why; any other file must split.
REJECTED = {
    "MR_truncated.dcm": "truncated",  # pixel data cut short
    "rtplan_truncated.dcm": "truncated",  # ends inside a sequence
    "emri_small_jpeg_2k_lossless_too_short.dcm": "truncated",  # no sequence delimiter
    "badVR.dcm": "corrupt",  # NumberOfFrames '1A'
    "no_meta.dcm": "not_dicom",  # starts with a stray byte: no tag at offset 0
    "empty_charset_LEI.dcm": "no_sop_instance_uid",
    "meta_missing_tsyntax.dcm": "no_sop_instance_uid",
    "nested_priv_SQ.dcm": "no_sop_instance_uid",
}


def expected_reason(path: Path) -> str | None:
    if path.name.startswith("DICOMDIR"):
        return "dicomdir"
    if path.name in REJECTED:
        return REJECTED[path.name]
    dicom = path.suffix == ".dcm" or (path.suffix == "" and path.name != "README")
    return None if dicom else "not_dicom"


def read_reference(path: Path, **kwargs: object) -> pydicom.FileDataset:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return pydicom.dcmread(path, force=True, **kwargs)


# pydicom warns when the test itself reads odd values (e.g. a UI holding a hash)
@pytest.mark.filterwarnings("ignore:Invalid value for VR:UserWarning")
@pytest.mark.parametrize("path", PATHS, ids=corpus_id)
def test_corpus_file_splits_or_is_rejected_as_expected(path: Path) -> None:
    data = path.read_bytes()
    reason = expected_reason(path)
    if reason is not None:
        with pytest.raises(DicomParseError) as info:
            split_instance(data)
        assert info.value.reason == reason, info.value.message
        return
    split = split_instance(data)
    assert split.prefix + b"".join(split.frames) + split.suffix == data
    reference = read_reference(path)
    # The instance's name: its SOPInstanceUID, else its file meta's (as DCMTK reads it)
    own = reference.get("SOPInstanceUID")
    assert split.sop_uid_from_meta == (own is None)
    assert split.dataset.get("SOPInstanceUID") == own
    assert not any(tag in split.dataset for tag in (0x7FE00008, 0x7FE00009, 0x7FE00010))
    header = read_reference(path, stop_before_pixels=True)
    # The split header holds pydicom's header, plus elements found after the pixel data
    assert set(header.keys()) <= set(split.dataset.keys())
    assert all(tag > 0x7FE00010 for tag in set(split.dataset.keys()) - set(header.keys()))
    _check_frames_against_pydicom(split, reference)


def _check_frames_against_pydicom(split, reference: pydicom.FileDataset) -> None:
    if "Rows" not in reference and not split.frames:
        return  # no image
    pixels = reference.get("PixelData") or reference.get("FloatPixelData")
    pixels = pixels or reference.get("DoublePixelData")
    if split.transfer_syntax_uid == pydicom.uid.DeflatedExplicitVRLittleEndian:
        assert split.frames == [] and split.number_of_frames == 1
    elif split.encapsulated:
        payloads = list(generate_frames(pixels, number_of_frames=split.number_of_frames))
        if len(split.frames) == split.number_of_frames:
            assert [fragments_payload(frame) for frame in split.frames] == payloads
        else:
            assert fragments_payload(b"".join(split.frames)) == b"".join(payloads)
    else:
        joined = b"".join(split.frames)
        # Bytes past the declared frames (pad byte, padding) open the suffix
        assert pixels.startswith(joined) and split.suffix.startswith(pixels[len(joined) :])
        if split.frame_spec is not None:
            assert len(split.frames) == split.number_of_frames
            assert {len(f) for f in split.frames} == {split.frame_spec.frame_length}


def test_empty_file() -> None:
    with pytest.raises(DicomParseError) as info:
        split_instance(b"")
    assert info.value.reason == "empty"


@pytest.mark.parametrize("size", [1, 7, 100, 5000])
def test_random_bytes_are_not_dicom(size: int) -> None:
    data = bytes([0xA5]) + os.urandom(size - 1)  # first byte keeps group 0002-0008 out
    with pytest.raises(DicomParseError) as info:
        split_instance(data)
    assert info.value.reason == "not_dicom"


def test_random_bytes_after_dicm_are_rejected_with_offset() -> None:
    data = b"\0" * 128 + b"DICM" + bytes(range(256)) * 4
    with pytest.raises(DicomParseError) as info:
        split_instance(data)
    assert info.value.reason in {"truncated", "corrupt"}
    assert "offset" in info.value.message


def _top_level_ends(path: Path) -> set[int]:
    """Offsets where a top-level element (meta or dataset) ends, by pydicom's own reader."""
    implicit, little = read_reference(path, stop_before_pixels=True).original_encoding
    ends = {132}
    with open(path, "rb") as fp:
        fp.seek(132)
        for _ in data_element_generator(fp, False, True, stop_when=lambda t, vr, n: t.group != 2):
            ends.add(fp.tell())
        for _ in data_element_generator(fp, implicit, little):
            ends.add(fp.tell())
    return ends


@pytest.mark.parametrize(
    "name", ["CT_small.dcm", "MR_small_bigendian.dcm", "MR_small_RLE.dcm", "rtplan.dcm"]
)
def test_every_cut_is_truncated_or_a_clean_element_boundary(name: str) -> None:
    path = Path(get_testdata_file(name))
    data = path.read_bytes()
    ends = _top_level_ends(path)
    # Every third byte of the header and the last 200 bytes, 40 cuts through the pixels
    cuts = {*range(1, 2500, 3), *range(2500, len(data), len(data) // 40)}
    cuts |= set(range(len(data) - 200, len(data)))
    for cut in sorted(c for c in cuts if 0 < c < len(data)):
        try:
            split = split_instance(data[:cut])
        except DicomParseError as exc:
            if cut <= 132:
                assert exc.reason == "not_dicom", (cut, exc)  # no 'DICM' yet: can't tell
            elif cut in ends:
                assert exc.reason in {"no_sop_instance_uid", "truncated"}, (cut, exc)
            else:
                assert exc.reason == "truncated", (cut, exc)
            continue
        # A file cut between two elements is a shorter, valid file: nothing can tell
        assert cut in ends, f"cut at {cut} was accepted"
        assert split.prefix + b"".join(split.frames) + split.suffix == data[:cut]


def test_cut_inside_native_pixel_data_names_the_shortfall() -> None:
    data = Path(get_testdata_file("emri_small_big_endian.dcm")).read_bytes()
    with pytest.raises(DicomParseError) as info:
        split_instance(data[: len(data) // 2])
    assert info.value.reason == "truncated"
    assert "(7FE0,0010)" in info.value.message


def test_broken_fragment_item_tag_is_corrupt() -> None:
    data = bytearray((TEST_FILES / "MR_small_RLE.dcm").read_bytes())
    split = split_instance(bytes(data))
    first = len(split.prefix)
    data[first : first + 4] = b"\x10\x00\x10\x00"
    with pytest.raises(DicomParseError) as info:
        split_instance(bytes(data))
    assert info.value.reason == "corrupt"
    assert f"offset {first}" in info.value.message


def _rle_frames() -> tuple[pydicom.FileDataset, list[bytes]]:
    ds = read_reference(TEST_FILES / "SC_rgb_rle_2frame.dcm")
    frames = list(generate_frames(ds.PixelData, number_of_frames=2))
    return ds, frames


def _to_bytes(ds: pydicom.FileDataset, pixel_data: bytes, **extra: bytes) -> bytes:
    ds.PixelData = pixel_data
    for keyword, value in extra.items():
        setattr(ds, keyword, value)
    out = pydicom.filebase.DicomBytesIO()
    ds.save_as(out, enforce_file_format=True)
    return out.getvalue()


@pytest.mark.parametrize("has_bot", [True, False])
def test_two_fragments_per_frame(has_bot: bool) -> None:
    ds, frames = _rle_frames()
    data = _to_bytes(ds, encapsulate(frames, fragments_per_frame=2, has_bot=has_bot))
    split = split_instance(data)
    assert split.prefix + b"".join(split.frames) + split.suffix == data
    if has_bot:
        assert [fragments_payload(f) for f in split.frames] == frames
    else:  # RLE has no start marker to find frames by: one frame holds all items
        assert split.frames == [data[len(split.prefix) : len(data) - 8]]


def test_empty_pixel_data_of_a_compressed_syntax_is_one_empty_part() -> None:
    ds, frames = _rle_frames()
    encapsulated = _to_bytes(ds, encapsulate(frames))
    # The pixel data element, last in the file, written again with a defined length of 0
    pixel = b"\xe0\x7f\x10\x00OB\x00\x00"
    data = encapsulated[: encapsulated.rindex(pixel + b"\xff\xff\xff\xff")] + pixel + bytes(4)
    value_end = len(data)
    split = split_instance(data)
    assert split.frames == [b""] and split.prefix == data[:value_end]
    assert split.prefix + b"".join(split.frames) + split.suffix == data


def test_extended_offset_table() -> None:
    ds, frames = _rle_frames()
    pixels, offsets, lengths = encapsulate_extended(frames * 2)
    ds.NumberOfFrames = 4
    data = _to_bytes(ds, pixels, ExtendedOffsetTable=offsets, ExtendedOffsetTableLengths=lengths)
    split = split_instance(data)
    assert [fragments_payload(f) for f in split.frames] == frames * 2


def test_jpeg_fragments_without_offset_table_are_grouped_by_start_marker() -> None:
    ds = read_reference(TEST_FILES / "examples_ybr_color.dcm")
    frames = list(generate_frames(ds.PixelData, number_of_frames=ds.NumberOfFrames))[:3]
    ds.NumberOfFrames = 3
    data = _to_bytes(ds, encapsulate(frames, fragments_per_frame=3, has_bot=False))
    split = split_instance(data)
    assert [fragments_payload(f) for f in split.frames] == frames


def _native(rows: int, columns: int, frames: int, bits: int, pixels: bytes) -> bytes:
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.file_meta.MediaStorageSOPClassUID = ds.SOPClassUID = "1.2.840.10008.5.1.4.1.1.7"
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID = "1.2.3.4"
    ds.Rows, ds.Columns, ds.NumberOfFrames = rows, columns, frames
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
    ds.BitsAllocated = ds.BitsStored = bits
    ds.HighBit, ds.PixelRepresentation = bits - 1, 0
    ds.PixelData = pixels
    ds["PixelData"].VR = "OB" if bits <= 8 else "OW"
    ds.preamble = b"\0" * 128
    out = pydicom.filebase.DicomBytesIO()
    ds.save_as(out, enforce_file_format=True)
    return out.getvalue()


def test_one_bit_frames_off_byte_boundaries_stay_one_chunk() -> None:
    data = _native(3, 3, 2, 1, bytes([0b10101010, 0b01010101, 0b11]) + b"\0")
    split = split_instance(data)
    assert split.frame_spec is None and split.number_of_frames == 2
    assert split.frames == [bytes([0b10101010, 0b01010101, 0b11])]
    assert split.suffix == b"\0"


def test_pixel_data_shorter_than_declared_frames_is_truncated() -> None:
    with pytest.raises(DicomParseError) as info:
        split_instance(_native(4, 4, 3, 8, bytes(32)))
    assert info.value.reason == "truncated"
    assert "3 frame(s) need 48" in info.value.message


def _with_frames() -> list[Path]:
    """Corpus files that split into at least one frame (not deflated, with pixel data)."""
    return [
        p for p in PATHS if expected_reason(p) is None and split_instance(p.read_bytes()).frames
    ]


@pytest.mark.filterwarnings("ignore:Invalid value for VR:UserWarning")
@pytest.mark.parametrize("path", _with_frames(), ids=corpus_id)
def test_prefix_alone_gives_header_and_frame_spec(path: Path) -> None:
    split = split_instance(path.read_bytes())
    dataset, spec = header_from_prefix(split.prefix)
    assert spec == split.frame_spec
    assert dataset.SOPInstanceUID == read_reference(path).SOPInstanceUID


def test_prefix_of_a_deflated_file_gives_its_header() -> None:
    path = TEST_FILES / "image_dfl.dcm"
    split = split_instance(path.read_bytes())
    dataset, spec = header_from_prefix(split.prefix)
    assert spec is None
    reference = read_reference(path, stop_before_pixels=True)
    assert dataset.SOPInstanceUID == reference.SOPInstanceUID
    assert (dataset.Rows, dataset.Columns) == (reference.Rows, reference.Columns)


def test_a_deflated_file_keeps_the_elements_after_its_pixel_data(tmp_path: Path) -> None:
    """pydicom reads the trailing padding back: the deflated header has it too."""
    ds = pydicom.dcmread(get_testdata_file("CT_small.dcm"))
    ds.DataSetTrailingPadding = b"\0" * 8
    ds.file_meta.TransferSyntaxUID = pydicom.uid.DeflatedExplicitVRLittleEndian
    ds.save_as(tmp_path / "dfl.dcm", enforce_file_format=True)
    data = (tmp_path / "dfl.dcm").read_bytes()
    reference = pydicom.dcmread(tmp_path / "dfl.dcm")
    assert reference.DataSetTrailingPadding == b"\0" * 8
    header = split_instance(data).dataset
    assert header.DataSetTrailingPadding == reference.DataSetTrailingPadding
    assert header.SOPInstanceUID == reference.SOPInstanceUID
    assert "PixelData" not in header


# --- split_stream: the same parts through ranged reads, in bounded memory ----------------------


class _RangedReads:
    """A file read by (offset, length), as a landing filesystem reads it; every read kept."""

    def __init__(self, data: bytes) -> None:
        self.data = data
        self.offsets: list[int] = []
        self.lengths: list[int] = []

    def __call__(self, offset: int, length: int) -> bytes:
        self.offsets.append(offset)
        self.lengths.append(length)
        return self.data[offset : offset + length]


def _check_streamed_like_whole(data: bytes, block: int) -> None:
    """split_stream gives split_instance's parts (or error), never reading more at once than
    the largest part it gives back (or one block). The limit on what is held at once is
    split_instance's default limit on a deflated dataset's inflated size."""
    reads = _RangedReads(data)
    try:
        whole = split_instance(data)
    except DicomParseError as exc:
        with pytest.raises(DicomParseError) as info:
            split_stream(reads, len(data), limit=MAX_INFLATED, block=block)
        assert (info.value.reason, info.value.message) == (exc.reason, exc.message)
        return
    streamed = split_stream(reads, len(data), limit=MAX_INFLATED, block=block)
    frames = list(streamed.frames)
    assert streamed.prefix + b"".join(frames) + streamed.suffix == data
    assert streamed.prefix == whole.prefix and streamed.suffix == whole.suffix
    assert frames == whole.frames
    with warnings.catch_warnings():  # comparing converts values, and pydicom checks them
        warnings.simplefilter("ignore")
        assert streamed.dataset == whole.dataset
        assert streamed.dataset.file_meta == whole.dataset.file_meta
    assert (
        streamed.encapsulated,
        streamed.frame_spec,
        streamed.transfer_syntax_uid,
        streamed.number_of_frames,
    ) == (whole.encapsulated, whole.frame_spec, whole.transfer_syntax_uid, whole.number_of_frames)
    largest = max(len(streamed.prefix), len(streamed.suffix), *map(len, frames))
    assert max(reads.lengths) <= max(largest, block)


@pytest.mark.parametrize("block", [1, 100])
@pytest.mark.parametrize("path", PATHS, ids=corpus_id)
def test_streamed_split_of_corpus_file_is_split_instances(path: Path, block: int) -> None:
    _check_streamed_like_whole(path.read_bytes(), block)


def _encapsulated_layouts() -> dict[str, tuple[bytes, int]]:
    """Fragment layouts split_instance groups by each of its rules: name -> (file, frames)."""
    ds, frames = _rle_frames()
    layouts = {
        "two fragments per frame, offset table": (
            _to_bytes(ds, encapsulate(frames, fragments_per_frame=2, has_bot=True)),
            2,
        ),
        "two fragments per frame, no table nor markers": (
            _to_bytes(ds, encapsulate(frames, fragments_per_frame=2, has_bot=False)),
            1,
        ),
    }
    pixels, offsets, lengths = encapsulate_extended(frames * 2)
    ds.NumberOfFrames = 4
    layouts["extended offset table"] = (
        _to_bytes(ds, pixels, ExtendedOffsetTable=offsets, ExtendedOffsetTableLengths=lengths),
        4,
    )
    jpeg = read_reference(TEST_FILES / "examples_ybr_color.dcm")
    jpeg_frames = list(generate_frames(jpeg.PixelData, number_of_frames=jpeg.NumberOfFrames))
    jpeg.NumberOfFrames = 3
    layouts["start markers"] = (
        _to_bytes(jpeg, encapsulate(jpeg_frames[:3], fragments_per_frame=3, has_bot=False)),
        3,
    )
    return layouts


@pytest.mark.parametrize("name", list(_encapsulated_layouts()))
def test_streamed_grouping_of_fragments_is_split_instances(name: str) -> None:
    data, frames = _encapsulated_layouts()[name]
    assert len(split_instance(data).frames) == frames
    for block in (1, 9, 4096):
        _check_streamed_like_whole(data, block)


def _file_meta_mutations(data: bytes) -> dict[str, bytes]:
    """Copies of a Part 10 file whose file meta is cut short, or has an element's group, VR
    or length changed: each element read as plain bytes by the walk over a file held whole,
    or by the element-by-element walk."""
    mutated, offset = {}, 132
    while struct.unpack_from("<H", data, offset)[0] == 0x0002:
        explicit_long = data[offset + 4 : offset + 6] in (b"OB", b"UN", b"UT", b"SQ")
        length = struct.unpack_from(
            "<L" if explicit_long else "<H", data, offset + 6 + 2 * explicit_long
        )[0]
        end = offset + (12 if explicit_long else 8) + length
        for cut in (offset + 3, offset + 7, offset + 11, end - 1):
            mutated[f"cut at {cut}"] = data[:cut]
        for vr in (b"SQ", b"UN", b"OB", b"UT", b"zz", b"\0\0"):
            mutated[f"{offset} as {vr!r}"] = data[: offset + 4] + vr + data[offset + 6 :]
        for size in (0, 8, 0xFFFF):
            at = offset + (8 if explicit_long else 6)
            form = "<L" if explicit_long else "<H"
            mutated[f"{offset} of {size} bytes"] = (
                data[:at] + struct.pack(form, size) + data[at + struct.calcsize(form) :]
            )
        mutated[f"{offset} undefined"] = data[: offset + 4] + b"OB\0\0" + b"\xff" * 4 + data[end:]
        mutated[f"{offset} in group 8"] = data[:offset] + b"\x08" + data[offset + 1 :]
        offset = end
    # Elements added at its end: values that hold items, or bytes, or no valid VR
    item = struct.pack("<HHL", 0xFFFE, 0xE000, 12) + struct.pack("<HH2sH", 0x0002, 0x0300, b"UL", 4)
    item += bytes(4)
    delimited = struct.pack("<HHL", 0xFFFE, 0xE000, 0xFFFFFFFF) + item[8:]
    delimited += struct.pack("<HHLHHL", 0xFFFE, 0xE00D, 0, 0xFFFE, 0xE0DD, 0)
    deep = item
    for _ in range(MAX_DEPTH):  # one more level than a walk reads
        deep = struct.pack("<HH2sHL", 0x0002, 0x0200, b"SQ", 0, len(deep)) + deep
        deep = struct.pack("<HHL", 0xFFFE, 0xE000, len(deep)) + deep
    for name, vr, value, length in (
        ("a sequence", b"SQ", item, len(item)),
        ("a sequence nested too deep", b"SQ", deep, len(deep)),
        ("an undefined-length sequence", b"SQ", delimited, 0xFFFFFFFF),
        ("an unknown value of items", b"UN", item, len(item)),
        ("an unknown value of bytes", b"UN", bytes(12), 12),
        ("an empty value", b"OB", b"", 0),
        ("no valid VR", b"zz", bytes(12), 12),
    ):
        added = struct.pack("<HH2sHL", 0x0002, 0x0200, vr, 0, length) + value
        mutated[f"{name} added"] = data[:offset] + added + data[offset:]
    return mutated


@pytest.mark.parametrize("path", ["CT_small.dcm", "MR_small_bigendian.dcm", "rtplan.dcm"])
def test_streamed_split_of_a_damaged_file_meta_is_split_instances(path: str) -> None:
    data = Path(get_testdata_file(path)).read_bytes()
    for name, mutation in _file_meta_mutations(data).items():
        assert _parts(mutation, streamed=True) == _parts(mutation, streamed=False), name


def _parts(data: bytes, *, streamed: bool) -> tuple[object, ...]:
    """What `split_instance` or (``streamed``, through ranged reads) `split_stream` cuts
    ``data`` into, or its error, without the values of its header."""
    try:
        cut = (
            split_stream(_RangedReads(data), len(data), limit=MAX_INFLATED, block=64)
            if streamed
            else split_instance(data)
        )
    except DicomParseError as exc:
        return exc.reason, exc.message
    return (
        cut.prefix,
        list(cut.frames),
        cut.suffix,
        cut.encapsulated,
        cut.frame_spec,
        cut.transfer_syntax_uid,
        cut.number_of_frames,
        cut.sop_uid_from_meta,
    )


def test_streaming_reads_each_frame_only_when_asked() -> None:
    frame = bytes(range(256)) * 16  # 64 x 64 x 8 bits
    data = _native(64, 64, 50, 8, frame * 50)
    reads = _RangedReads(data)
    split = split_stream(reads, len(data), limit=8192, block=512)
    assert sum(reads.lengths) < 3 * 512 + len(split.prefix) + len(split.suffix)
    before = len(reads.lengths)
    assert split.frames[49] == frame
    assert reads.lengths[before:] == [len(frame)]
    assert list(split.frames) == [frame] * 50


@pytest.mark.parametrize("frame_bytes", [700, 4096], ids=["frames-within-a-block", "larger"])
def test_streaming_in_order_reads_on_from_where_the_last_read_ended(frame_bytes: int) -> None:
    """Frames read in order are fetched onward from where the last read ended, so one open
    landing stream serves them, and no byte is fetched twice (a frame that starts inside the
    last block is not fetched again from its start)."""
    frames = [bytes([i]) * frame_bytes for i in range(40)]
    data = _native(1, frame_bytes, 40, 8, b"".join(frames))
    reads, block = _RangedReads(data), 1000
    split = split_stream(reads, len(data), limit=8192, block=block)
    assert list(split.frames) == frames
    ends = [o + n for o, n in zip(reads.offsets, reads.lengths, strict=True)]
    jumps = [o for o, end in zip(reads.offsets[1:], ends, strict=False) if o != end]
    assert reads.offsets[0] == 0 and jumps == []  # from the preamble on, one stream
    assert sum(reads.lengths) == len(data)  # no byte fetched twice


CT_SMALL = Path(get_testdata_file("CT_small.dcm")).read_bytes()  # one 32768-byte frame
_CT_PREFIX = len(split_instance(CT_SMALL).prefix)
# CT_small with 50,000 bytes of trailing padding (FFFC,FFFC) in place of its own 126
CT_PADDED = (
    CT_SMALL[: _CT_PREFIX + 32768]
    + struct.pack("<HH2sHL", 0xFFFC, 0xFFFC, b"OB", 0, 50_000)
    + bytes(50_000)
)


@pytest.mark.parametrize(
    ("data", "limit", "part"),
    [
        (CT_SMALL, _CT_PREFIX - 1, "the header"),
        (CT_SMALL, 32767, "a frame"),
        (CT_PADDED, 40_000, "the elements after the pixel data: 50012 bytes"),
    ],
    ids=["header", "frame", "suffix"],
)
def test_streaming_refuses_a_part_over_the_limit(data: bytes, limit: int, part: str) -> None:
    with pytest.raises(DicomParseError) as info:
        split_stream(_RangedReads(data), len(data), limit=limit)
    assert info.value.reason == "too_large"
    assert part in info.value.message
    # The largest part fits exactly
    whole = split_instance(data)
    largest = max(len(whole.prefix), len(whole.suffix), *map(len, whole.frames))
    assert split_stream(_RangedReads(data), len(data), limit=largest).suffix == whole.suffix


def test_streaming_refuses_a_deflated_file_over_the_limit() -> None:
    data = Path(get_testdata_file("image_dfl.dcm")).read_bytes()
    with pytest.raises(DicomParseError) as info:
        split_stream(_RangedReads(data), len(data), limit=len(data) - 1)
    assert info.value.reason == "too_large"
    assert "deflated" in info.value.message


@pytest.mark.parametrize("kept", [100, 20_000])
def test_a_file_that_shrinks_while_streamed_is_changed_while_reading(kept: int) -> None:
    with pytest.raises(DicomParseError) as info:
        split = split_stream(_RangedReads(CT_SMALL[:kept]), len(CT_SMALL), limit=1 << 20)
        list(split.frames)
    assert info.value.reason == "changed_while_reading"


@pytest.mark.parametrize("keep_meta_uid", [True, False], ids=["meta-uid", "no-uid"])
def test_an_instance_without_sop_instance_uid_is_named_by_its_file_meta(
    keep_meta_uid: bool,
) -> None:
    ds = read_reference(Path(get_testdata_file("CT_small.dcm")))
    uid = str(ds.file_meta.MediaStorageSOPInstanceUID)
    del ds.SOPInstanceUID
    if not keep_meta_uid:
        del ds.file_meta.MediaStorageSOPInstanceUID
    out = pydicom.filebase.DicomBytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ds.save_as(out, enforce_file_format=False)
    if not keep_meta_uid:
        with pytest.raises(DicomParseError) as exc:
            split_instance(out.getvalue())
        assert exc.value.reason == "no_sop_instance_uid"
        return
    split = split_instance(out.getvalue())
    assert split.sop_uid_from_meta and "SOPInstanceUID" not in split.dataset
    assert promoted_values(split)["SOPInstanceUID"] == uid
    assert (
        len(split.frames) == 1 and split.prefix + split.frames[0] + split.suffix == out.getvalue()
    )
    # Plain CT_small is named by its own (0008,0018)
    assert not split_instance(
        Path(get_testdata_file("CT_small.dcm")).read_bytes()
    ).sop_uid_from_meta
