#!/usr/bin/env python3
"""Package the project for shipping to Spark executors, which never see the source tree.

    dev/package.py [--dist DIR]

Writes into DIR (default ``<repo>/dist``):

- ``dicomlake-<version>-py3-none-any.whl``: the wheel, for ``pip install`` into an executor
  environment (or a packed venv given to ``--archives``);
- ``dicomlake.zip``: the ``dicomlake`` package alone, for ``spark-submit --py-files``;
- ``dicomlake_native-<version>-cp311-abi3-<platform>.whl``: the compiled header path
  (``native/``, built by maturin, for any CPython >= 3.11 on this platform). An extension module
  cannot be imported from a zip: install this wheel into the executors' environment (or the
  packed venv given to ``--archives``). Executors without it read every header the slower
  pydicom way; the ingest summary counts the headers each way took.

The wheel is built by pip from a copy of ``pyproject.toml`` and ``lib/``, so the source tree
gets no ``build/`` or ``*.egg-info`` litter. Prints the paths, one a line (the native wheel
last, when it was built).
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

import _daemons as d

PACKAGE = d.REPO / "lib" / "dicomlake"
NATIVE = d.REPO / "native"


def build_zip(dist: Path) -> Path:
    """``dicomlake.zip`` with the package's files (sources and data, no bytecode)."""
    out = dist / "dicomlake.zip"
    tmp = out.with_suffix(".zip.partial")
    with zipfile.ZipFile(tmp, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        for f in sorted(PACKAGE.rglob("*")):
            if f.is_file() and "__pycache__" not in f.parts and f.suffix != ".pyc":
                zf.write(f, f.relative_to(PACKAGE.parent).as_posix())
    tmp.replace(out)
    return out


def build_wheel(dist: Path, python: str) -> Path:
    """Build the wheel with pip (an isolated build env with the pyproject's setuptools)."""
    with tempfile.TemporaryDirectory(prefix="dicomlake-build-") as tmp:
        src = Path(tmp) / "src"
        src.mkdir()
        shutil.copy2(d.REPO / "pyproject.toml", src)
        for extra in ("README.md", "LICENSE"):
            if (d.REPO / extra).exists():
                shutil.copy2(d.REPO / extra, src)
        shutil.copytree(
            PACKAGE,
            src / "lib" / "dicomlake",
            ignore=shutil.ignore_patterns("__pycache__", "*.pyc"),
        )
        wheels = Path(tmp) / "wheels"
        cmd = [python, "-m", "pip", "wheel", "--quiet", "--no-deps", "-w", str(wheels), str(src)]
        if subprocess.run(cmd).returncode != 0:
            d.fail("building the wheel failed: " + " ".join(cmd))
        (wheel,) = wheels.glob("dicomlake-*.whl")
        for old in dist.glob("dicomlake-*.whl"):
            old.unlink()
        return Path(shutil.copy2(wheel, dist))


def build_native_wheel(dist: Path, python: str) -> Path | None:
    """Build the ``dicomlake_native`` wheel with maturin (a release build of ``native/``);
    None, with a note, where maturin or Rust is missing (executors then read headers with
    pydicom)."""
    cargo = shutil.which("cargo") or shutil.which("cargo", path=str(Path.home() / ".cargo/bin"))
    has_maturin = subprocess.run([python, "-m", "maturin", "--version"], capture_output=True)
    if cargo is None or has_maturin.returncode != 0:
        print("note: no maturin or cargo: the native wheel is not built", file=sys.stderr)
        return None
    env = {**os.environ, "PATH": f"{Path(cargo).parent}{os.pathsep}{os.environ.get('PATH', '')}"}
    with tempfile.TemporaryDirectory(prefix="dicomlake-native-") as tmp:
        cmd = [python, "-m", "maturin", "build", "--release", "--quiet"]
        cmd += ["-m", str(NATIVE / "Cargo.toml"), "-i", python, "-o", tmp]
        if subprocess.run(cmd, env=env).returncode != 0:
            d.fail("building the native wheel failed: " + " ".join(cmd))
        (wheel,) = Path(tmp).glob("dicomlake_native-*.whl")
        for old in dist.glob("dicomlake_native-*.whl"):
            old.unlink()
        return Path(shutil.copy2(wheel, dist))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--dist", type=Path, default=d.REPO / "dist", help="output directory (default: <repo>/dist)"
    )
    parser.add_argument(
        "--python",
        default=sys.executable,
        help="the Python whose pip builds the wheel (default: this one)",
    )
    args = parser.parse_args(argv)
    args.dist.mkdir(parents=True, exist_ok=True)
    print(build_wheel(args.dist, args.python))
    print(build_zip(args.dist))
    native = build_native_wheel(args.dist, args.python)
    if native is not None:
        print(native)
    return 0


if __name__ == "__main__":
    sys.exit(main())
