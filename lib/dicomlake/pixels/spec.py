"""The frame description the codecs need, as a structural protocol.

Any object with these attributes works (the ingest side passes its own frozen dataclass).
"""

from __future__ import annotations

from typing import Protocol

import numpy as np


class FrameSpec(Protocol):
    """Geometry and sample format of one native (little-endian) pixel frame."""

    @property
    def rows(self) -> int: ...
    @property
    def columns(self) -> int: ...
    @property
    def samples_per_pixel(self) -> int: ...
    @property
    def bits_allocated(self) -> int: ...
    @property
    def bits_stored(self) -> int: ...
    @property
    def pixel_representation(self) -> int: ...
    @property
    def planar_configuration(self) -> int: ...
    @property
    def photometric_interpretation(self) -> str: ...


def sample_dtype(spec: FrameSpec) -> np.dtype | None:
    """Little-endian unsigned dtype of one sample, or None for 1-bit and unusual widths."""
    widths = {8: "u1", 16: "<u2", 32: "<u4", 64: "<u8"}
    name = widths.get(spec.bits_allocated)
    return np.dtype(name) if name else None


def is_subsampled(spec: FrameSpec) -> bool:
    """True for YBR_*_422/420 frames, whose sample count is not rows*columns*samples."""
    return spec.photometric_interpretation.upper().endswith(("_422", "_420"))


def full_frame_length(spec: FrameSpec) -> int | None:
    """Byte length of a full-resolution frame, or None when it is not a whole number of bytes."""
    dtype = sample_dtype(spec)
    if dtype is None or is_subsampled(spec):
        return None
    return spec.rows * spec.columns * spec.samples_per_pixel * dtype.itemsize
