"""The real-file test corpus: pydicom's test files, pydicom-data and deid-data.

The same files the sample landing zone is made of. Non-DICOM files in those folders (READMEs,
zips, JSON, ICC profiles) are kept on purpose: ingest must reject them as ``not_dicom``.
"""

from __future__ import annotations

import functools
import random
import re
import struct
from pathlib import Path

from pydicom.dataset import Dataset

from dicomlake.dicom.split import FrameSpec, _dataset_encoding, split_instance
from dicomlake.dicom.walk import Reader, Walker
from dicomlake.errors import DicomParseError
from dicomlake.samples import sample_files


def corpus_paths() -> list[Path]:
    """Return every corpus file, sorted."""
    return sorted(path for _, path in sample_files())


def corpus_id(path: Path) -> str:
    """Return a short test id naming the file (parent folder added where names repeat)."""
    return f"{path.parent.name}/{path.name}"


def split_paths() -> list[Path]:
    """The corpus files that split_instance accepts."""
    return list(_split_paths())


@functools.cache
def _split_paths() -> tuple[Path, ...]:
    # Several test modules parametrise over these: parse the corpus once per session
    paths = []
    for path in corpus_paths():
        try:
            split_instance(path.read_bytes())
        except DicomParseError:
            continue
        paths.append(path)
    return tuple(paths)


def dataset_walker(data: bytes) -> tuple[Walker, int, bool]:
    """A walker over the file's dataset, where it starts, and whether it is implicit VR."""
    reader = Reader.of(data)
    meta_end, _, implicit, little = _dataset_encoding(
        reader, 132 if data[128:132] == b"DICM" else 0
    )
    walker = Walker(reader, little)
    return walker, meta_end, walker.implicit_at(meta_end, implicit)


def mutated(data: bytes, rng: random.Random) -> bytes:
    """``data`` with a few bytes, or 32-bit words (lengths, counts), changed past the preamble."""
    out = bytearray(data)
    for _ in range(rng.randint(1, 4)):
        at = rng.randrange(132, len(out) - 4)
        if rng.random() < 0.6:
            out[at] = rng.randrange(256)
        else:
            word = rng.choice([0, 1, 0xFFFFFFFF, rng.randrange(64), rng.randrange(1 << 16)])
            out[at : at + 4] = struct.pack("<I", word)
    return bytes(out)


# Item, item delimiter and sequence delimiter tags (little endian), and an explicit SQ's VR
_MARKERS = re.compile(rb"\xfe\xff(?:\x00\xe0|\x0d\xe0|\xdd\xe0)")
_EXPLICIT_SQ = re.compile(rb"SQ\x00\x00")
_LENGTHS = (0, 1, 2, 4, 7, 8, 0xFFFFFFFF, 0xFFFFFFFE, 0x7FFFFFFF)


def has_sequences(data: bytes) -> bool:
    """Whether ``data`` holds an item, a delimiter or an explicit SQ for `sequence_mutated`."""
    return bool(_MARKERS.search(data) or _EXPLICIT_SQ.search(data))


def sequence_mutated(data: bytes, rng: random.Random) -> bytes:
    """``data`` with its sequences' structure changed in a few places: an item's, delimiter's
    or explicit SQ's length (odd, off by a few bytes, undefined, huge), an item or delimiter
    dropped or turned into another, an SQ's VR changed; ``data`` unchanged if it has no
    sequence."""
    out = bytearray(data)
    for _ in range(rng.randint(1, 3)):
        marks = [(m.start(), False) for m in _MARKERS.finditer(out)]
        marks += [(m.start() - 4, True) for m in _EXPLICIT_SQ.finditer(out) if m.start() >= 4]
        if not marks:
            break
        at, sequence = rng.choice(marks)
        length_at = at + 8 if sequence else at + 4
        kind = rng.random()
        if length_at + 4 > len(out):
            continue
        if kind < 0.35:
            struct.pack_into("<I", out, length_at, rng.choice(_LENGTHS))
        elif kind < 0.7:
            (old,) = struct.unpack_from("<I", out, length_at)
            step = rng.choice([-8, -4, -2, -1, 1, 2, 4, 8])
            struct.pack_into("<I", out, length_at, (old + step) & 0xFFFFFFFF)
        elif sequence:
            out[at + 4 : at + 6] = rng.choice([b"UN", b"OB", b"LO"])
        elif kind < 0.85:
            del out[at : at + 8]
        else:
            out[at + 2 : at + 4] = rng.choice([b"\x00\xe0", b"\x0d\xe0", b"\xdd\xe0"])
    return bytes(out)


def frame_spec(
    rows: int,
    columns: int,
    samples_per_pixel: int = 1,
    bits_allocated: int = 16,
    bits_stored: int = 16,
    pixel_representation: int = 0,
    planar_configuration: int = 0,
    photometric_interpretation: str = "MONOCHROME2",
) -> FrameSpec:
    """A frame description with the defaults of a plain 16-bit grey image."""
    return FrameSpec(
        rows,
        columns,
        samples_per_pixel,
        bits_allocated,
        bits_stored,
        pixel_representation,
        planar_configuration,
        photometric_interpretation,
    )


def pydicom_value(dataset: Dataset, tag: int) -> object:
    """pydicom's value of an element, None where it is empty or does not convert: what the
    lake's own readings of a value must give."""
    try:
        value = dataset[tag].value
    except Exception:
        return None
    return None if value is None or value == "" else value


def same_value(got: object, expected: object) -> bool:
    """Same type and value (by repr: a NaN read from FL or FD is the same NaN)."""
    return (type(got), repr(got)) == (type(expected), repr(expected))
