"""Every frame decodes to what pydicom's pixel_array gives for that frame."""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import pydicom
import pytest
from corpus import corpus_id, corpus_paths
from pydicom.encaps import encapsulate, generate_fragments

from dicomlake.dicom import (
    encapsulated_frame_array,
    fragments_payload,
    frame_array,
    split_instance,
)
from dicomlake.errors import DicomParseError

# pydicom itself cannot decode these (12-bit lossy JPEG needs GDCM; a sequence delimiter inside
# the JPEG 2000 stream), so there is no reference to compare with.
NO_REFERENCE = {"JPEG-lossy.dcm", "JPEG2000-embedded-sequence-delimiter.dcm"}


def _image_paths() -> list[Path]:
    paths = []
    for path in corpus_paths():
        if path.name in NO_REFERENCE:
            continue
        try:
            split = split_instance(path.read_bytes())
        except DicomParseError:
            continue
        if split.frames and (split.encapsulated or split.frame_spec is not None):
            paths.append(path)
    return paths


def _reference(path: Path, syntax: str) -> np.ndarray:
    """pydicom's pixel_array, raw (no YCbCr to RGB), as (frames, ...)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ds = pydicom.dcmread(path, force=True)
        ds.file_meta.TransferSyntaxUID = syntax  # meta-less files: the implied syntax
        ds.pixel_array_options(raw=True)
        array = ds.pixel_array
    return array if int(ds.get("NumberOfFrames") or 1) > 1 else array[np.newaxis]


@pytest.mark.parametrize("path", _image_paths(), ids=corpus_id)
def test_frames_equal_pydicom_pixel_array(path: Path) -> None:
    split = split_instance(path.read_bytes())
    reference = _reference(path, split.transfer_syntax_uid)
    assert len(split.frames) == len(reference)
    for index, frame in enumerate(split.frames):
        if split.encapsulated:
            array = encapsulated_frame_array(frame, split.dataset, raw=True)
        else:
            array = frame_array(frame, split.frame_spec, raw=True)
        assert array.dtype == reference[index].dtype
        np.testing.assert_array_equal(array, reference[index], err_msg=f"frame {index}")


def test_fragments_payload_joins_fragments() -> None:
    frames = [b"abcd", b"efghij"]
    items = encapsulate(frames, fragments_per_frame=2, has_bot=False)
    # drop the empty offset table (encapsulate() writes no sequence delimiter)
    assert fragments_payload(items[8:]) == b"abcdefghij"
    assert list(generate_fragments(items[8:])) == [b"ab", b"cd", b"efgh", b"ij"]


def test_fragments_payload_rejects_a_cut_item() -> None:
    items = encapsulate([b"abcd"], has_bot=False)
    with pytest.raises(DicomParseError) as info:
        fragments_payload(items[8:18])
    assert info.value.reason == "corrupt"


@pytest.mark.parametrize(
    ("keyword", "vr", "dtype"),
    [("FloatPixelData", "OF", "<f4"), ("DoubleFloatPixelData", "OD", "<f8")],
)
def test_float_pixel_data_decodes_as_pydicom_decodes_it(
    keyword: str, vr: str, dtype: str, tmp_path: Path
) -> None:
    ds = pydicom.Dataset()
    ds.SOPClassUID = "1.2.840.10008.5.1.4.1.1.30"  # Parametric Map
    ds.SOPInstanceUID = "1.2.826.0.1.3680043.9.7777.30"
    ds.Rows, ds.Columns, ds.NumberOfFrames = 3, 2, 2
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
    ds.BitsAllocated = np.dtype(dtype).itemsize * 8
    pixels = np.linspace(-1.5, 2.5e6, 12).astype(dtype)
    ds.add_new(pydicom.datadict.tag_for_keyword(keyword), vr, pixels.tobytes())
    path = tmp_path / "float.dcm"
    ds.save_as(path, implicit_vr=False, little_endian=True)
    split = split_instance(path.read_bytes())
    reference = _reference(path, split.transfer_syntax_uid)
    assert len(split.frames) == 2
    for index, frame in enumerate(split.frames):
        np.testing.assert_array_equal(frame_array(frame, split.frame_spec), reference[index])
    np.testing.assert_array_equal(reference.ravel(), pixels)
