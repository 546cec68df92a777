"""The benchmark's synthetic landing zone: deterministic, with new and consistent UIDs.

Checked independently with pydicom on the written files, against the real template files.
"""

from __future__ import annotations

import warnings
from collections import defaultdict
from pathlib import Path

import numpy as np
import pydicom
import pydicom.data
import pytest
from pydicom.uid import UID

import synth_landing


def _read(path: Path, pixels: bool = False) -> pydicom.Dataset:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return pydicom.dcmread(path, stop_before_pixels=not pixels)


def _files(root: Path) -> dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*.dcm"))}


def _template_uids() -> set[str]:
    paths = {t.path for ts in synth_landing.TEMPLATES.values() for t in ts}
    paths |= {p for _, p, _ in synth_landing.SMALL_MIX}
    uids = set()
    for path in paths:
        ds = _read(path)
        for keyword in ("StudyInstanceUID", "SeriesInstanceUID", "SOPInstanceUID"):
            if keyword in ds:
                uids.add(str(ds.data_element(keyword).value))
    return uids


@pytest.fixture(scope="module")
def small_zone(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("small")
    synth_landing.build_small_files(root, 60, seed=3)
    return root


@pytest.fixture(scope="module")
def ct_zone(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("ct")
    synth_landing.build_landing(root, 3_000_000, seed=3, mix={"CT": 1.0})
    return root


def test_same_seed_same_bytes(tmp_path: Path, small_zone: Path, ct_zone: Path) -> None:
    synth_landing.build_small_files(tmp_path / "small", 60, seed=3)
    synth_landing.build_landing(tmp_path / "ct", 3_000_000, seed=3, mix={"CT": 1.0})
    assert _files(tmp_path / "small") == _files(small_zone)
    assert _files(tmp_path / "ct") == _files(ct_zone)


def test_other_seed_other_uids(tmp_path: Path, small_zone: Path) -> None:
    synth_landing.build_small_files(tmp_path, 60, seed=4)
    ours = {str(_read(p).SOPInstanceUID) for p in small_zone.rglob("*.dcm")}
    theirs = {str(_read(p).SOPInstanceUID) for p in tmp_path.rglob("*.dcm")}
    assert not ours & theirs


@pytest.mark.parametrize("zone", ["small_zone", "ct_zone"])
def test_uids_new_valid_and_consistent(zone: str, request: pytest.FixtureRequest) -> None:
    root: Path = request.getfixturevalue(zone)
    paths = sorted(root.rglob("*.dcm"))
    assert len(paths) >= 3
    old = _template_uids()
    sops: set[str] = set()
    by_series: dict[Path, set[tuple[str, str]]] = defaultdict(set)
    by_study: dict[Path, set[str]] = defaultdict(set)
    for path in paths:
        ds = _read(path)
        study, series, sop = (
            str(ds.StudyInstanceUID),
            str(ds.SeriesInstanceUID),
            str(ds.SOPInstanceUID),
        )
        for uid in (study, series, sop):
            assert UID(uid).is_valid, uid
            assert uid not in old
        assert str(ds.file_meta.MediaStorageSOPInstanceUID) == sop
        assert sop not in sops
        sops.add(sop)
        by_series[path.parent].add((study, series))
        by_study[path.parent.parent].add(study)
    # One Study and Series UID per series folder, different series never share a Series UID.
    assert all(len(v) == 1 for v in by_series.values())
    series_uids = [next(iter(v))[1] for v in by_series.values()]
    assert len(series_uids) == len(set(series_uids))
    assert all(len(v) == 1 for v in by_study.values())
    studies = [next(iter(v)) for v in by_study.values()]
    assert len(studies) == len(set(studies))


def test_pixel_data_is_the_template_s(ct_zone: Path) -> None:
    templates = {t.path.name: t.path for t in synth_landing.TEMPLATES["CT"]}
    originals = {bytes(_read(p, pixels=True).PixelData) for p in templates.values()}
    for path in sorted(ct_zone.rglob("*.dcm"))[:5]:
        assert bytes(_read(path, pixels=True).PixelData) in originals


def test_small_files_are_about_100_kb(small_zone: Path) -> None:
    sizes = [p.stat().st_size for p in small_zone.rglob("*.dcm")]
    assert len(sizes) == 60
    assert 60_000 < sum(sizes) / len(sizes) < 140_000


def test_huge_file_frames_are_ct_small_tiled_shifted_and_noisy(tmp_path: Path) -> None:
    frame_bytes = 512 * 512 * 2
    built = synth_landing.build_huge_file(tmp_path / "a.dcm", 3 * frame_bytes + 100, seed=3)
    again = synth_landing.build_huge_file(tmp_path / "b.dcm", 3 * frame_bytes + 100, seed=3)
    assert (tmp_path / "a.dcm").read_bytes() == (tmp_path / "b.dcm").read_bytes()
    assert built == again and frame_bytes * 3 < built.bytes < frame_bytes * 3 + 10_000
    ds = _read(tmp_path / "a.dcm", pixels=True)
    tile = _read(Path(pydicom.data.get_testdata_file("CT_small.dcm")), pixels=True).pixel_array
    assert ds.NumberOfFrames == 3 and ds.SOPInstanceUID not in _template_uids()
    frames = ds.pixel_array.astype(int)
    for n, frame in enumerate(frames):
        expected = np.roll(np.tile(tile.astype(int), (4, 4)), (7 * n, 13 * n), axis=(0, 1))
        noise = frame - expected
        assert noise.min() >= -8 and noise.max() <= 8 and len(np.unique(noise)) == 17
    assert not (frames[0] == frames[1]).all()


@pytest.mark.parametrize("size", [4_000_000, 9_000_000])
def test_every_size_keeps_the_mix(tmp_path: Path, size: int) -> None:
    """A kind gets its byte share of the size and at most one file more, however long the
    study being written when the share is reached (CT series have 50 slices or more)."""
    mix = {"CT": 0.6, "MR": 0.4}
    synth_landing.build_landing(tmp_path, size, seed=3, mix=mix)
    for kind, share in mix.items():
        sizes = [p.stat().st_size for p in (tmp_path / kind).rglob("*.dcm")]
        assert share * size <= sum(sizes) < share * size + max(sizes)
