"""The real-file test corpus: pydicom's test files, pydicom-data and deid-data.

The same files the sample landing zone is made of. Non-DICOM files in those folders (READMEs,
zips, JSON, ICC profiles) are kept on purpose: ingest must reject them as ``not_dicom``.
"""

from __future__ import annotations

import functools
import random
import struct
from pathlib import Path

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
