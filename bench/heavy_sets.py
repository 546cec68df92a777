"""Element-heavy landing zones for the ingest benchmark, grown from real DICOM files.

    .venv/bin/python bench/heavy_sets.py --out /tmp/heavy --files 3   # by hand
    (bench/ingest_bench.py builds and caches these itself under .cache/bench/)

Where the mix is mostly pixel bytes, these sets are mostly header: each is a few copies of one
big header built from a real file, the copies written with new Study/Series/SOP Instance UIDs
(see synth_landing.py):

- ``SR``: pydicom's ``test-SR.dcm`` (a Comprehensive SR of DCMTK's), its content tree repeated
  until the document has ``SR_ELEMENTS`` elements; ``SR-half``, the same with half as many, so
  that the benchmark can tell whether time grows linearly with the element count;
- ``RTSTRUCT``: pydicom's ``rtstruct.dcm`` (3 ROIs), grown to ``RT_ROIS`` ROIs of
  ``RT_CONTOURS`` contours each, one contour per 2.5 mm slice, each a real contour shifted;
- ``enhanced-CT``: pydicom-data's ``eCT_Supplemental.dcm`` (an Enhanced CT of 2 frames), grown to
  ``CT_FRAMES`` frames, each with its own per-frame functional groups (its real groups with the
  stack position, dimension index and slice position of that frame) and a 128 x 128 crop of a
  real frame.

The elements of each written file are counted by pydicom's ``iterall`` (every element of the
data set, in every sequence item, the pixel data included, the file meta group not), a walk
independent of dicomlake's parser; the counts go into the manifest.
"""

from __future__ import annotations

import argparse
import copy
import json
import random
import sys
import warnings
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pydicom
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.sequence import Sequence
from pydicom.uid import ExplicitVRLittleEndian

from synth_landing import (
    PYDICOM_DATA,
    PYDICOM_TEST_FILES,
    Built,
    Uids,
    cached,
    new_study,
    write_series,
)

HEAVY_VERSION = 2  # bump when the output for a given seed changes (invalidates caches)

SR_TEMPLATE = PYDICOM_TEST_FILES / "test-SR.dcm"
SR_ELEMENTS = 150_000
RT_TEMPLATE = PYDICOM_TEST_FILES / "rtstruct.dcm"
RT_ROIS, RT_CONTOURS, RT_SLICE_MM = 200, 100, 2.5
CT_TEMPLATE = PYDICOM_DATA / "eCT_Supplemental.dcm"
CT_FRAMES, CT_CROP = 1000, 128


def _read(path: Path) -> Dataset:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return pydicom.dcmread(path, force=True)


def count_elements(ds: Dataset) -> int:
    """Every element of the data set and its sequence items (the file meta group apart)."""
    return sum(1 for _ in ds.iterall())


def grow_sr(elements: int = SR_ELEMENTS) -> Dataset:
    """test-SR.dcm with its top-level content items repeated in turn until ``elements``."""
    ds = _read(SR_TEMPLATE)
    items = list(ds.ContentSequence)
    sizes = [count_elements(item) for item in items]
    total = count_elements(ds) - sum(sizes)  # the document without its content items
    grown = []
    n = 0
    while total < elements:
        k = n % len(items)
        grown.append(copy.deepcopy(items[k]))
        total += sizes[k]
        n += 1
    ds.ContentSequence = Sequence(grown)
    return ds


def grow_rtstruct(rois: int = RT_ROIS, contours: int = RT_CONTOURS, seed: int = 7) -> Dataset:
    """rtstruct.dcm with ``rois`` ROIs (copies of its own, renumbered) of ``contours`` contours.

    Contour j of an ROI is one of the template ROI's contours moved to the slice at j x 2.5 mm
    and shifted in-plane by a seeded offset, so no two contours are the same points.
    """
    rng = random.Random(seed)
    ds = _read(RT_TEMPLATE)
    ds.file_meta = FileMetaDataset()  # the template is a bare data set
    ds.file_meta.MediaStorageSOPClassUID = ds.SOPClassUID
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.preamble = b"\0" * 128
    structure, observations, contoured = (
        list(ds.StructureSetROISequence),
        list(ds.RTROIObservationsSequence),
        list(ds.ROIContourSequence),
    )
    new_structure, new_observations, new_contoured = [], [], []
    for r in range(rois):
        number = r + 1
        k = r % len(structure)
        roi = copy.deepcopy(structure[k])
        roi.ROINumber = number
        roi.ROIName = f"{structure[k].ROIName}-{number:03d}"
        new_structure.append(roi)
        obs = copy.deepcopy(observations[k])
        obs.ObservationNumber = number
        obs.ReferencedROINumber = number
        new_observations.append(obs)
        roi_contour = copy.deepcopy(contoured[k])
        roi_contour.ReferencedROINumber = number
        shapes = list(contoured[k].ContourSequence)
        slices = []
        for j in range(contours):
            contour = copy.deepcopy(shapes[j % len(shapes)])
            contour.ContourNumber = j + 1
            dx, dy = rng.uniform(-20, 20), rng.uniform(-20, 20)
            points = np.asarray(contour.ContourData, dtype=float).reshape(-1, 3)
            points += (dx, dy, 0.0)
            points[:, 2] = -200.0 + RT_SLICE_MM * j
            contour.ContourData = [f"{v:.2f}" for v in points.ravel()]
            slices.append(contour)
        roi_contour.ContourSequence = Sequence(slices)
        new_contoured.append(roi_contour)
    ds.StructureSetROISequence = Sequence(new_structure)
    ds.RTROIObservationsSequence = Sequence(new_observations)
    ds.ROIContourSequence = Sequence(new_contoured)
    return ds


def grow_enhanced_ct(frames: int = CT_FRAMES) -> Dataset:
    """eCT_Supplemental.dcm with ``frames`` frames and as many per-frame functional groups.

    Frame n is a CT_CROP-square crop of the template's frame n % 2, the crop window moving a
    few pixels per frame; its functional groups are that frame's, with its own In-Stack
    Position Number, Dimension Index Values and slice position.
    """
    ds = _read(CT_TEMPLATE)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        real = ds.pixel_array  # (2, 512, 512)
    groups = list(ds.PerFrameFunctionalGroupsSequence)
    position = [float(v) for v in groups[0].PlanePositionSequence[0].ImagePositionPatient]
    thickness = float(
        ds.SharedFunctionalGroupsSequence[0].PixelMeasuresSequence[0].get("SliceThickness", 1.0)
    )
    room = real.shape[1] - CT_CROP
    pixels = np.empty((frames, CT_CROP, CT_CROP), dtype=real.dtype)
    per_frame = []
    for n in range(frames):
        r0, c0 = (3 * n) % room, (5 * n) % room
        pixels[n] = real[n % len(real), r0 : r0 + CT_CROP, c0 : c0 + CT_CROP]
        item = copy.deepcopy(groups[n % len(groups)])
        content = item.FrameContentSequence[0]
        content.InStackPositionNumber = n + 1
        content.DimensionIndexValues = [1, n + 1]
        item.PlanePositionSequence[0].ImagePositionPatient = [
            f"{position[0]:.4f}",
            f"{position[1]:.4f}",
            f"{position[2] + thickness * n:.4f}",
        ]
        per_frame.append(item)
    ds.PerFrameFunctionalGroupsSequence = Sequence(per_frame)
    ds.NumberOfFrames = frames
    ds.Rows = ds.Columns = CT_CROP
    ds.PixelData = pixels.astype(pixels.dtype.newbyteorder("<")).tobytes()
    return ds


HEAVY: dict[str, Callable[[int], Dataset]] = {
    "SR": lambda seed: grow_sr(),
    "SR-half": lambda seed: grow_sr(SR_ELEMENTS // 2),  # against SR: time linear in elements?
    "RTSTRUCT": lambda seed: grow_rtstruct(seed=seed),
    "enhanced-CT": lambda seed: grow_enhanced_ct(),
}
"""Set name -> the grown data set (of a seed), in the benchmark's order."""


def build_heavy(kind: str, out: Path, files: int, seed: int = 7) -> Built:
    """``files`` copies of the grown ``kind`` under ``out``, one series, new UIDs per file."""
    ds = HEAVY[kind](seed)
    rng = random.Random(seed)
    uids = Uids(seed * 7_919 + len(kind))
    study = new_study(rng, uids, 1)
    sizes = list(write_series(ds, uids, study, 1, files, out / kind / "SE001"))
    elements = sum(count_elements(_read(p)) for p in sorted((out / kind).rglob("*.dcm")))
    return Built(
        files, sum(sizes), {kind: {"files": files, "bytes": sum(sizes), "elements": elements}}
    )


def cached_heavy(cache: Path, kind: str, files: int, seed: int = 7) -> tuple[Path, Built]:
    """The ``kind`` set of ``files`` files, built once under ``cache`` and reused after."""
    return cached(
        cache / f"heavy-{kind}-{files}-seed{seed}-v{HEAVY_VERSION}",
        lambda landing: build_heavy(kind, landing, files, seed),
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--files", type=int, default=3, help="files per set (3)")
    parser.add_argument("--seed", type=int, default=7)
    args = parser.parse_args(argv)
    for kind in HEAVY:
        print(json.dumps(build_heavy(kind, args.out, args.files, args.seed).as_dict()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
