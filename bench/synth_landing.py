"""A deterministic synthetic landing zone made of real DICOM images, for the ingest benchmark.

    .venv/bin/python bench/synth_landing.py --size-gb 0.5 --out /tmp/landing   # by hand
    (bench/ingest_bench.py builds and caches these itself under .cache/bench/)

Every file is a copy of a real image shipped by pydicom (its test files), ``pydicom-data`` or
``deid-data``, re-written by pydicom with new Study/Series/SOP Instance UIDs (and a new patient,
study date, series and instance numbers). Pixel data bytes are kept as they are, except in the
small-file case, where 224 x 224 crops of real CT and MR slices make ~100 KB files.

Studies are drawn by a seeded RNG until the size is reached, the byte mix kept to ``MIX`` at
every size: CT and MR series of 50-300 slices, single radiographs (CR/DX), ultrasound studies
with native multi-frame cines, and already-compressed studies (JPEG, JPEG-LS, JPEG 2000) whose
bitstreams dicomlake stores as they are. The same seed and parameters give the same bytes.

The huge-file case is one multi-frame 16-bit CT of several GB made from pydicom's CT_small
slice (`build_huge_file`), written frame by frame.
"""

from __future__ import annotations

import argparse
import copy
import datetime as dt
import hashlib
import itertools
import json
import random
import shutil
import struct
import sys
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from functools import lru_cache, partial
from pathlib import Path

import data_store
import deid_data
import numpy as np
import pydicom
import pydicom.data
from pydicom.dataset import Dataset

GENERATOR_VERSION = 2  # bump when the output for a given seed changes (invalidates caches)

PYDICOM_TEST_FILES = Path(pydicom.data.__file__).parent / "test_files"
DEID_DATA = Path(deid_data.__file__).parent / "data"
PYDICOM_DATA = Path(data_store.__file__).parent / "data"


@dataclass(frozen=True)
class Template:
    """One real file and how it appears in studies: slices per series, series per study."""

    path: Path
    slices: tuple[int, int]  # instances per series (inclusive range)
    series: tuple[int, int] = (1, 1)  # series per study


# Byte shares of the big landing zone, by study kind (roughly a hospital PACS's intake).
MIX = {"CT": 0.35, "MR": 0.20, "CR/DX": 0.15, "US": 0.15, "compressed": 0.15}

TEMPLATES: dict[str, list[Template]] = {
    "CT": [
        Template(PYDICOM_DATA / "693_UNCR.dcm", (50, 300), (1, 2)),  # 512 x 512 x 16
        Template(PYDICOM_DATA / "693_UNCI.dcm", (50, 300), (1, 2)),  # implicit VR
        Template(PYDICOM_DATA / "eCT_Supplemental.dcm", (50, 120)),  # 2-frame enhanced CT
    ],
    "MR": [
        Template(PYDICOM_DATA / "MR-SIEMENS-DICOM-WithOverlays.dcm", (50, 300), (2, 4)),
        Template(PYDICOM_TEST_FILES / "examples_overlay.dcm", (50, 300), (2, 4)),  # 300 x 484
        Template(PYDICOM_DATA / "MR2_UNCR.dcm", (50, 120), (1, 2)),  # 1024 x 1024
    ],
    "CR/DX": [
        Template(PYDICOM_DATA / "RG1_UNCR.dcm", (1, 1), (1, 2)),  # CR 1955 x 1841
        Template(PYDICOM_DATA / "RG3_UNCR.dcm", (1, 1), (1, 2)),  # CR 1760 x 1760
        Template(DEID_DATA / "animals/cat.dcm", (1, 1)),  # DX 2614 x 3072
    ],
    "US": [
        Template(DEID_DATA / "ultrasounds/ultrasound-multiframe.dcm", (1, 1)),  # 30-frame cine
        Template(PYDICOM_DATA / "OBXXXX1A_2frame.dcm", (2, 6)),
        Template(PYDICOM_DATA / "US1_UNCR.dcm", (2, 10)),
        Template(DEID_DATA / "ultrasounds/GREYSCALE_IMAGE.dcm", (2, 10)),
        Template(DEID_DATA / "ultrasounds/RGB_IMAGE.dcm", (1, 4)),
        Template(PYDICOM_TEST_FILES / "examples_rgb_color.dcm", (2, 10)),
    ],
    "compressed": [
        Template(PYDICOM_DATA / "color3d_jpeg_baseline.dcm", (1, 3)),  # 120-frame JPEG cine
        Template(PYDICOM_TEST_FILES / "examples_ybr_color.dcm", (1, 5)),  # 30-frame JPEG cine
        Template(PYDICOM_DATA / "RG1_J2KR.dcm", (1, 1), (1, 2)),  # JPEG 2000 lossless CR
        Template(PYDICOM_DATA / "MR2_J2KR.dcm", (50, 120)),  # JPEG 2000 lossless MR
        Template(PYDICOM_DATA / "693_J2KR.dcm", (50, 300)),  # JPEG 2000 lossless CT
        Template(PYDICOM_DATA / "JPGLosslessP14SV1_1s_1f_8b.dcm", (2, 10)),  # JPEG lossless
        Template(DEID_DATA / "dicom-cookies/image1.dcm", (1, 3)),  # JPEG baseline, 2048 x 1536
    ],
}

# The small-file case: ~100 KB files. Crops are (template, rows, columns) of real slices.
SMALL_CROP = 224
SMALL_MIX: list[tuple[str, Path, float]] = [
    ("crop", PYDICOM_DATA / "693_UNCR.dcm", 0.40),  # CT, 224 x 224 x 16: ~100 KB
    ("crop", PYDICOM_DATA / "MR2_UNCR.dcm", 0.30),  # MR, 224 x 224 x 16: ~100 KB
    ("whole", PYDICOM_DATA / "emri_small.dcm", 0.15),  # MR, 10 frames 64 x 64: 84 KB
    ("whole", PYDICOM_DATA / "color-pl.dcm", 0.15),  # US RGB 120 x 256: 93 KB
]


# The huge-file case: CT_small's 128 x 128 slice tiled HUGE_TILES x HUGE_TILES per frame.
HUGE_TEMPLATE = PYDICOM_TEST_FILES / "CT_small.dcm"
HUGE_TILES = 4


@dataclass(frozen=True)
class Built:
    """What was written: counts per kind, the file list and total size."""

    files: int
    bytes: int
    by_kind: dict[str, dict[str, int]]

    def as_dict(self) -> dict[str, object]:
        return {"files": self.files, "bytes": self.bytes, "by_kind": self.by_kind}


class Uids:
    """Deterministic UIDs (2.25 form) from the seed and a running counter."""

    def __init__(self, seed: int) -> None:
        self._seed, self._n = seed, 0

    def __call__(self, what: str) -> str:
        self._n += 1
        digest = hashlib.sha256(f"dicomlake-bench/{self._seed}/{what}/{self._n}".encode())
        return "2.25." + str(int.from_bytes(digest.digest()[:16], "big"))  # a UUID-sized integer


@lru_cache(maxsize=8)
def read_template(path: Path) -> Dataset:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return pydicom.dcmread(path)


@lru_cache(maxsize=4)
def _cropped(path: Path) -> Dataset:
    """A centre crop of a single-frame native slice, SMALL_CROP pixels square."""
    ds = copy.deepcopy(read_template(path))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        arr = ds.pixel_array
    r0 = (arr.shape[0] - SMALL_CROP) // 2
    c0 = (arr.shape[1] - SMALL_CROP) // 2
    crop = np.ascontiguousarray(arr[r0 : r0 + SMALL_CROP, c0 : c0 + SMALL_CROP])
    ds.Rows, ds.Columns = SMALL_CROP, SMALL_CROP
    ds.PixelData = crop.astype(crop.dtype.newbyteorder("<")).tobytes()
    return ds


def write_file(ds: Dataset, target: Path) -> int:
    target.parent.mkdir(parents=True, exist_ok=True)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        pydicom.dcmwrite(target, ds, enforce_file_format=False)
    return target.stat().st_size


def write_series(
    ds: Dataset,
    uids: Uids,
    study: dict[str, str],
    series_number: int,
    count: int,
    target_dir: Path,
) -> Iterator[int]:
    """Write ``count`` instances of one series from ``ds`` (mutated in place); yields sizes."""
    for key, value in study.items():
        setattr(ds, key, value)
    ds.SeriesInstanceUID = uids("series")
    ds.SeriesNumber = series_number
    if "FrameOfReferenceUID" in ds:
        ds.FrameOfReferenceUID = uids("for")
    for n in range(1, count + 1):
        sop = uids("sop")
        ds.SOPInstanceUID = sop
        if getattr(ds, "file_meta", None) is not None:
            ds.file_meta.MediaStorageSOPInstanceUID = sop
        ds.InstanceNumber = n
        yield write_file(ds, target_dir / f"IM{n:05d}.dcm")


def new_study(rng: random.Random, uids: Uids, number: int) -> dict[str, str]:
    day = dt.date(2015, 1, 1) + dt.timedelta(days=rng.randrange(3650))
    return {
        "PatientID": f"BENCH{number:06d}",
        "PatientName": f"Bench^Patient{number:06d}",
        "StudyInstanceUID": uids("study"),
        "StudyDate": day.strftime("%Y%m%d"),
        "StudyID": str(number),
        "AccessionNumber": f"A{number:08d}",
    }


def build_landing(
    out: Path, size_bytes: int, seed: int = 7, mix: dict[str, float] | None = None
) -> Built:
    """Write studies under ``out`` until ``size_bytes`` is reached (the last series may stop early).

    The study kind drawn next is the one furthest below its share in ``mix`` (default ``MIX``),
    and a study stops early once its kind has its share of ``size_bytes``, so every size has
    the same mix (within one file per kind) and sizes can be compared. Template, series and
    slice counts are drawn from ``random.Random(seed)``.
    """
    mix = MIX if mix is None else mix
    rng = random.Random(seed)
    uids = Uids(seed)
    done: dict[str, list[int]] = {kind: [0, 0] for kind in mix}  # files, bytes
    total = files = 0
    study_no = 0
    while total < size_bytes:
        kind = min(mix, key=lambda k: (done[k][1] / mix[k], k))
        tpl = rng.choice(TEMPLATES[kind])
        study_no += 1
        study = new_study(rng, uids, study_no)
        study_dir = out / kind.replace("/", "") / f"P{study_no:06d}" / f"S{study_no:06d}"
        ds = read_template(tpl.path)  # mutated in place: every field changed is set for each file
        series = (  # lazily: each series draws its slice count when the one before it is done
            write_series(ds, uids, study, n, rng.randint(*tpl.slices), study_dir / f"SE{n:03d}")
            for n in range(1, rng.randint(*tpl.series) + 1)
        )
        for size in itertools.chain.from_iterable(series):
            total += size
            files += 1
            done[kind][0] += 1
            done[kind][1] += size
            if done[kind][1] >= mix[kind] * size_bytes:
                break  # the kind has its share: one long study must not skew the mix
    return Built(files, total, {k: {"files": v[0], "bytes": v[1]} for k, v in done.items()})


def build_small_files(out: Path, count: int, seed: int = 7) -> Built:
    """Write ``count`` ~100 KB files in series of 20-100 (crops of real CT/MR slices and small
    real files), for the small-file case."""
    rng = random.Random(seed * 1_000_003 + 1)
    uids = Uids(seed * 1_000_003 + 1)
    done: dict[str, list[int]] = {}
    total = files = study_no = 0
    weights = [w for _, _, w in SMALL_MIX]
    while files < count:
        how, path, _ = rng.choices(SMALL_MIX, weights)[0]
        source = _cropped(path) if how == "crop" else read_template(path)
        ds = copy.deepcopy(source)
        study_no += 1
        study = new_study(rng, uids, study_no)
        n = min(rng.randint(20, 100), count - files)
        label = f"{how}:{path.name}"
        series_dir = out / f"P{study_no:06d}" / f"S{study_no:06d}" / "SE001"
        for size in write_series(ds, uids, study, 1, n, series_dir):
            total += size
            files += 1
            entry = done.setdefault(label, [0, 0])
            entry[0] += 1
            entry[1] += size
    return Built(files, total, {k: {"files": v[0], "bytes": v[1]} for k, v in done.items()})


def build_huge_file(target: Path, size_bytes: int, seed: int = 7) -> Built:
    """Write one multi-frame 16-bit CT of about ``size_bytes`` (at most 4 GiB), frame by frame.

    Each 512 x 512 frame is CT_small's real slice tiled 4 x 4, shifted by a few pixels per
    frame and given seeded noise of +-8 grey levels, so that frames differ and compress about as
    much as real CT does, not to nothing. Native pixel data has a 32-bit length, hence the limit.
    """
    ds = copy.deepcopy(read_template(HUGE_TEMPLATE))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        base = np.tile(ds.pixel_array.astype("<i2"), (HUGE_TILES, HUGE_TILES))
    nframes = max(1, size_bytes // base.nbytes)
    pixel_bytes = nframes * base.nbytes
    if pixel_bytes >= 1 << 32:
        raise ValueError(f"{pixel_bytes} bytes of native pixel data do not fit a 32-bit length")
    del ds[0x7FE00010:]  # pixel data and the trailing padding after it
    uids = Uids(seed)
    ds.StudyInstanceUID, ds.SeriesInstanceUID = uids("study"), uids("series")
    ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = uids("sop")
    ds.Rows, ds.Columns = base.shape
    ds.NumberOfFrames = nframes
    rng = np.random.default_rng(seed)
    noise = rng.integers(-8, 9, size=(16, *base.shape), dtype="<i2")
    target.parent.mkdir(parents=True, exist_ok=True)
    with open(target, "wb") as f:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            pydicom.dcmwrite(f, ds, enforce_file_format=True)
        f.write(struct.pack("<HH2sHL", 0x7FE0, 0x0010, b"OW", 0, pixel_bytes))
        for n in range(nframes):
            frame = np.roll(base, (7 * n, 13 * n), axis=(0, 1)) + noise[n % len(noise)]
            f.write(frame.tobytes())
    size = target.stat().st_size
    return Built(1, size, {"huge": {"files": 1, "bytes": size}})


def cached_landing(
    cache: Path, *, size_bytes: int = 0, small_files: int = 0, huge_bytes: int = 0, seed: int = 7
) -> tuple[Path, Built]:
    """The landing zone for these parameters, built once under ``cache`` and reused after.

    One of ``size_bytes`` (the mix), ``small_files`` or ``huge_bytes`` (one huge file).
    """
    version = f"seed{seed}-v{GENERATOR_VERSION}"
    if small_files:
        build = partial(build_small_files, count=small_files, seed=seed)
        return cached(cache / f"small-{small_files}-{version}", build)
    if huge_bytes:
        return cached(
            cache / f"huge-{huge_bytes}-{version}",
            lambda landing: build_huge_file(landing / "huge.dcm", huge_bytes, seed),
        )
    build = partial(build_landing, size_bytes=size_bytes, seed=seed)
    return cached(cache / f"mix-{size_bytes}-{version}", build)


def cached(root: Path, build: Callable[[Path], Built]) -> tuple[Path, Built]:
    """``root/landing`` as ``build`` writes it, built once: a manifest marks it complete."""
    landing = root / "landing"
    manifest = root / "manifest.json"
    if manifest.exists():
        doc = json.loads(manifest.read_text())
        return landing, Built(doc["files"], doc["bytes"], doc["by_kind"])
    if root.exists():  # an interrupted build
        shutil.rmtree(root)
    landing.mkdir(parents=True)
    built = build(landing)
    manifest.write_text(json.dumps(built.as_dict(), indent=1))
    return landing, built


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--size-gb", type=float, default=1.0)
    parser.add_argument("--small-files", type=int, default=0, help="build the small-file case")
    parser.add_argument("--seed", type=int, default=7)
    args = parser.parse_args(argv)
    if args.small_files:
        built = build_small_files(args.out, args.small_files, args.seed)
    else:
        built = build_landing(args.out, int(args.size_gb * 1e9), args.seed)
    print(json.dumps(built.as_dict()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
