"""Lossless mapping between a native frame's bytes and the unsigned array image codecs take.

Image codecs want unsigned samples, interleaved colour, and no bits above the declared depth.
DICOM allows signed samples, planar colour and stray bits above BitsStored (overlays, garbage);
`to_image` maps the first two exactly and refuses the third (None), so the caller falls back
to a byte codec that keeps every bit.
"""

from __future__ import annotations

import math

import numpy as np

from dicomlake.errors import CodecError
from dicomlake.pixels.spec import FrameSpec, full_frame_length, sample_dtype


def image_shape(spec: FrameSpec) -> tuple[int, ...]:
    """Array shape an image codec sees: (rows, columns) or (rows, columns, samples)."""
    if spec.samples_per_pixel == 1:
        return (spec.rows, spec.columns)
    return (spec.rows, spec.columns, spec.samples_per_pixel)


def accepts(spec: FrameSpec) -> bool:
    """Whether the frame's format suits an image codec at all (8/16-bit, grey or 3 samples)."""
    return (
        spec.bits_allocated in (8, 16)
        and spec.samples_per_pixel in (1, 3)
        and 1 <= spec.bits_stored <= spec.bits_allocated
        and spec.rows > 0
        and spec.columns > 0
        and full_frame_length(spec) is not None
    )


def to_image(raw: bytes, spec: FrameSpec) -> np.ndarray | None:
    """Unsigned, interleaved array holding exactly `raw`, or None if that is not possible."""
    if not accepts(spec) or len(raw) != full_frame_length(spec):
        return None
    udtype = sample_dtype(spec)
    assert udtype is not None  # accepts() checked the width
    bits, stored = spec.bits_allocated, spec.bits_stored
    values = np.frombuffer(raw, dtype=udtype)
    if spec.pixel_representation == 1:
        signed = values.view(udtype.str.replace("u", "i"))
        low, high = -(1 << (stored - 1)), (1 << (stored - 1)) - 1
        # Bits above BitsStored must be pure sign extension, or the offset would lose them.
        if stored < bits and (signed.min() < low or signed.max() > high):
            return None
        # Adding 2**(stored-1) modulo 2**bits maps [low, high] onto [0, 2**stored) exactly.
        values = values + udtype.type(1 << (stored - 1))
    elif stored < bits and int(values.max()) >> stored:
        return None
    return _interleave(values, spec)


def from_image(image: np.ndarray, spec: FrameSpec) -> bytes:
    """Inverse of `to_image`: the frame's native bytes. CodecError if `image` does not fit."""
    udtype = sample_dtype(spec)
    shape = image_shape(spec)
    width = udtype.itemsize if udtype is not None else 0
    if image.dtype.kind != "u" or image.dtype.itemsize != width or image.size != math.prod(shape):
        raise CodecError(
            f"decoded image {image.dtype}{image.shape} does not match the frame "
            f"({spec.bits_allocated}-bit, shape {shape})"
        )
    assert udtype is not None  # the width check above
    values = image.reshape(shape)
    if spec.samples_per_pixel > 1 and spec.planar_configuration == 1:
        values = values.transpose(2, 0, 1)
    values = np.ascontiguousarray(values, dtype=udtype)
    if spec.pixel_representation == 1:
        # Subtracting modulo 2**bits restores two's complement with the sign extended.
        values = values - udtype.type(1 << (spec.bits_stored - 1))
    return values.tobytes()


def _interleave(values: np.ndarray, spec: FrameSpec) -> np.ndarray:
    spp = spec.samples_per_pixel
    if spp == 1:
        return values.reshape(spec.rows, spec.columns)
    if spec.planar_configuration == 1:
        return np.ascontiguousarray(values.reshape(spp, spec.rows, spec.columns).transpose(1, 2, 0))
    return values.reshape(spec.rows, spec.columns, spp)
