"""The worker daemon drops Spark's pyspark.zip from the path only for the installed version."""

from __future__ import annotations

import zipfile
from pathlib import Path

from dicomlake.spark.daemon import prefer_installed, zip_version


def _zip(tmp_path: Path, name: str, version_py: str | None) -> str:
    path = tmp_path / name
    path.parent.mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(path, "w") as z:
        z.writestr("pyspark/__init__.py", "")
        if version_py is not None:
            z.writestr("pyspark/version.py", version_py)
    return str(path)


def test_same_version_drops_the_zip(tmp_path: Path) -> None:
    shipped = _zip(tmp_path, "spark/python/lib/pyspark.zip", "__version__: str = '4.3.0'\n")
    py4j = str(tmp_path / "py4j-0.10.9.9-src.zip")
    path = ["/work", shipped, py4j, "/venv/site-packages"]
    assert prefer_installed(path, "4.3.0") == ["/work", py4j, "/venv/site-packages"]


def test_other_or_unknown_version_keeps_the_path(tmp_path: Path) -> None:
    shipped = _zip(tmp_path, "a/pyspark.zip", '__version__ = "4.2.1"\n')
    unreadable = _zip(tmp_path, "b/pyspark.zip", None)
    for path, installed in (
        (["/w", shipped, "/site"], "4.3.0"),  # another Spark's zip: its workers need it
        (["/w", shipped, "/site"], None),  # nothing installed
        (["/w", unreadable, "/site"], "4.3.0"),  # version not readable
        (["/w", "/missing/pyspark.zip", "/site"], "4.3.0"),
        (["/w", "/site"], "4.3.0"),  # no zip at all
    ):
        assert prefer_installed(path, installed) == path


def test_zip_version_reads_both_spellings(tmp_path: Path) -> None:
    assert zip_version(_zip(tmp_path, "a/pyspark.zip", "__version__: str = '4.3.0'\n")) == "4.3.0"
    assert zip_version(_zip(tmp_path, "b/pyspark.zip", '__version__ = "3.5.1"\n')) == "3.5.1"
    assert zip_version(str(tmp_path / "none.zip")) is None
