#!/usr/bin/env python3
"""Package the project for shipping to Spark executors, which never see the source tree.

    dev/package.py [--dist DIR]

Writes into DIR (default ``<repo>/dist``):

- ``dicomlake-<version>-py3-none-any.whl``: the wheel, for ``pip install`` into an executor
  environment (or a packed venv given to ``--archives``);
- ``dicomlake.zip``: the ``dicomlake`` package alone, for ``spark-submit --py-files``.

The wheel is built by pip from a copy of ``pyproject.toml`` and ``lib/``, so the source tree
gets no ``build/`` or ``*.egg-info`` litter. Prints the two paths, one a line.
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

import _daemons as d

PACKAGE = d.REPO / "lib" / "dicomlake"


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
    return 0


if __name__ == "__main__":
    sys.exit(main())
