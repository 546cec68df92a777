"""Split one DICOM file into header, frames and the bytes around them.

``prefix + b"".join(frames) + suffix`` is always the input, so a file can be rebuilt byte
for byte from its parts, while frames are stored and compressed on their own. `split_instance`
takes the file's bytes; `split_stream` the same file through ranged reads, in bounded memory.

The header is the FileDataset pydicom's read_partial gives (`SplitInstance.original`). For a
file held whole, the compiled core's walk (`native`) also reads its file meta and top-level
elements as pydicom's data_element_generator does: the split reads its values from those, and
the dataset is built from them only when something needs it (`original.Original`, `_from_walk`);
streamed and deflated files, and headers pydicom would read otherwise, are read by pydicom.
"""

from __future__ import annotations

import contextlib
import io
import struct
import warnings
import zlib
from collections.abc import Iterator, MutableSequence, Sequence
from dataclasses import dataclass
from itertools import chain, pairwise
from typing import Any, overload

import pydicom
from pydicom.charset import convert_encodings, default_encoding
from pydicom.datadict import keyword_for_tag, tag_for_keyword
from pydicom.dataelem import RawDataElement, convert_raw_data_element
from pydicom.dataset import Dataset, FileDataset, FileMetaDataset
from pydicom.filereader import read_dataset, read_partial
from pydicom.tag import BaseTag
from pydicom.uid import (
    DeflatedExplicitVRLittleEndian,
    ExplicitVRBigEndian,
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
    MediaStorageDirectoryStorage,
)
from pydicom.values import convert_string, converters

from dicomlake.dicom import native
from dicomlake.dicom.original import Original
from dicomlake.dicom.values import converted_element
from dicomlake.dicom.walk import (
    ITEM,
    MAX_DEPTH,
    MAX_ELEMENTS,
    SEQUENCE_DELIMITER,
    UNDEFINED,
    Element,
    Read,
    Reader,
    Walker,
    little_endian_items,
    tag_str,
)
from dicomlake.errors import DicomParseError

# By pydicom's dictionary, whose decoders take these names
PIXEL_KEYWORDS = {tag: keyword_for_tag(tag) for tag in (0x7FE00008, 0x7FE00009, 0x7FE00010)}
_NATIVE = frozenset({ImplicitVRLittleEndian, ExplicitVRLittleEndian, ExplicitVRBigEndian})
# Frame starts of compressed bitstreams: JPEG SOI, JPEG 2000 SOC+SIZ, JP2 signature box
_FRAME_MARKERS = (b"\xff\xd8", b"\xff\x4f\xff\x51", b"\x00\x00\x00\x0cjP  ")
# The most bytes a deflated dataset may inflate to in `split_instance` by default
MAX_INFLATED = 256 << 20
# The most frames (chunks) and encapsulated items of one instance: each costs a row and a
# chunk, so a file of millions of tiny frames is refused rather than held as millions of parts
MAX_FRAMES = 1 << 20
# Past this many frames, frames must hold `MIN_FRAME_BYTES` on average: each frame costs a
# chunk (its codec call, hash, seal and index entry) and a frames row, so a megabyte file of a
# million one-byte frames would cost minutes, a pack hundreds of times its size and a
# worker's memory; refused (kept as its quarantine copy) instead
FRAMES_OF_ANY_SIZE = 10_000
MIN_FRAME_BYTES = 4096
# A Part 10 file's preamble and 'DICM', before its file meta
START_BYTES = 132
_INFLATE_STEP = 1 << 20
_GROUP_LENGTH = BaseTag(0x00020000)
_SYNTAX = BaseTag(0x00020010)
# The attributes that size frames, and the values they may take (US attributes; the number
# of frames is kept as a 32-bit integer)
_RANGES = {
    "NumberOfFrames": (1, 2**31 - 1),
    "Rows": (1, 0xFFFF),
    "Columns": (1, 0xFFFF),
    "SamplesPerPixel": (1, 0xFFFF),
}


@dataclass(frozen=True)
class FrameSpec:
    """What a codec needs to know about one native frame.

    ``little_endian`` and ``pixel_vr`` give the byte layout of the stored frame;
    ``pixel_keyword`` is PixelData, FloatPixelData or DoubleFloatPixelData.
    """

    rows: int
    columns: int
    samples_per_pixel: int
    bits_allocated: int
    bits_stored: int
    pixel_representation: int
    planar_configuration: int
    photometric_interpretation: str
    little_endian: bool = True
    pixel_keyword: str = "PixelData"
    pixel_vr: str = "OW"

    @property
    def frame_length(self) -> int:
        """Stored bytes of one frame."""
        return self.rows * self.columns * self.samples_per_pixel * self.bits_allocated // 8


@dataclass(frozen=True)
class SplitInstance:
    """One DICOM file cut into its header, its frames and the bytes around them.

    ``frames`` is a list, or, from `split_stream`, a sequence that reads each frame when it is
    accessed.
    """

    original: Original
    prefix: bytes
    frames: Sequence[bytes]
    suffix: bytes
    encapsulated: bool
    frame_spec: FrameSpec | None
    transfer_syntax_uid: str
    number_of_frames: int
    # No (0008,0018) SOPInstanceUID: the instance is named by the file meta's (0002,0003)
    sop_uid_from_meta: bool = False

    @property
    def dataset(self) -> Dataset:
        """The header as pydicom reads it (`Original.dataset`: built now if not yet)."""
        return self.original.dataset


def split_instance(data: bytes, *, max_inflated: int = MAX_INFLATED) -> SplitInstance:
    """Parse a DICOM file's header and cut its pixel data into frames.

    Parameters
    ----------
    data : bytes
        The whole file: Part 10 (with or without preamble) or a bare dataset.
    max_inflated : int
        The most bytes a Deflated Explicit VR Little Endian dataset may inflate to; a file
        that inflates to more is ``too_large``, found without holding more than this.

    Returns
    -------
    SplitInstance
        Parts such that ``prefix + b"".join(frames) + suffix == data``.

    Raises
    ------
    DicomParseError
        With reason ``empty``, ``not_dicom``, ``truncated``, ``corrupt``, ``too_deep``
        (sequences nested more than `walk.MAX_DEPTH` deep), ``too_large`` (inflates to more
        than ``max_inflated``, or more than `MAX_FRAMES` frames), ``dicomdir`` or
        ``no_sop_instance_uid`` (neither SOPInstanceUID (0008,0018) nor, in the file meta,
        MediaStorageSOPInstanceUID (0002,0003)); any other failure of the parser is wrapped as
        ``corrupt``.

    Examples
    --------
    >>> from pydicom.data import get_testdata_file
    >>> raw = open(get_testdata_file("CT_small.dcm"), "rb").read()
    >>> split = split_instance(raw)
    >>> split.prefix + b"".join(split.frames) + split.suffix == raw
    True
    """
    return _split(Reader.of(data), None, max_inflated)


def split_stream(read: Read, size: int, *, limit: int, block: int = 1 << 16) -> SplitInstance:
    """`split_instance` for a file too big to hold: read in parts through ranged reads.

    The header is walked a block at a time up to the pixel data, encapsulated items item by
    item, and each frame is read only when ``frames`` is accessed (iterate it once, in order).
    Header, suffix and frames are the same bytes `split_instance` gives for the file.

    Parameters
    ----------
    read : callable
        ``read(offset, length)`` returns those bytes of the file.
    size : int
        The file's size in bytes.
    limit : int
        The most bytes held at once. A header, frame (or frames that cannot be cut apart) or
        suffix larger than this is ``too_large``; so is a deflated file larger than this, or
        one that inflates to more (it cannot be cut without inflating it).
    block : int
        Bytes per read while walking the header and items.

    Raises
    ------
    DicomParseError
        As `split_instance`, plus ``too_large``, and ``changed_while_reading`` when a read
        returns fewer bytes than the file had (also while ``frames`` is read).
    """
    return _split(Reader(read, size, block), limit, limit)


def _split(reader: Reader, limit: int | None, max_inflated: int) -> SplitInstance:
    """`split_instance` (no ``limit``: its frames read at once, a list) or `split_stream`."""
    size = reader.size
    if not size:
        raise DicomParseError("empty", "the file has 0 bytes")
    head = reader.read(0, START_BYTES)
    start = _meta_start(head)
    if not start and not _looks_like_dataset(head[:8]):
        raise DicomParseError(
            "not_dicom",
            "no 'DICM' at offset 128 and bytes 0-3 are no tag of groups 0002-0008",
        )
    meta_end, syntax, implicit, little = _dataset_encoding(reader, start)
    if syntax == DeflatedExplicitVRLittleEndian:
        # The deflated stream cannot be cut without inflating it: keep it whole
        _check_limit(limit, size, "a deflated file (it cannot be cut without inflating it)")
        return _split_deflated(reader.read(0, size), meta_end, max_inflated)

    walker = Walker(reader, little)
    implicit = walker.implicit_at(meta_end, implicit)
    pixel, lazy, walked = _top_level(walker, meta_end, implicit)
    header_end = pixel.offset if pixel else size
    _check_limit(limit, header_end, "the header" if pixel else "a file without pixel data")
    header = reader.read(0, header_end)
    original = _parse_header(header, lazy, walked)
    from_meta = _check_identity(original)
    if pixel is None:
        return SplitInstance(original, header, [], b"", False, None, syntax, 0, from_meta)

    nframes = _int_attr(original, "NumberOfFrames") or 1
    if pixel.length == UNDEFINED:
        bounds, end = _encapsulated_frames(walker, pixel, original, nframes)
        trailing, spec, largest = end + 8, None, max(b - a for a, b in pairwise(bounds))
    else:
        trailing = walker.end_of(pixel, implicit)
        spec, layout = _native_layout(original, pixel, little, nframes, syntax)
        # A compressed syntax with a defined length: one part, kept whole
        largest, count = layout or (pixel.length, 1)
        _check_frames(count)
        # Equal frames one after another: their bounds as a range, not a list per frame (an
        # empty pixel data element is one empty part)
        bounds = (
            range(pixel.value_offset, pixel.value_offset + (count + 1) * largest, largest)
            if largest
            else [pixel.value_offset] * 2
        )
        end = bounds[-1]
    first = bounds[0]
    _check_frame_sizes(len(bounds) - 1, end - first)
    _check_limit(limit, first, "the header")
    _check_limit(limit, largest, "a frame, or frames that cannot be cut apart")
    _check_limit(limit, size - end, "the elements after the pixel data")
    # The prefix starts with the very bytes the header was parsed from: what is stored is what
    # was read, even if the file changes meanwhile (the caller's second hash catches that)
    prefix = header + reader.read(header_end, first - header_end)
    suffix = reader.read(end, size - end)
    after = _trailing(walker, suffix, end, trailing, implicit)
    if after is not None:
        original.merge(after)
    frames = _Frames(reader, bounds)
    return SplitInstance(
        original,
        prefix,
        frames if limit is not None else list(frames),
        suffix,
        pixel.length == UNDEFINED,
        spec,
        syntax,
        nframes,
        from_meta,
    )


def _check_limit(limit: int | None, length: int, what: str) -> None:
    if limit is not None and length > limit:
        raise DicomParseError(
            "too_large",
            f"{what}: {length} bytes, more than the {limit} bytes held at once",
            over_limit=True,
        )


def _check_frames(count: int) -> None:
    if count > MAX_FRAMES:
        raise DicomParseError(
            "too_large", f"{count} frames or fragments, more than the {MAX_FRAMES} kept apart"
        )


def _check_frame_sizes(count: int, pixel_bytes: int) -> None:
    """Refuse many frames that hold next to nothing (`FRAMES_OF_ANY_SIZE`)."""
    if count > FRAMES_OF_ANY_SIZE and pixel_bytes < count * MIN_FRAME_BYTES:
        raise DicomParseError(
            "too_large",
            f"{count} frames of {pixel_bytes // count} bytes on average: past "
            f"{FRAMES_OF_ANY_SIZE} frames, frames must hold {MIN_FRAME_BYTES} bytes on average "
            "(each is stored and indexed apart)",
        )


class _Frames(Sequence[bytes]):
    """Frames between consecutive offsets of a file, each read when it is accessed."""

    def __init__(self, reader: Reader, bounds: Sequence[int]) -> None:
        self._reader = reader
        self._bounds = bounds  # frame i is bytes [bounds[i], bounds[i + 1])

    def __len__(self) -> int:
        return len(self._bounds) - 1

    @overload
    def __getitem__(self, index: int) -> bytes: ...
    @overload
    def __getitem__(self, index: slice) -> Sequence[bytes]: ...
    def __getitem__(self, index: int | slice) -> bytes | Sequence[bytes]:
        if isinstance(index, slice):
            start, stop, step = index.indices(len(self))
            if step != 1:
                raise ValueError("frames are sliced in order, one after another")
            return _Frames(self._reader, self._bounds[start : max(start, stop) + 1])
        index = range(len(self))[index]
        start = self._bounds[index]
        return self._reader.read(start, self._bounds[index + 1] - start)

    def __iter__(self) -> Iterator[bytes]:
        # Each frame in order, without the IndexError that ends Sequence's own iteration
        read = self._reader.read
        return (read(start, end - start) for start, end in pairwise(self._bounds))


def header_from_prefix(prefix: bytes) -> tuple[Dataset, FrameSpec | None]:
    """The header and frame spec of a stored instance, from its prefix chunk alone.

    The prefix ends where the first frame starts, so it holds the whole header up to and
    including the pixel data element's own tag and length: enough to decode one frame without
    reading any other chunk.
    """
    reader = Reader.of(prefix)
    meta_end, syntax, implicit, little = _dataset_encoding(reader, _meta_start(prefix))
    if syntax == DeflatedExplicitVRLittleEndian:
        return _split_deflated(prefix, meta_end, MAX_INFLATED).dataset, None
    walker = Walker(reader, little)
    implicit = walker.implicit_at(meta_end, implicit)
    pixel, lazy, walked = _top_level(walker, meta_end, implicit)
    if pixel is None:
        return _parse_header(prefix, lazy, walked).dataset, None
    original = _parse_header(prefix[: pixel.offset], lazy, walked)
    if pixel.length == UNDEFINED:
        return original.dataset, None
    nframes = _int_attr(original, "NumberOfFrames") or 1
    spec, _ = _native_layout(original, pixel, little, nframes, syntax)
    return original.dataset, spec


def inflated_dataset(data: bytes, *, max_inflated: int = MAX_INFLATED) -> bytes:
    """The dataset of a Deflated Explicit VR Little Endian file, inflated (at most
    ``max_inflated`` bytes): a bare Explicit VR Little Endian dataset, which `split_instance`
    cuts into frames like any other.

    Raises
    ------
    DicomParseError
        ``not_dicom`` when the file is not deflated; as `split_instance` otherwise.
    """
    meta_end, syntax, _, _ = _dataset_encoding(Reader.of(data), _meta_start(data))
    if syntax != DeflatedExplicitVRLittleEndian:
        raise DicomParseError("not_dicom", f"transfer syntax {syntax}, not deflated")
    return _inflate(memoryview(data)[meta_end:], max_inflated)


def _split_deflated(data: bytes, meta_end: int, max_inflated: int) -> SplitInstance:
    """A Deflated Explicit VR Little Endian file, kept whole: its header, inflated at most
    ``max_inflated`` bytes and walked like any other dataset before pydicom parses it."""
    inflated = _inflate(memoryview(data)[meta_end:], max_inflated)
    walker = Walker(Reader.of(inflated), little_endian=True)
    pixel, _ = _find_pixel_data(walker, 0, walker.implicit_at(0, False))
    meta = _parse_header(data[:meta_end]).dataset
    with _parsing("the inflated dataset"):
        dataset = read_dataset(
            io.BytesIO(inflated[: pixel.offset] if pixel else inflated), False, True
        )
    if pixel is not None:  # the elements after the pixel data (signatures, padding)
        trailing = walker.end_of(pixel, False)
        after = _trailing(walker, inflated[trailing:], trailing, trailing, False)
        if after is not None:
            dataset.update(after)
    header = FileDataset(io.BytesIO(), dataset, meta.preamble, meta.file_meta, False, True)
    header.set_original_encoding(False, True, dataset.original_character_set)
    original = Original.of(header)
    from_meta = _check_identity(original)
    # Rows tells whether an image follows; its frames are not cut apart
    nframes = _int_attr(original, "NumberOfFrames") or (1 if "Rows" in header else 0)
    return SplitInstance(
        original, data, [], b"", False, None, DeflatedExplicitVRLittleEndian, nframes, from_meta
    )


def _inflate(deflated: memoryview, limit: int) -> bytes:
    """Inflate a raw deflate stream (PS3.5 A.5), holding at most ``limit`` inflated bytes.

    Fed a step of input at a time, each call's output capped, so a small file that inflates
    to gigabytes stops as ``too_large`` once ``limit`` is passed.
    """
    inflater = zlib.decompressobj(-zlib.MAX_WBITS)
    out = io.BytesIO()
    steps = (deflated[i : i + _INFLATE_STEP] for i in range(0, len(deflated), _INFLATE_STEP))
    try:
        for pending in chain(steps, [b""]):  # the last, empty step flushes what zlib holds
            while not inflater.eof:
                room = min(_INFLATE_STEP, limit + 1 - out.tell())
                chunk = inflater.decompress(pending, room)
                out.write(chunk)
                if out.tell() > limit:
                    raise DicomParseError(
                        "too_large",
                        f"the deflated dataset inflates to more than {limit} bytes",
                        over_limit=True,
                    )
                pending = inflater.unconsumed_tail
                if not (pending or chunk):
                    break
    except zlib.error as exc:
        raise DicomParseError(
            "corrupt", f"the deflated dataset does not inflate at byte {out.tell()}"
        ) from exc
    if not inflater.eof:
        raise DicomParseError(
            "truncated", f"the deflated dataset ends after {out.tell()} inflated bytes"
        )
    return out.getvalue()  # the buffer itself, not a copy


def _meta_start(head: bytes) -> int:
    """Where the file meta starts: after the preamble and 'DICM', where the file has them."""
    return START_BYTES if head[128:132] == b"DICM" else 0


def _looks_like_dataset(data: bytes) -> bool:
    # Without 'DICM' we accept only a dataset starting in groups 0002-0008 (meta, DICOMDIR
    # or identification), in either byte order, so text, zip or image files are not parsed
    if len(data) < 8:
        return False
    group_le, group_be = struct.unpack_from("<H", data)[0], struct.unpack_from(">H", data)[0]
    return 0x0002 <= group_le <= 0x0008 or 0x0002 <= group_be <= 0x0008


def _dataset_encoding(reader: Reader, start: int) -> tuple[int, str, bool, bool]:
    """Where the dataset starts after the file meta, its transfer syntax (as declared, else as
    implied by the encoding), and whether it is implicit VR and little endian."""
    meta_end, syntax = _walk_meta(reader, start)
    implicit, little = _encoding(reader, meta_end, syntax)
    return meta_end, syntax or _implied_syntax(implicit, little), implicit, little


def _walk_meta(reader: Reader, offset: int) -> tuple[int, str | None]:
    """Return the end of the group 0002 elements and their Transfer Syntax UID, if any."""
    walker = Walker(reader, little_endian=True)
    syntax = None
    if offset >= reader.size:
        raise DicomParseError("truncated", f"file ends at byte {reader.size} after the preamble")
    # The usual elements at once; any other (and the rest) by the walk below
    for tag, value_offset, end in walker.plain_run(offset, 0x0002):
        if tag == 0x00020010:
            syntax = _syntax_text(reader.read(value_offset, end - value_offset))
        offset = end
    while offset + 4 <= reader.size and walker.peek_tag(offset) >> 16 == 0x0002:
        elem = walker.element(offset, implicit=False)
        end = walker.end_of(elem, implicit=False)
        if elem.tag == 0x00020010:
            syntax = _syntax_text(reader.read(elem.value_offset, end - elem.value_offset))
        offset = end
    return offset, syntax or None


def _syntax_text(value: bytes) -> str:
    return value.rstrip(b"\0 ").decode("ascii", "replace")


def _encoding(reader: Reader, offset: int, syntax: str | None) -> tuple[bool, bool]:
    """Return (implicit VR, little endian) of the dataset, as pydicom's read_partial does."""
    if syntax == ImplicitVRLittleEndian:
        return True, True
    if syntax == ExplicitVRBigEndian:
        return False, False
    if syntax is not None:
        return False, True
    # No transfer syntax: a valid VR means explicit; a big endian group reads as >= 1024
    raw = reader.read(offset, 6)
    if len(raw) == 6 and 0x40 < raw[4] < 0x5B and 0x40 < raw[5] < 0x5B:
        return False, struct.unpack_from("<H", raw)[0] < 1024
    return True, True


def _implied_syntax(implicit: bool, little: bool) -> str:
    if implicit:
        return ImplicitVRLittleEndian
    return ExplicitVRLittleEndian if little else ExplicitVRBigEndian


# The top-level undefined-length sequences of a header: (tag, offset, value offset, end)
Lazy = tuple[int, int, int, int]


def _find_pixel_data(
    walker: Walker, offset: int, implicit: bool
) -> tuple[Element | None, list[Lazy]]:
    """Walk the top-level elements; return the pixel data element, if any, and the
    undefined-length elements whose items pydicom would misread (`little_endian_items`)."""
    cut = []
    while offset < walker.size:
        elem = walker.element(offset, implicit)
        if elem.tag in PIXEL_KEYWORDS:
            return elem, cut
        end = walker.end_of(elem, implicit)
        if elem.length == UNDEFINED and little_endian_items(elem.vr, walker.little_endian):
            cut.append((elem.tag, elem.offset, elem.value_offset, end))
        offset = end
    return None, cut


# The compiled walk's reading of a header (`dicomlake_native.Walked`: the file meta's and the
# dataset's RawDataElements, as pydicom's read_dataset holds them), where the dataset starts,
# and whether it is implicit VR and little endian
Walked = tuple[Any, int, bool, bool]


def _top_level(
    walker: Walker, offset: int, implicit: bool
) -> tuple[Element | None, list[Lazy], Walked | None]:
    """`_find_pixel_data`, by the compiled walk where the file is held whole; the top-level
    undefined-length sequences that `_parse_header` may (or, `little_endian_items`, must)
    leave unread; and the header's elements as read by that walk (None where pydicom reads
    them)."""
    data, core = walker.reader.whole, native.core()
    if data is None or core is None:
        return *_find_pixel_data(walker, offset, implicit), None
    try:
        found, count, lazy, walked = core.top_level(
            data, offset, implicit, walker.little_endian, MAX_ELEMENTS, MAX_DEPTH
        )
    except native.dicomlake_native.Malformed as exc:
        raise DicomParseError(*exc.args) from None
    except native.dicomlake_native.Declined:  # the core failed on it: the Python walk decides
        return *_find_pixel_data(walker, offset, implicit), None
    walker.counted(count)
    read = None if walked is None else (walked, offset, implicit, walker.little_endian)
    return (None if found is None else Element(*found)), lazy, read


def _parse_header(data: bytes, lazy: Sequence[Lazy] = (), walked: Walked | None = None) -> Original:
    """Parse preamble, file meta and dataset as pydicom's read_partial does, stopping before
    pixel data: from the elements the compiled walk read (``walked``) where it read them and
    read_partial would take them as they are (`_from_walk`), else by read_partial.

    ``lazy`` lists top-level undefined-length sequences of a header the compiled walk read
    whole as well-formed: pydicom would read every item of them now (seconds for a dose
    report of 100,000 elements); they are left out of its reading and added unread instead,
    as pydicom holds a defined-length sequence, so their items are read when first used, and
    by the compiled path not at all. It lists the elements whose items pydicom would misread
    (`walk.little_endian_items`) too.
    """
    kept, at = [], 0
    for _, start, _, end in lazy:
        kept.append(data[at:start])
        at = end
    read = b"".join([*kept, data[at:]]) if lazy else data
    with _parsing("the header"):
        original = None if walked is None else _from_walk(read, data, lazy, *walked)
        if original is not None:
            return original
        dataset = read_partial(
            io.BytesIO(read),
            stop_when=lambda tag, vr, length: tag in PIXEL_KEYWORDS,
            force=True,
        )
    _add_lazy(dataset, data, lazy)
    return Original.of(dataset)


def _add_lazy(dataset: Dataset, data: bytes, lazy: Sequence[Lazy]) -> None:
    """Add the ``lazy`` sequences of ``data`` to ``dataset`` unread (see `_parse_header`)."""
    implicit, little = dataset.original_encoding
    for tag, start, value_offset, end in lazy:
        items = data[value_offset : end - 8]  # without the sequence delimiter
        vr, encoding = None if implicit else "SQ", (implicit, little)
        if little_endian_items(data[start + 4 : start + 6].decode("latin-1"), little):
            encoding = (True, True)  # a big endian dataset's UN: pydicom reads them so here
        # Held raw, as read_dataset holds what it reads: setting a private element through
        # the dataset converts it at once, items and all, and reads its creator, which may
        # not be readable
        dataset._dict[BaseTag(tag)] = RawDataElement(
            BaseTag(tag), vr, UNDEFINED, items, value_offset, *encoding, True, False
        )


def _from_walk(
    read: bytes,
    data: bytes,
    lazy: Sequence[Lazy],
    walked: Any,
    meta_end: int,
    implicit: bool,
    little: bool,
) -> Original | None:
    """The FileDataset read_partial reads from ``read`` (``data`` without the ``lazy``
    sequences, see `_parse_header`), as it builds it (`_read_file_meta_info`,
    `read_dataset`) from the compiled walk's elements: read now as far as read_partial would
    fail on it, built when first used; None where read_partial would re-read the file meta as
    implicit VR, or read the dataset in another byte order than the walk's (a private
    transfer syntax, or a guess)."""
    file_meta = FileMetaDataset(walked.elements(True))
    file_meta.set_original_encoding(False, True, default_encoding)
    # Its elements converted as read_partial converts them (`converted_element`: what
    # ``file_meta[tag]`` gives, at a third of its cost)
    if file_meta._dict:
        # read_partial converts the first element (the group length, if any, which it logs
        # if it is wrong) to tell whether the file meta is explicit VR
        try:
            converted_element(file_meta, min(file_meta._dict, key=int))  # as BaseTag orders
        except NotImplementedError:
            return None
        # It logs a group length that does not match the file meta's, formatting the value:
        # a value that cannot be shown (items that cannot be read) fails the read there
        if _GROUP_LENGTH in file_meta._dict:
            length = converted_element(file_meta, _GROUP_LENGTH).value
            if length != meta_end - (_meta_start(read) + 12):
                str(length)
    # read_partial's encoding of the dataset, from its transfer syntax or guessed; the
    # first element's VR bytes then decide whether read_dataset reads it as implicit VR
    syntax = converted_element(file_meta, _SYNTAX).value if _SYNTAX in file_meta._dict else None
    if syntax is None:
        group, _, vr = struct.unpack_from("<HH2s", read, meta_end)
        explicit = vr.decode(default_encoding) in converters
        assumed_implicit, assumed_little = not explicit, not (explicit and group >= 1024)
    elif isinstance(syntax, str) and syntax not in pydicom.uid.PrivateTransferSyntaxes:
        assumed_implicit = syntax == ImplicitVRLittleEndian
        assumed_little = syntax != ExplicitVRBigEndian
    else:
        return None
    if assumed_little != little:
        return None
    charset = walked.raw(0x00080005)
    encoding: str | MutableSequence[str] = default_encoding
    if charset is not None:  # as data_element_generator, then read_dataset, convert it
        convert_encodings(convert_string(charset.value or b"", little))
        encoding = convert_encodings(convert_raw_data_element(charset).value)

    def build() -> FileDataset:
        dataset = Dataset(walked.elements(False), parent_encoding=default_encoding)
        dataset.set_original_encoding(implicit, little, encoding)
        fileobj = io.BytesIO(read)
        fileobj.seek(len(read))  # where read_partial stopped reading it
        preamble = read[:128] if read[128:132] == b"DICM" else None
        header = FileDataset(fileobj, dataset, preamble, file_meta, assumed_implicit, little)
        with warnings.catch_warnings():
            # The character set converted again, as above (where it warned, and would fail)
            warnings.simplefilter("ignore")
            header.set_original_encoding(assumed_implicit, little, dataset._character_set)
        _add_lazy(header, data, lazy)
        return header

    tags = frozenset(tag for tag, *_ in lazy)
    return Original.walked(build, walked, file_meta, tags, (assumed_implicit, little))


@contextlib.contextmanager
def _parsing(what: str) -> Iterator[None]:
    """Run pydicom's parser: odd values do not warn, and a failure is ``corrupt``.

    The message names the exception type only: pydicom's own messages may quote values.
    """
    try:
        with warnings.catch_warnings():
            # Odd but readable headers warn; their values are checked where used
            warnings.simplefilter("ignore")
            yield
    except Exception as exc:  # pydicom raises many types on malformed input
        raise DicomParseError("corrupt", f"{what} does not parse ({type(exc).__name__})") from exc


def _trailing(
    walker: Walker, suffix: bytes, start: int, offset: int, implicit: bool
) -> Dataset | None:
    """The elements after the pixel data (signatures, padding), None where there are none.

    ``suffix`` holds the file's bytes from ``start`` on; the elements begin at ``offset``.
    """
    if offset >= walker.size:
        return None
    end = offset
    while end < walker.size:
        end = walker.end_of(walker.element(end, implicit), implicit)
    with _parsing(f"the elements after the pixel data, at offset {offset},"):
        trailing: Dataset = read_dataset(
            io.BytesIO(suffix[offset - start :]), implicit, walker.little_endian
        )
    return trailing


def _int_attr(original: Original, keyword: str) -> int | None:
    """Return an integer attribute; None if absent; corrupt if present but not a number, or
    out of its range in `_RANGES`."""
    value = original.get(keyword)
    if value is None or value == "":
        return None
    try:
        number = int(value)
    except (TypeError, ValueError) as exc:
        raise DicomParseError("corrupt", f"{keyword} {_tag(keyword)} is not an integer") from exc
    low, high = _RANGES.get(keyword, (0, 0xFFFF))
    if not low <= number <= high:
        raise DicomParseError(
            "corrupt", f"{keyword} {_tag(keyword)} is out of its range {low}-{high}"
        )
    return number


def _tag(keyword: str) -> str:
    return tag_str(tag_for_keyword(keyword))


def _check_identity(original: Original) -> bool:
    """Reject directories and instances without a SOP Instance UID; return whether the UID is
    the file meta's."""
    directory = MediaStorageDirectoryStorage
    # Most classes are told apart from it by their bytes, without converting them
    if original.may_be(directory, "MediaStorageSOPClassUID", meta=True) or original.may_be(
        directory, "SOPClassUID"
    ):
        meta_class = original.get("MediaStorageSOPClassUID", meta=True)
        if directory in (meta_class, original.get("SOPClassUID")):
            raise DicomParseError("dicomdir", "Media Storage Directory (DICOMDIR), not an instance")
    uid, from_meta = original.sop_instance_uid()
    if uid is None:
        raise DicomParseError(
            "no_sop_instance_uid",
            "SOPInstanceUID (0008,0018) is missing, and so is the file meta's "
            "MediaStorageSOPInstanceUID (0002,0003)",
        )
    return from_meta


def _required(original: Original, keyword: str, pixel: Element) -> int:
    value = _int_attr(original, keyword)
    if value is None:
        raise DicomParseError(
            "corrupt", f"{tag_str(pixel.tag)} at offset {pixel.offset} but {keyword} is missing"
        )
    return value


def _native_layout(
    original: Original, pixel: Element, little: bool, nframes: int, syntax: str
) -> tuple[FrameSpec | None, tuple[int, int] | None]:
    """Return the frame spec (None if not an image), and the stored bytes of a frame and the
    number of frames (None if not an image)."""
    if syntax not in _NATIVE and syntax in pydicom.uid.AllTransferSyntaxes:
        return None, None
    spec = FrameSpec(
        rows=_required(original, "Rows", pixel),
        columns=_required(original, "Columns", pixel),
        samples_per_pixel=_int_attr(original, "SamplesPerPixel") or 1,
        bits_allocated=_required(original, "BitsAllocated", pixel),
        bits_stored=_int_attr(original, "BitsStored")
        or _required(original, "BitsAllocated", pixel),
        pixel_representation=_int_attr(original, "PixelRepresentation") or 0,
        planar_configuration=_int_attr(original, "PlanarConfiguration") or 0,
        photometric_interpretation=str(original.get("PhotometricInterpretation") or ""),
        little_endian=little,
        pixel_keyword=PIXEL_KEYWORDS[pixel.tag],
        pixel_vr=pixel.vr or _implicit_pixel_vr(pixel.tag, original),
    )
    ba = spec.bits_allocated
    if ba not in (1, 8, 16, 32, 64):
        raise DicomParseError("corrupt", "BitsAllocated (0028,0100) is not 1, 8, 16, 32 or 64")
    pixels = spec.rows * spec.columns
    if spec.photometric_interpretation == "YBR_FULL_422" and spec.samples_per_pixel == 3:
        # Two stored samples per pixel (PS3.3 C.7.6.3.1.2): not rows x columns x 3
        frame_bits, spec = pixels * 2 * ba, None
    else:
        frame_bits = pixels * spec.samples_per_pixel * ba
    total = (frame_bits * nframes + 7) // 8
    if total > pixel.length:
        raise DicomParseError(
            "truncated",
            f"{tag_str(pixel.tag)} at offset {pixel.offset} holds {pixel.length} bytes, "
            f"{nframes} frame(s) need {total}",
        )
    frame_length = frame_bits // 8
    swapped_ow = not little and ba == 8 and pixel.vr == "OW"
    if frame_bits % 8 or (swapped_ow and frame_length % 2):
        # Frames that do not start on a (16-bit word) boundary cannot be cut apart
        return None, (total, 1)
    return spec, (frame_length, nframes)


def _implicit_pixel_vr(tag: int, original: Original) -> str:
    if tag != 0x7FE00010:
        return "OF" if tag == 0x7FE00008 else "OD"
    return "OB" if (_int_attr(original, "BitsAllocated") or 16) <= 8 else "OW"


def _encapsulated_frames(
    walker: Walker, pixel: Element, original: Original, nframes: int
) -> tuple[list[int], int]:
    """Return the offsets where each frame's items start, then where the last one ends, and
    the sequence delimiter's offset."""
    reader = walker.reader
    items: list[tuple[int, int]] = []  # (item offset, item end)
    offset = pixel.value_offset
    while True:
        if offset + 8 > walker.size:
            raise DicomParseError(
                "truncated",
                f"file ends at byte {walker.size} inside encapsulated {tag_str(pixel.tag)} "
                f"(item {len(items)} at offset {offset})",
            )
        group, elem, length = struct.unpack_from("<HHL", *reader.view(offset, 8))
        tag = group << 16 | elem
        if tag == SEQUENCE_DELIMITER:
            break
        if tag != ITEM or length == UNDEFINED:
            raise DicomParseError(
                "corrupt",
                f"encapsulated {tag_str(pixel.tag)}: expected a defined-length item at "
                f"offset {offset}",
            )
        end = offset + 8 + length
        if end > walker.size:
            raise DicomParseError(
                "truncated",
                f"fragment at offset {offset} declares {length} bytes, file ends at "
                f"byte {walker.size}",
            )
        items.append((offset, end))
        _check_frames(len(items) - 1)
        offset = end
    if not items:
        raise DicomParseError("corrupt", f"encapsulated {tag_str(pixel.tag)} has no offset table")
    bot, fragments = items[0], items[1:]
    if not fragments:
        raise DicomParseError(
            "truncated", f"encapsulated {tag_str(pixel.tag)} has no fragments, {nframes} declared"
        )
    groups = _group_fragments(reader, bot, fragments, original, nframes)
    return [group[0][0] for group in groups] + [fragments[-1][1]], offset


def _group_fragments(
    reader: Reader,
    bot: tuple[int, int],
    fragments: list[tuple[int, int]],
    original: Original,
    nframes: int,
) -> list[list[tuple[int, int]]]:
    """Assign fragments to frames; one group of all fragments when it can't be told."""
    if len(fragments) == nframes:
        return [[fragment] for fragment in fragments]
    if nframes == 1 or len(fragments) < nframes:
        return [fragments]
    offsets = _offset_table(reader, bot, original)
    base = fragments[0][0]
    starts = {start - base: index for index, (start, _) in enumerate(fragments)}
    usable = offsets and len(offsets) == nframes and offsets[0] == 0
    if usable and all(offset in starts for offset in offsets):
        indexes = [starts[o] for o in offsets] + [len(fragments)]
        if indexes == sorted(set(indexes)):
            return [fragments[a:b] for a, b in pairwise(indexes)]
    # No usable table: a fragment opening with a codestream start marker opens a frame
    firsts = [
        index
        for index, (start, _) in enumerate(fragments)
        if reader.read(start + 8, 12).startswith(_FRAME_MARKERS)
    ]
    if len(firsts) == nframes and firsts[0] == 0:
        indexes = firsts + [len(fragments)]
        return [fragments[a:b] for a, b in pairwise(indexes)]
    return [fragments]


def _offset_table(reader: Reader, bot: tuple[int, int], original: Original) -> list[int]:
    """Frame offsets from the Extended Offset Table, else the Basic Offset Table."""
    extended = original.get("ExtendedOffsetTable")
    if extended:
        return list(struct.unpack(f"<{len(extended) // 8}Q", extended))
    start, end = bot
    table = reader.read(start + 8, end - start - 8)
    return list(struct.unpack(f"<{len(table) // 4}L", table))
