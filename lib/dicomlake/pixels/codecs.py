"""Lossless frame codecs: choose, encode with verification, decode exactly.

Codec ids are stored with every chunk, so an id, once written, must decode forever.

"auto" picks per image class, by measurement on the real corpus (bench/codec_bench.py):
HTJ2K for 16-bit grey up to 1 Mpixel, CT and MR slices (best ratio: 7.96 against JPEG-XL's
5.85 on CT); JPEG-XL lossless effort 1 for larger 16-bit grey frames, radiographs (ratio
within 2% of HTJ2K's, encode and verify about 30% faster), for 8-bit grey and for all
3-sample colour (best on US/RGB and far the fastest encoder);
row-delta + byte-shuffle + zstd for what image codecs cannot take (palette indices, 1-bit,
32/64-bit and float, subsampled colour), plain zstd without a frame description.
Whatever is picked, a frame that does not round-trip falls back to a byte codec.

>>> codec_id, data = encode(raw, spec)            # doctest: +SKIP
>>> decode(codec_id, data, spec, len(raw)) == raw  # doctest: +SKIP
True
"""

from __future__ import annotations

import logging
from collections.abc import Callable

import imagecodecs
import numpy as np

from dicomlake.errors import CodecError, UnknownCodecError
from dicomlake.pixels import bytecodecs, image
from dicomlake.pixels.spec import FrameSpec

log = logging.getLogger(__name__)

STORE = "store"
ZSTD = "zstd"
SHUFFLE = "delta-shuffle-zstd"
JPEGXL = "jpegxl"
HTJ2K = "htj2k"
JPEGLS = "jpegls"
JPEG2K = "jpeg2k"

# Image codecs: (encode unsigned array, decode to array). One thread each: Spark runs one
# task per core already, and imagecodecs releases the GIL inside both calls.
_IMAGE: dict[
    str, tuple[Callable[[np.ndarray], bytes | bytearray], Callable[[bytes], np.ndarray]]
] = {
    JPEGXL: (
        lambda a: imagecodecs.jpegxl_encode(a, lossless=True, effort=1, numthreads=1),
        lambda d: imagecodecs.jpegxl_decode(d, numthreads=1),
    ),
    HTJ2K: (
        lambda a: imagecodecs.htj2k_encode(a, reversible=True),
        imagecodecs.htj2k_decode,
    ),
    JPEGLS: (
        lambda a: imagecodecs.jpegls_encode(a, level=0),
        imagecodecs.jpegls_decode,
    ),
    JPEG2K: (
        lambda a: imagecodecs.jpeg2k_encode(a, reversible=True, numthreads=1),
        lambda d: imagecodecs.jpeg2k_decode(d, numthreads=1),
    ),
}

CODECS: tuple[str, ...] = (STORE, ZSTD, SHUFFLE, *_IMAGE)
"""Every codec id this version can decode."""
RADIOGRAPH_PIXELS = 1 << 20
"""16-bit grey frames with more pixels than this (1024 x 1024) are radiographs to "auto"."""


def choose(spec: FrameSpec | None) -> str:
    """The codec "auto" tries first for frames described by `spec` (see the module doc)."""
    if spec is None:
        return ZSTD
    photometric = spec.photometric_interpretation.upper()
    if not image.accepts(spec) or photometric == "PALETTE COLOR":
        return SHUFFLE
    if spec.samples_per_pixel == 1 and spec.bits_allocated == 16:
        return JPEGXL if spec.rows * spec.columns > RADIOGRAPH_PIXELS else HTJ2K
    return JPEGXL


def encode(
    raw: bytes, spec: FrameSpec | None = None, codec: str = "auto", verify: bool = True
) -> tuple[str, bytes]:
    """Compress one frame (or any bytes when `spec` is None) losslessly.

    Parameters
    ----------
    raw : the frame's native little-endian bytes, or any bytes.
    spec : the frame's description; None means opaque bytes.
    codec : "auto", or one of CODECS; "store" keeps already-compressed data as it is.
    verify : decode the result and compare before returning it.

    Returns
    -------
    (codec_id, encoded). If the requested codec cannot take the frame, raises, or (with
    `verify`) does not reproduce `raw`, the next byte codec is tried (logged at debug);
    output that would not be smaller than `raw` is stored as it is.
    """
    if codec != "auto" and codec not in CODECS:
        raise UnknownCodecError(f"unknown codec {codec!r}; known: {', '.join(CODECS)}")
    raw = bytes(raw)
    first = choose(spec) if codec == "auto" else codec
    for candidate in dict.fromkeys((first, SHUFFLE, ZSTD)):
        data = _try_encode(candidate, raw, spec)
        if data is None:
            continue
        if len(data) >= len(raw) and candidate != STORE:
            return STORE, raw
        if verify and not _round_trips(candidate, data, raw, spec):
            continue
        return candidate, data
    return STORE, raw


def decode(codec_id: str, data: bytes, spec: FrameSpec | None, raw_length: int) -> bytes:
    """Exact raw bytes of a chunk encoded by `encode`.

    Raises UnknownCodecError for an id not in CODECS, CodecError for malformed data, a
    missing frame description, or a result of the wrong length.
    """
    if codec_id == STORE:
        out = bytes(data)
    elif codec_id == ZSTD:
        out = bytecodecs.zstd_decode(data, raw_length)
    elif codec_id == SHUFFLE:
        out = bytecodecs.shuffle_decode(data, _need_spec(codec_id, spec), raw_length)
    elif codec_id in _IMAGE:
        spec = _need_spec(codec_id, spec)
        try:
            array = _IMAGE[codec_id][1](data)
        except (RuntimeError, ValueError) as exc:  # imagecodecs' errors are RuntimeErrors
            raise CodecError(f"{codec_id} data is malformed: {exc}") from exc
        out = image.from_image(array, spec)
    else:
        raise UnknownCodecError(f"unknown codec {codec_id!r}; known: {', '.join(CODECS)}")
    if len(out) != raw_length:
        raise CodecError(f"{codec_id} chunk decoded to {len(out)} bytes, expected {raw_length}")
    return out


def _try_encode(codec_id: str, raw: bytes, spec: FrameSpec | None) -> bytes | None:
    """Encoded bytes, or None when the codec cannot take this frame."""
    if codec_id == STORE:
        return raw
    if codec_id == ZSTD:
        return bytecodecs.zstd_encode(raw)
    if codec_id == SHUFFLE:
        if spec is None or not bytecodecs.shuffle_accepts(raw, spec):
            return None
        return bytecodecs.shuffle_encode(raw, spec)
    array = image.to_image(raw, spec) if spec is not None else None
    if array is None:
        log.debug("%s cannot hold this frame exactly; trying a byte codec", codec_id)
        return None
    try:
        return bytes(_IMAGE[codec_id][0](array))
    except Exception as exc:  # any codec failure must end in a fallback, never a lost frame
        log.debug("%s failed to encode (%s); trying a byte codec", codec_id, exc)
        return None


def _round_trips(codec_id: str, data: bytes, raw: bytes, spec: FrameSpec | None) -> bool:
    try:
        ok = decode(codec_id, data, spec, len(raw)) == raw
    except CodecError as exc:
        log.debug("%s output does not decode (%s); trying a byte codec", codec_id, exc)
        return False
    if not ok:
        log.debug("%s output does not round-trip; trying a byte codec", codec_id)
    return ok


def _need_spec(codec_id: str, spec: FrameSpec | None) -> FrameSpec:
    if spec is None:
        raise CodecError(f"decoding {codec_id} needs the frame description (spec), got None")
    return spec
