"""Decode one stored frame to a numpy array with pydicom's own decoders.

By default arrays equal pydicom's ``pixel_array`` (YCbCr converted to RGB); ``raw=True``
gives the stored values, as the file holds them.
"""

from __future__ import annotations

import struct
import warnings
from typing import Any

import numpy as np
from pydicom.dataset import Dataset
from pydicom.pixels import get_decoder
from pydicom.uid import ExplicitVRBigEndian, ExplicitVRLittleEndian

from dicomlake.dicom.split import FrameSpec
from dicomlake.dicom.walk import ITEM
from dicomlake.errors import DicomParseError

_EMPTY_BOT = struct.pack("<HHL", 0xFFFE, 0xE000, 0)


def frame_array(frame: bytes, spec: FrameSpec, *, raw: bool = False) -> np.ndarray:
    """Return one native frame as an array equal to pydicom's ``pixel_array`` for it.

    Parameters
    ----------
    frame : bytes
        The frame's stored bytes, as in ``SplitInstance.frames``.
    spec : FrameSpec
        The instance's ``SplitInstance.frame_spec``.
    raw : bool
        Keep the stored colour space (no YCbCr to RGB conversion).

    Returns
    -------
    numpy.ndarray
        Shape (rows, columns) or (rows, columns, samples), native byte order, signedness,
        planar configuration and Bits Stored handled as pydicom does.
    """
    syntax = ExplicitVRLittleEndian if spec.little_endian else ExplicitVRBigEndian
    options = {
        "rows": spec.rows,
        "columns": spec.columns,
        "samples_per_pixel": spec.samples_per_pixel,
        "bits_allocated": spec.bits_allocated,
        "bits_stored": spec.bits_stored,
        "pixel_representation": spec.pixel_representation,
        "photometric_interpretation": spec.photometric_interpretation,
        "pixel_keyword": spec.pixel_keyword,
        "pixel_vr": spec.pixel_vr,
    }
    if spec.samples_per_pixel > 1:
        options["planar_configuration"] = spec.planar_configuration
    return _decode(syntax, frame, options, raw)


def encapsulated_frame_array(
    frame_items: bytes, dataset: Dataset, *, raw: bool = False
) -> np.ndarray:
    """Decode one encapsulated frame with pydicom's decoders.

    Parameters
    ----------
    frame_items : bytes
        The frame's complete items (tag, length, fragment), as in ``SplitInstance.frames``.
    dataset : pydicom.Dataset
        The instance's header (``SplitInstance.dataset``), file meta attached.
    raw : bool
        Keep the stored colour space (no YCbCr to RGB conversion).

    Returns
    -------
    numpy.ndarray
        Equal to pydicom's ``pixel_array`` for that frame.
    """
    syntax = dataset.file_meta.TransferSyntaxUID
    options: dict[str, Any] = {"pixel_keyword": "PixelData"}
    for keyword in (
        "Rows",
        "Columns",
        "SamplesPerPixel",
        "BitsAllocated",
        "BitsStored",
        "PixelRepresentation",
        "PhotometricInterpretation",
        "PlanarConfiguration",
    ):
        if keyword in dataset:
            options[_snake(keyword)] = dataset[keyword].value
    # The decoder expects a whole encapsulated value: an empty offset table, then items
    return _decode(syntax, _EMPTY_BOT + frame_items, options, raw)


def fragments_payload(frame_items: bytes) -> bytes:
    """Return the concatenated fragment payloads of one frame's items.

    Raises
    ------
    DicomParseError
        ``corrupt`` if the bytes are not a run of complete items.
    """
    view = memoryview(frame_items)
    parts, offset = [], 0
    while offset < len(view):
        if offset + 8 > len(view):
            raise DicomParseError("corrupt", f"item header cut at offset {offset} of frame")
        group, elem, length = struct.unpack_from("<HHL", view, offset)
        end = offset + 8 + length
        if group << 16 | elem != ITEM or end > len(view):
            raise DicomParseError("corrupt", f"no complete item at offset {offset} of frame")
        parts.append(view[offset + 8 : end])
        offset = end
    return b"".join(parts)


def _snake(keyword: str) -> str:
    return "".join(f"_{c.lower()}" if c.isupper() else c for c in keyword).lstrip("_")


def _decode(syntax: str, src: bytes, options: dict[str, Any], raw: bool) -> np.ndarray:
    with warnings.catch_warnings():
        # pydicom warns about header/bitstream mismatches it corrects, as pixel_array does
        warnings.simplefilter("ignore")
        array, _ = get_decoder(syntax).as_array(
            src, index=0, raw=raw, number_of_frames=1, **options
        )
    return array
