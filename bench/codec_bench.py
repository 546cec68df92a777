"""Lossless codec benchmark on the real corpus's native-pixel frames, one core.

    .venv/bin/python bench/codec_bench.py [--repeat N] [--codecs jpegxl,htj2k,...]

Frames come from pydicom's test files, pydicom-data and deid-data (little-endian native
transfer syntaxes only). Prints ratio, encode and decode MB/s (raw bytes per second) per
image class and codec, the codecs "auto" picked, and last one JSON line with the figures.
Encode times are without verification; "auto+verify" is what ingest does.
"""

from __future__ import annotations

import argparse
import collections
import glob
import json
import os
import sys
import time
import warnings
from collections.abc import Iterator
from dataclasses import dataclass

import deid_data
import pydicom
import pydicom.data

from dicomlake.dicom.split import FrameSpec
from dicomlake.pixels import codecs

NATIVE = {"1.2.840.10008.1.2", "1.2.840.10008.1.2.1", "1.2.840.10008.1.2.1.99"}
CLASSES = ("CT", "MR", "CR/DX", "US/RGB", "other")


@dataclass(frozen=True)
class Frame:
    cls: str
    raw: bytes
    spec: FrameSpec


def corpus_roots() -> list[str]:
    """Directories of the three packaged DICOM corpora."""
    pydicom_data = os.path.join(os.path.dirname(os.path.dirname(deid_data.__file__)), "data_store")
    return [
        os.path.dirname(pydicom.data.__file__),
        os.path.join(pydicom_data, "data"),
        os.path.dirname(deid_data.__file__),
    ]


def image_class(ds: pydicom.Dataset) -> str:
    modality = str(ds.get("Modality", ""))
    if modality in ("CT", "MR"):
        return modality
    if modality in ("CR", "DX"):
        return "CR/DX"
    if modality == "US" or int(ds.get("SamplesPerPixel", 1)) == 3:
        return "US/RGB"
    return "other"


def load_frames() -> Iterator[Frame]:
    """Every native little-endian frame of the corpus (1-bit data: one chunk per instance)."""
    for root in corpus_roots():
        for path in sorted(glob.glob(os.path.join(root, "**", "*"), recursive=True)):
            if not os.path.isfile(path):
                continue
            try:
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")
                    ds = pydicom.dcmread(path)
                    if str(ds.file_meta.get("TransferSyntaxUID", "")) not in NATIVE:
                        continue
                    pixels = ds.PixelData
                    spec = FrameSpec(
                        int(ds.Rows),
                        int(ds.Columns),
                        int(ds.get("SamplesPerPixel", 1)),
                        int(ds.BitsAllocated),
                        int(ds.BitsStored),
                        int(ds.PixelRepresentation),
                        int(ds.get("PlanarConfiguration", 0)),
                        str(ds.PhotometricInterpretation),
                    )
                    frames = int(ds.get("NumberOfFrames", 1) or 1)
            except Exception:  # noqa: BLE001 - a corpus file without usable pixels is skipped
                continue
            cls = image_class(ds)
            if spec.bits_allocated == 1:
                packed = (spec.rows * spec.columns * frames + 7) // 8
                yield Frame(cls, bytes(pixels[:packed]), spec)
                continue
            subsampled = spec.photometric_interpretation.endswith("_422")
            samples = 2 if subsampled else spec.samples_per_pixel
            size = spec.rows * spec.columns * samples * spec.bits_allocated // 8
            for n in range(frames):
                raw = bytes(pixels[n * size : (n + 1) * size])
                if len(raw) == size:
                    yield Frame(cls, raw, spec)


def measure(frames: list[Frame], codec: str, repeat: int, verify: bool) -> dict[str, dict]:
    """Per class: raw and encoded bytes, best-of-`repeat` encode/decode seconds, codec ids."""
    out: dict[str, dict] = {}
    for cls in (*CLASSES, "all"):
        members = [f for f in frames if cls in ("all", f.cls)]
        if not members:
            continue
        best_enc = best_dec = float("inf")
        for _ in range(repeat):
            t0 = time.perf_counter()
            encoded = [codecs.encode(f.raw, f.spec, codec=codec, verify=verify) for f in members]
            t1 = time.perf_counter()
            for f, (cid, data) in zip(members, encoded, strict=True):
                if codecs.decode(cid, data, f.spec, len(f.raw)) != f.raw:
                    sys.exit(f"{codec}: a {cls} frame did not round-trip")
            t2 = time.perf_counter()
            best_enc, best_dec = min(best_enc, t1 - t0), min(best_dec, t2 - t1)
        raw = sum(len(f.raw) for f in members)
        out[cls] = {
            "frames": len(members),
            "raw_mb": round(raw / 1e6, 2),
            "ratio": round(raw / sum(len(d) for _, d in encoded), 2),
            "encode_mbs": round(raw / 1e6 / best_enc),
            "decode_mbs": round(raw / 1e6 / best_dec),
            "picked": dict(collections.Counter(cid for cid, _ in encoded).most_common()),
        }
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=1, help="best of N timings (default 1)")
    parser.add_argument(
        "--codecs",
        default="zstd,delta-shuffle-zstd,htj2k,jpegls,jpegxl,jpeg2k,auto",
        help="comma-separated codec ids; 'auto+verify' adds verification",
    )
    args = parser.parse_args(argv)
    frames = list(load_frames())
    print(f"{len(frames)} native frames, {sum(len(f.raw) for f in frames) / 1e6:.1f} MB raw")
    results = {}
    for name in (*args.codecs.split(","), "auto+verify"):
        codec, verify = name.removesuffix("+verify"), name.endswith("+verify")
        results[name] = measure(frames, codec, args.repeat, verify)
    print(f"\n{'class':8} {'codec':20} {'MB':>7} {'ratio':>7} {'enc MB/s':>9} {'dec MB/s':>9}")
    for cls in (*CLASSES, "all"):
        for name, per_class in results.items():
            if cls in per_class:
                r = per_class[cls]
                print(
                    f"{cls:8} {name:20} {r['raw_mb']:7.1f} {r['ratio']:7.2f} "
                    f"{r['encode_mbs']:9d} {r['decode_mbs']:9d}"
                )
        if cls in results.get("auto", {}):
            print(f"{'':8} auto picked: {results['auto'][cls]['picked']}")
        print()
    print(json.dumps(results, separators=(",", ":")))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
