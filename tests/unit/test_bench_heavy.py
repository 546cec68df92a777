"""The benchmark's element-heavy sets: grown from the real files as said, counted right.

Element counts are checked against DCMTK's dcmdump, a reader independent of pydicom's walk;
geometry and pixels against the template files read here.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import pydicom
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "bench"))
import heavy_sets  # noqa: E402

ELEMENT_LINE = re.compile(r"^\s*\((?!fffe,|0002,)[0-9a-f]{4},[0-9a-f]{4}\)")


def _read(path: Path) -> pydicom.Dataset:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return pydicom.dcmread(path, force=True)


def _dcmdump_elements(path: Path) -> int:
    """Elements of the data set as dcmdump lists them: items, delimiters and meta apart."""
    if shutil.which("dcmdump") is None:
        pytest.fail("dcmdump (DCMTK) is needed: apt-get install dcmtk (dev/setup.sh does)")
    dump = subprocess.run(
        ["dcmdump", "-q", "+L", str(path)],
        capture_output=True,
        text=True,
        errors="replace",
        check=True,
    ).stdout
    return sum(1 for line in dump.splitlines() if ELEMENT_LINE.match(line))


def _write(ds: pydicom.Dataset, path: Path) -> Path:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        pydicom.dcmwrite(path, ds, enforce_file_format=True)
    return path


def test_sr_is_the_template_s_content_repeated_up_to_the_count(tmp_path: Path) -> None:
    template = _read(heavy_sets.SR_TEMPLATE)
    path = _write(heavy_sets.grow_sr(5_000), tmp_path / "sr.dcm")
    counted = _dcmdump_elements(path)
    largest_item = max(sum(1 for _ in item.iterall()) for item in template.ContentSequence)
    assert 5_000 <= counted < 5_000 + largest_item
    grown = _read(path).ContentSequence
    originals = list(template.ContentSequence)
    for n, item in enumerate(grown):
        assert item == originals[n % len(originals)]
    assert heavy_sets.count_elements(_read(path)) == counted


def test_rtstruct_has_the_rois_and_contours_asked_on_their_slices(tmp_path: Path) -> None:
    template = _read(heavy_sets.RT_TEMPLATE)
    path = _write(heavy_sets.grow_rtstruct(rois=10, contours=7, seed=3), tmp_path / "rt.dcm")
    ds = _read(path)
    assert [r.ROINumber for r in ds.StructureSetROISequence] == list(range(1, 11))
    assert [o.ReferencedROINumber for o in ds.RTROIObservationsSequence] == list(range(1, 11))
    real = list(template.ROIContourSequence)
    seen = set()
    for r, roi in enumerate(ds.ROIContourSequence):
        assert roi.ReferencedROINumber == r + 1
        assert [c.ContourNumber for c in roi.ContourSequence] == list(range(1, 8))
        shapes = list(real[r % len(real)].ContourSequence)
        for j, contour in enumerate(roi.ContourSequence):
            points = np.asarray(contour.ContourData, dtype=float).reshape(-1, 3)
            shape = np.asarray(shapes[j % len(shapes)].ContourData, dtype=float).reshape(-1, 3)
            assert len(points) == int(contour.NumberOfContourPoints) == len(shape)
            assert np.allclose(points[:, 2], -200.0 + 2.5 * j)
            shift = points[:, :2] - shape[:, :2]  # one in-plane shift per contour
            assert np.allclose(shift, shift[0], atol=0.011) and np.abs(shift).max() <= 20.01
            seen.add(points.tobytes())
    assert len(seen) == 70
    assert heavy_sets.count_elements(ds) == _dcmdump_elements(path)


def test_enhanced_ct_frames_are_real_crops_with_their_own_groups(tmp_path: Path) -> None:
    template = _read(heavy_sets.CT_TEMPLATE)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        real = template.pixel_array
    path = _write(heavy_sets.grow_enhanced_ct(frames=12), tmp_path / "ct.dcm")
    ds = _read(path)
    assert ds.NumberOfFrames == 12 and len(ds.PerFrameFunctionalGroupsSequence) == 12
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        frames = ds.pixel_array
    crop = heavy_sets.CT_CROP
    z0 = float(template.PerFrameFunctionalGroupsSequence[0].PlanePositionSequence[0][0x200032][2])
    zs = []
    for n, (frame, group) in enumerate(
        zip(frames, ds.PerFrameFunctionalGroupsSequence, strict=True)
    ):
        r0, c0 = (3 * n) % (512 - crop), (5 * n) % (512 - crop)
        assert (frame == real[n % 2, r0 : r0 + crop, c0 : c0 + crop]).all()
        assert group.FrameContentSequence[0].InStackPositionNumber == n + 1
        assert list(group.FrameContentSequence[0].DimensionIndexValues) == [1, n + 1]
        zs.append(float(group.PlanePositionSequence[0].ImagePositionPatient[2]))
    assert zs[0] == pytest.approx(z0) and all(b > a for a, b in zip(zs, zs[1:], strict=False))
    assert heavy_sets.count_elements(ds) == _dcmdump_elements(path)


def test_a_set_is_deterministic_with_new_uids_and_counted_elements(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(
        heavy_sets.HEAVY, "RTSTRUCT", lambda seed: heavy_sets.grow_rtstruct(4, 5, seed)
    )
    built = heavy_sets.build_heavy("RTSTRUCT", tmp_path / "a", 3, seed=3)
    heavy_sets.build_heavy("RTSTRUCT", tmp_path / "b", 3, seed=3)
    paths = sorted((tmp_path / "a").rglob("*.dcm"))
    again = sorted((tmp_path / "b").rglob("*.dcm"))
    assert [p.read_bytes() for p in paths] == [p.read_bytes() for p in again]
    assert built.files == len(paths) == 3
    assert built.bytes == sum(p.stat().st_size for p in paths)
    assert built.by_kind["RTSTRUCT"]["elements"] == sum(_dcmdump_elements(p) for p in paths)
    template = _read(heavy_sets.RT_TEMPLATE)
    sops = {str(_read(p).SOPInstanceUID) for p in paths}
    assert len(sops) == 3 and str(template.SOPInstanceUID) not in sops
    assert len({str(_read(p).StudyInstanceUID) for p in paths}) == 1
    assert str(template.StudyInstanceUID) != str(_read(paths[0]).StudyInstanceUID)
