"""A byte-level walk over DICOM data elements: offsets and lengths only, no values.

pydicom parses the header values; this walk finds where things are (the file meta end,
the top-level pixel data element, item boundaries) and proves the bytes are all there, so
that a cut or damaged file is reported with the offset and tag where it breaks. The bytes come
from a `Reader`: a file held whole, or one read a block at a time, so that a big file's
header and items are walked without holding the file.
"""

from __future__ import annotations

import functools
import struct
from collections.abc import Callable
from dataclasses import dataclass
from typing import NamedTuple

import numpy as np
from pydicom.datadict import dictionary_VR

from dicomlake.errors import DicomParseError

UNDEFINED = 0xFFFFFFFF
ITEM = 0xFFFEE000
ITEM_DELIMITER = 0xFFFEE00D
SEQUENCE_DELIMITER = 0xFFFEE0DD
# The deepest nesting of sequence items read (real files nest fewer than 10): the parser and
# every walk over a parsed header recurse once per level, so deeper files are ``too_deep``.
MAX_DEPTH = 64
# The most data elements a file may hold, nested ones included (a long fluoroscopy dose SR, the
# most element-heavy real objects, holds ~160,000): every element read becomes an object of the
# parser's, so a header of millions of tiny elements would take gigabytes; more is ``too_large``.
MAX_ELEMENTS = 500_000

# VRs whose explicit encoding has 2 reserved bytes and a 4-byte length (PS3.5 7.1.2)
_LONG_VRS = frozenset(b"OB OD OF OL OV OW SQ SV UC UN UR UT UV".split())


def tag_str(tag: int) -> str:
    """Return a tag as '(GGGG,EEEE)' for messages."""
    return f"({tag >> 16:04X},{tag & 0xFFFF:04X})"


@dataclass(frozen=True)
class Element:
    """Where one data element sits in the buffer."""

    tag: int
    vr: str | None  # None when implicitly encoded
    offset: int  # first byte of the tag
    value_offset: int
    length: int  # UNDEFINED for undefined length
    # No valid VR where an explicit VR should be (read as implicit, as pydicom does; if the
    # length then runs past the end, the file is corrupt, not cut short).
    bad_vr: bool = False


Read = Callable[[int, int], bytes]
"""A ranged read of a file: ``read(offset, length)`` returns those bytes."""


class Reader:
    """A file's bytes by offset: read on demand through ``read``, one block at a time.

    The caller's ``read`` does the I/O; this module does none. Small reads are served from the
    last block fetched, so walking a header costs a few block reads; large ones are read as
    they are. Bytes already held are not fetched again, so reading on through a file fetches
    each next range where the last one ended. A read shorter than asked means the file shrank
    since ``size`` was taken.
    """

    def __init__(self, read: Read, size: int, block: int) -> None:
        self.size = size
        self._read = read
        self._block = block
        self._window = b""
        self._start = 0

    @classmethod
    def of(cls, data: bytes) -> Reader:
        """A file held whole in memory."""
        reader = cls(lambda offset, length: data[offset : offset + length], len(data), len(data))
        reader._window = data
        return reader

    @property
    def whole(self) -> bytes | None:
        """The file's bytes when it is held whole (`of`), else None."""
        return self._window if len(self._window) == self.size and not self._start else None

    def view(self, offset: int, count: int) -> tuple[bytes, int]:
        """A buffer holding bytes ``[offset, offset + count)`` and the index they start at.

        The caller has checked that those bytes are inside the file.
        """
        pos = offset - self._start
        if pos < 0 or pos + count > len(self._window):
            wanted = max(count, min(self._block, self.size - offset))
            held = self._held(offset)
            self._window = held + self._fetch(offset + len(held), wanted - len(held))
            self._start, pos = offset, 0
        return self._window, pos

    def read(self, offset: int, length: int) -> bytes:
        """Bytes ``[offset, offset + length)``, fewer where the file ends."""
        length = min(length, self.size - offset)
        if length <= 0:
            return b""
        if length <= self._block:
            buf, pos = self.view(offset, length)
            return buf[pos : pos + length]
        held = self._held(offset)
        return held + self._fetch(offset + len(held), length - len(held))

    def _held(self, offset: int) -> bytes:
        """The bytes held from ``offset`` to the end of the last block fetched, if any."""
        pos = offset - self._start
        return self._window[pos:] if 0 <= pos < len(self._window) else b""

    def _fetch(self, offset: int, length: int) -> bytes:
        data = self._read(offset, length)
        if len(data) != length:
            raise DicomParseError(
                "changed_while_reading",
                f"read {len(data)} bytes at offset {offset}, expected {length}: the file is "
                f"no longer the {self.size} bytes it was",
            )
        return data


class _Order(NamedTuple):
    """The structs of one byte order."""

    tag: struct.Struct
    tag_len: struct.Struct
    short: struct.Struct
    u32: struct.Struct


_ORDERS = {
    little: _Order(*(struct.Struct(order + f) for f in ("HH", "HHL", "HH2sH", "L")))
    for little, order in ((True, "<"), (False, ">"))
}
_EXPLICIT_LITTLE = _ORDERS[True]


def _is_vr(raw: bytes) -> bool:
    # pydicom's test for an explicit VR: two upper-case ASCII letters
    return len(raw) == 2 and 0x40 < raw[0] < 0x5B and 0x40 < raw[1] < 0x5B


class Walker:
    """Walks elements of one file, read through a `Reader`, its dataset encoded with a given
    byte order (``little`` arguments: another one, that of a level of items)."""

    def __init__(self, reader: Reader, little_endian: bool) -> None:
        self.reader = reader
        self.size = reader.size
        self.little_endian = little_endian
        self._elements = 0

    def _need(self, offset: int, count: int, what: str, tag: int | None = None) -> None:
        # The message names ``what`` and ``tag``; made only when raised (this runs per element)
        if offset + count > self.size:
            where = what if tag is None else f"{what} {tag_str(tag)}"
            raise DicomParseError(
                "truncated",
                f"file ends at byte {self.size} inside {where} starting at offset {offset}",
            )

    def counted(self, elements: int) -> None:
        """Go on from ``elements`` element headers read (by another walk of the same file)."""
        self._elements = elements

    def implicit_at(self, offset: int, assumed_implicit: bool) -> bool:
        """Decide implicit/explicit VR from the element at `offset`, like pydicom does."""
        if offset + 6 > self.size:
            return assumed_implicit
        return not _is_vr(self.reader.read(offset + 4, 2))

    def _order(self, little: bool | None) -> _Order:
        return _ORDERS[self.little_endian if little is None else little]

    def peek_tag(self, offset: int, little: bool | None = None) -> int:
        """Return the tag at `offset` (caller checked 4 bytes are there)."""
        group, elem = self._order(little).tag.unpack_from(*self.reader.view(offset, 4))
        return group << 16 | elem

    def tag_and_length(self, offset: int, little: bool | None = None) -> tuple[int, int]:
        """Return the tag and 4-byte length of an item header (caller checked 8 bytes)."""
        group, elem, length = self._order(little).tag_len.unpack_from(*self.reader.view(offset, 8))
        return group << 16 | elem, length

    def element(self, offset: int, implicit: bool, little: bool | None = None) -> Element:
        """Read the element header at `offset` (``too_large`` past `MAX_ELEMENTS` of them)."""
        self._need(offset, 8, "an element header")
        self._elements += 1
        if self._elements > MAX_ELEMENTS:
            raise DicomParseError(
                "too_large", f"more than {MAX_ELEMENTS} data elements (at offset {offset})"
            )
        buf, pos = self.reader.view(offset, 8)
        raw_vr = buf[pos + 4 : pos + 6]
        if implicit or not _is_vr(raw_vr):
            # pydicom also reads an element without a valid VR as implicit
            tag, length = self.tag_and_length(offset, little)
            return Element(tag, None, offset, offset + 8, length, not implicit)
        order = self._order(little)
        group, elem, _, length = order.short.unpack_from(buf, pos)
        tag = group << 16 | elem
        vr = raw_vr.decode("ascii")
        if raw_vr in _LONG_VRS:
            self._need(offset, 12, "the header of element", tag)
            (length,) = order.u32.unpack_from(*self.reader.view(offset + 8, 4))
            return Element(tag, vr, offset, offset + 12, length)
        return Element(tag, vr, offset, offset + 8, length)

    def plain_run(self, offset: int, group: int) -> list[tuple[int, int, int]]:
        """The explicit VR little endian elements of ``group`` from ``offset`` on, while their
        values are plain bytes (a valid VR, neither SQ nor UN; a defined length; header and
        value inside the file), as `element` and `end_of` would read them, without making an
        `Element` of each: (tag, value offset, end) of each, counted as read. A walk with
        `element` goes on from the last one's end; [] for a file not held whole."""
        data = self.reader.whole
        if data is None:
            return []
        order, size, run = _EXPLICIT_LITTLE, self.size, []
        while offset + 12 <= size and self._elements < MAX_ELEMENTS:
            got, elem, raw_vr, length = order.short.unpack_from(data, offset)
            if got != group or not _is_vr(raw_vr) or raw_vr in (b"SQ", b"UN"):
                break
            value_offset = offset + 8
            if raw_vr in _LONG_VRS:
                (length,) = order.u32.unpack_from(data, value_offset)
                value_offset += 4
            end = value_offset + length
            if length == UNDEFINED or end > size:
                break
            self._elements += 1
            run.append((group << 16 | elem, value_offset, end))
            offset = end
        return run

    def end_of(self, elem: Element, implicit: bool) -> int:
        """Return the offset just after `elem`'s value, checking it is all present.

        Sequence items are walked with an explicit stack, to any length but at most
        `MAX_DEPTH` items deep (``too_deep`` beyond): the parser and every walk over the
        parsed header recurse once per level. An undefined-length value must be well formed
        to its delimiter. A defined-length value is walked as items when it may hold them
        (VR SQ, UN or unknown, and opening with an item tag or named SQ in the dictionary),
        as pydicom would parse it; if it is no run of items after all, it is bytes. The items
        of an undefined-length UN are implicit VR little endian in a big endian dataset.
        """
        stack: list[_Level] = []
        offset = self._enter(elem, implicit, self.little_endian, stack)
        while stack:
            try:
                offset = self._step(stack, offset)
            except DicomParseError as exc:
                guessed = [i for i, level in enumerate(stack) if level.end != UNDEFINED]
                if exc.reason not in ("truncated", "corrupt") or not guessed:
                    raise
                # Inside a defined-length value only guessed to hold items: it is bytes
                offset = stack[guessed[-1]].end
                del stack[guessed[-1] :]
        return offset

    def _enter(self, elem: Element, implicit: bool, little: bool, stack: list[_Level]) -> int:
        """Start on `elem`'s value (an element of a level encoded as ``implicit`` and
        ``little``): push a level if it holds items; return the next offset."""
        # Each item's encoding is sniffed in an explicit VR dataset, as pydicom does: PS3.5
        # 6.2.2 has a UN value's items implicit VR, but some writers keep them explicit
        if elem.length == UNDEFINED:
            if little_endian_items(elem.vr, little):
                implicit = little = True
            stack.append(_Level(True, UNDEFINED, implicit, little, elem.tag, _depth(stack)))
            return elem.value_offset
        end = elem.value_offset + elem.length
        if end > self.size and elem.bad_vr:
            raise DicomParseError(
                "corrupt",
                f"element {tag_str(elem.tag)} at offset {elem.offset} has no valid VR "
                f"in an explicit VR dataset",
            )
        if end > self.size:
            raise DicomParseError(
                "truncated",
                f"element {tag_str(elem.tag)} at offset {elem.offset} declares "
                f"{elem.length} bytes but the file ends at byte {self.size}",
            )
        if (
            elem.length >= 8
            and elem.tag >> 16 != 0x7FE0
            and (
                elem.vr == "SQ"
                or (
                    elem.vr in ("UN", None)
                    and (
                        _named_sequence(elem.tag)
                        or self.peek_tag(elem.value_offset, little) == ITEM
                    )
                )
            )
        ):
            stack.append(_Level(True, end, implicit, little, elem.tag, _depth(stack)))
            return elem.value_offset
        return end

    def _step(self, stack: list[_Level], offset: int) -> int:
        """Walk one item header or element of the innermost level; return the next offset."""
        level = stack[-1]
        if offset == level.end:
            stack.pop()
            return offset
        self._need(offset, 8, "an item of", level.owner)
        if level.end != UNDEFINED and offset + 8 > level.end:
            raise DicomParseError(
                "corrupt", f"{tag_str(level.owner)} ends inside the item at offset {offset}"
            )
        if not level.items:
            if self.peek_tag(offset, level.little) == ITEM_DELIMITER and level.end == UNDEFINED:
                stack.pop()
                return offset + 8
            elem = self.element(offset, level.implicit, level.little)
            return self._enter(elem, level.implicit, level.little, stack)
        tag, length = self.tag_and_length(offset, level.little)
        if tag == SEQUENCE_DELIMITER and level.end == UNDEFINED:
            stack.pop()
            return offset + 8
        if tag != ITEM:
            raise DicomParseError(
                "corrupt",
                f"expected an item tag in {tag_str(level.owner)} at offset {offset}",
            )
        if level.depth >= MAX_DEPTH:
            raise DicomParseError(
                "too_deep",
                f"item at offset {offset} in {tag_str(level.owner)} is nested more than "
                f"{MAX_DEPTH} sequences deep",
            )
        start = offset + 8
        end = UNDEFINED
        if length != UNDEFINED:
            end = start + length
            self._need(start, length, "an item of", level.owner)
            if level.end != UNDEFINED and end > level.end:
                raise DicomParseError(
                    "corrupt",
                    f"item at offset {offset} declares {length} bytes, more than "
                    f"{tag_str(level.owner)} holds",
                )
        implicit = level.implicit or self.implicit_at(start, level.implicit)
        stack.append(_Level(False, end, implicit, level.little, level.owner, level.depth + 1))
        return start


@dataclass(frozen=True)
class _Level:
    """One level of the walk's stack: a sequence's items, or one item's elements."""

    items: bool  # True: item headers follow; False: an item's elements
    end: int  # offset where the value ends, or UNDEFINED (up to its delimiter)
    implicit: bool
    little: bool
    owner: int  # tag of the sequence, for messages
    depth: int  # items open around this level


def little_endian_items(vr: str | None, little: bool) -> bool:
    """Whether an undefined-length element of VR ``vr`` in a dataset of byte order ``little``
    holds items encoded implicit VR little endian, its sequence delimiter too: a UN in big
    endian (PS3.5 6.2.2), as DCMTK reads it. pydicom reads them big endian, and fails: the
    split gives it a top-level one's as they are (`split._add_lazy`)."""
    return vr == "UN" and not little


def _depth(stack: list[_Level]) -> int:
    return stack[-1].depth if stack else 0


@functools.cache
def _named_sequence(tag: int) -> bool:
    """Whether the data dictionary names ``tag`` a sequence (pydicom parses it as one)."""
    try:
        return dictionary_VR(tag) == "SQ"
    except KeyError:
        return False


def ends_in_elements(
    value: bytes, after: int, implicit: bool, little: bool, known: Callable[[int], bool]
) -> bool:
    """Whether ``value`` ends in whole data elements, tags ascending after ``after`` (each a
    private one or ``known``), one of them not empty: what a value holds when a bad length
    made it swallow the elements that followed it, a patient's name among them.

    Every byte offset may start such a run; only those that pass `_starts` are walked, each
    from its start. Runs that take more element headers to rule out than `run_budget` allows
    (bytes crafted to repeat long runs) count as such a value.
    """
    if len(value) <= 8:  # room for one element header, no value
        return False
    walker = Walker(Reader.of(value), little)
    walker.counted(MAX_ELEMENTS - run_budget(len(value)))  # ``too_large`` past the budget
    try:
        return any(
            _run_to_end(walker, k, after, implicit, known)
            for base in range(0, len(value) - 7, _SCAN)
            for k in _starts(value, base, after, implicit, little)
        )
    except DicomParseError:  # the budget spent (`_run_to_end` lets no other error out)
        return True


def run_budget(size: int) -> int:
    """The element headers `ends_in_elements` reads at most in a value of ``size`` bytes: as
    many as it could hold, and some; real data takes a small part of it."""
    return size // 8 + 1024


_SCAN = 1 << 20  # offsets `_starts` checks at once: bounds its arrays for a long value


def _starts(value: bytes, base: int, after: int, implicit: bool, little: bool) -> list[int]:
    """The offsets from ``base`` on (up to `_SCAN` of them) where a run of elements may start:
    a tag after ``after`` and no item's, then a VR (explicit) or a length that fits (implicit),
    checked for all of them at once."""
    count = min(_SCAN, len(value) - 7 - base)
    data = np.frombuffer(value, np.uint8, count + 7, base).astype(np.uint32)
    low, high = (0, 1) if little else (1, 0)
    group = data[low : low + count] | data[high : high + count] << 8
    tags = group << 16 | data[2 + low : 2 + low + count] | data[2 + high : 2 + high + count] << 8
    possible = (tags > after) & (group != 0xFFFE)
    if implicit:
        parts = [data[4 + i : 4 + i + count] for i in range(4)]
        parts = parts if little else parts[::-1]
        length = parts[0] | parts[1] << 8 | parts[2] << 16 | parts[3] << 24
        room = len(value) - 8 - base - np.arange(count, dtype=np.int64)
        possible &= (length <= room) | (length == UNDEFINED)
    else:
        first, second = data[4 : 4 + count], data[5 : 5 + count]
        possible &= (first > 0x40) & (first < 0x5B) & (second > 0x40) & (second < 0x5B)
    return (np.flatnonzero(possible) + base).tolist()


def _run_to_end(
    walker: Walker, offset: int, after: int, implicit: bool, known: Callable[[int], bool]
) -> bool:
    """Whether whole elements run from ``offset`` to the end (see `ends_in_elements`)."""
    tags, filled = [after], False
    try:
        while offset < walker.size:
            elem = walker.element(offset, implicit)
            if elem.tag <= tags[-1] or elem.bad_vr or elem.tag >> 16 == 0xFFFE:
                return False
            offset = walker.end_of(elem, implicit)
            filled = filled or offset > elem.value_offset
            tags.append(elem.tag)
    except DicomParseError as exc:
        if exc.reason == "too_large":
            raise
        return False
    # Last, as it costs most: few runs get this far
    return filled and all((tag >> 16) % 2 or known(tag) for tag in tags[1:])
