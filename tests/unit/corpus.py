"""The real-file test corpus: pydicom's test files, pydicom-data and deid-data.

The same files the sample landing zone is made of. Non-DICOM files in those folders (READMEs,
zips, JSON, ICC profiles) are kept on purpose: ingest must reject them as ``not_dicom``.
"""

from __future__ import annotations

import functools
from pathlib import Path

from dicomlake.dicom.split import FrameSpec, split_instance
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
