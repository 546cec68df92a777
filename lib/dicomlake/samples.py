"""A sample landing zone made of the real DICOM files that PyPI packages ship.

Sources: pydicom's own test files, ``pydicom-data`` and ``deid-data`` (the ``samples`` extra).
The tree is shaped like a real landing zone: nested folders, some files without ``.dcm``, and
the packages' non-DICOM files (READMEs, zip archives) mixed in.
"""

from __future__ import annotations

import importlib.util
import shutil
from pathlib import Path

from dicomlake.errors import ConfigError

_PACKAGES = {
    "pydicom": ("pydicom", "data/test_files"),
    "pydicom-data": ("data_store", "data"),
    "deid-data": ("deid_data", "data"),
}


def sample_files() -> list[tuple[str, Path]]:
    """Every shipped sample file as (path in the landing zone, installed path), sorted."""
    out = []
    for label, (module, sub) in _PACKAGES.items():
        spec = importlib.util.find_spec(module)
        if spec is None or spec.origin is None:
            raise ConfigError(
                f"sample data needs the {label!r} package: pip install 'dicomlake[samples]'"
            )
        root = Path(spec.origin).parent / sub
        for path in sorted(root.rglob("*")):
            if path.is_file() and "__pycache__" not in path.parts and path.suffix != ".py":
                out.append((f"{label}/{path.relative_to(root).as_posix()}", path))
    return out


def build_sample_landing(dest: Path) -> int:
    """Copy the sample files into ``dest`` (every third loses its ``.dcm``); returns the count."""
    files = sample_files()
    for i, (name, src) in enumerate(files):
        if i % 3 == 2 and name.endswith(".dcm"):
            name = name[: -len(".dcm")]
        target = dest / name
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(src, target)
    return len(files)
