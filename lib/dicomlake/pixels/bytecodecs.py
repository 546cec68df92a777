"""Byte-oriented lossless codecs: zstd, store, and row-delta + byte-shuffle + zstd.

They take any bytes, so they are the fallback for what image codecs cannot hold exactly
(1-bit, 32/64-bit and float samples, subsampled colour, stray high bits, odd lengths).
"""

from __future__ import annotations

import threading

import numpy as np
import zstandard

from dicomlake.errors import CodecError
from dicomlake.pixels.spec import FrameSpec, full_frame_length, sample_dtype

ZSTD_LEVEL = 3

# zstandard contexts are not safe to share between threads; one per thread is reused.
_local = threading.local()


def _compressor() -> zstandard.ZstdCompressor:
    if not hasattr(_local, "compressor"):
        _local.compressor = zstandard.ZstdCompressor(level=ZSTD_LEVEL)
        _local.decompressor = zstandard.ZstdDecompressor()
    compressor: zstandard.ZstdCompressor = _local.compressor
    return compressor


def _decompressor() -> zstandard.ZstdDecompressor:
    _compressor()
    decompressor: zstandard.ZstdDecompressor = _local.decompressor
    return decompressor


def zstd_encode(raw: bytes) -> bytes:
    """zstd at level 3; the frame header records the content size."""
    return _compressor().compress(raw)


def zstd_decode(data: bytes, raw_length: int) -> bytes:
    """Inverse of `zstd_encode`; CodecError on malformed data or a wrong length."""
    try:
        out = _decompressor().decompress(data, max_output_size=raw_length)
    except zstandard.ZstdError as exc:
        raise CodecError(f"zstd data is malformed: {exc}") from exc
    if len(out) != raw_length:
        raise CodecError(f"zstd data holds {len(out)} bytes, expected {raw_length}")
    return out


def shuffle_accepts(raw: bytes, spec: FrameSpec | None) -> bool:
    """Whether row-delta + byte-shuffle applies: a whole frame of 8/16/32/64-bit samples."""
    return spec is not None and spec.rows > 0 and len(raw) == full_frame_length(spec)


def shuffle_encode(raw: bytes, spec: FrameSpec) -> bytes:
    """Delta against the same sample of the previous pixel in the row, split bytes, zstd.

    Deltas are taken modulo 2**bits on the raw sample bits, so signed, float and stray-bit
    data all round-trip; the byte planes put the mostly-zero high bytes of the deltas together.
    """
    values = _rows_view(raw, spec)
    lag = _lag(spec)
    deltas = values.copy()
    deltas[:, lag:] -= values[:, :-lag]
    width = values.dtype.itemsize
    planes = deltas.reshape(-1).view(np.uint8).reshape(-1, width).T
    return zstd_encode(planes.tobytes())


def shuffle_decode(data: bytes, spec: FrameSpec, raw_length: int) -> bytes:
    """Inverse of `shuffle_encode`."""
    dtype = sample_dtype(spec)
    if dtype is None or raw_length != full_frame_length(spec):
        raise CodecError(
            f"delta-shuffle-zstd needs a whole frame of 8/16/32/64-bit samples, got "
            f"{spec.bits_allocated}-bit, {raw_length} bytes"
        )
    planes = np.frombuffer(zstd_decode(data, raw_length), np.uint8)
    deltas = planes.reshape(dtype.itemsize, -1).T.copy().view(dtype)
    rows = deltas.reshape(_rows_shape(spec))
    lag = _lag(spec)
    # A cumulative sum per lag-phase undoes the deltas, modulo 2**bits like the encoder.
    by_phase = rows.reshape(rows.shape[0], -1, lag)
    restored = np.cumsum(by_phase, axis=1, dtype=dtype)
    return restored.tobytes()


def _rows_shape(spec: FrameSpec) -> tuple[int, int]:
    if spec.planar_configuration == 1 and spec.samples_per_pixel > 1:
        return (spec.samples_per_pixel * spec.rows, spec.columns)
    return (spec.rows, spec.columns * spec.samples_per_pixel)


def _lag(spec: FrameSpec) -> int:
    if spec.planar_configuration == 1:
        return 1
    return spec.samples_per_pixel


def _rows_view(raw: bytes, spec: FrameSpec) -> np.ndarray:
    dtype = sample_dtype(spec)
    assert dtype is not None  # shuffle_accepts() checked the width
    return np.frombuffer(raw, dtype).reshape(_rows_shape(spec))
