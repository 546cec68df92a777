"""The worker daemon drops Spark's pyspark.zip from the path only for the installed version, and
Spark's core jar always, with the importers Python made for them; its preload warms the code
the tasks read with without ever stopping the daemon from starting."""

from __future__ import annotations

import os
import subprocess
import sys
import zipfile
from importlib import metadata
from pathlib import Path

from dicomlake.spark.daemon import prefer_installed, without_spark_core, zip_version


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


def test_spark_core_jars_are_dropped_and_nothing_else() -> None:
    path = [
        "/spark/jars/spark-core_2.13-4.2.0.jar",
        "/spark/jars/spark-core_2.12-3.5.1.jar",
        "/spark/jars/spark-sql_2.13-4.2.0.jar",  # not the one Spark adds: kept
        "/work/spark-core_2.13-4.2.0.jar/pkg",  # a directory inside one: kept
        "/venv/site-packages",
    ]
    assert without_spark_core(path) == path[2:]


def test_settled_path_and_importers_leave_out_what_was_dropped(tmp_path: Path) -> None:
    installed = metadata.version("pyspark")
    shipped = _zip(tmp_path, "lib/pyspark.zip", f"__version__ = {installed!r}\n")
    core = _zip(tmp_path, f"jars/spark-core_2.13-{installed}.jar", None)
    kept = _zip(tmp_path, "lib/py4j-0.10.9.9-src.zip", None)
    out = _python(
        "import sys, zipimport\n"
        "from dicomlake.spark.daemon import settle_path\n"  # made importers for the zips
        "before = {k for k, v in sys.path_importer_cache.items()"
        " if isinstance(v, zipimport.zipimporter)}\n"
        "settle_path()\n"
        "after = {k for k, v in sys.path_importer_cache.items()"
        " if isinstance(v, zipimport.zipimporter)}\n"
        "print(sorted(before)); print(sorted(after))\n"
        f"print([p for p in sys.path if p.startswith({str(tmp_path)!r})])\n",
        PYTHONPATH=os.pathsep.join([shipped, core, kept]),
    )
    before, after, path = out.stdout.splitlines()
    assert before == str(sorted([shipped, core, kept])), out
    assert after == str([kept]) and path == str([kept]), out


def _python(code: str, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
        env={**os.environ, **env},
    )


def test_preload_imports_and_warms_what_the_tasks_read_with() -> None:
    out = _python(
        "import sys\n"
        "from dicomlake.spark.daemon import preload\n"
        "preload()\n"
        "from dicomlake.dicom.native import core\n"
        "print(*(m in sys.modules for m in ('dicomlake.dicom.header', 'imagecodecs', 'pandas')),"
        " core.cache_info().currsize)\n"
        "import pyarrow as pa\n"
        "pa.array([1]), pa.scalar(1), pa.Table.from_pylist([{'a': 1}])\n"
        "print('pandas' in sys.modules)\n"
        "print(type(pa.table({'a': [1]}).to_pandas()).__name__)  # pandas where it is asked for\n"
    )
    assert out.stdout.split() == ["True", "True", "False", "1", "False", "DataFrame"], out


def test_after_the_preload_a_task_imports_only_the_jobs_own_modules() -> None:
    """A worker unpickling an ingest task (which refers to dicomlake.ingest.worker) then
    imports dicomlake.ingest's modules and the standard library's, nothing of the layers below
    or of the libraries: the daemon imported those before it forked."""
    out = _python(
        "import sys\n"
        "from pyspark.daemon import manager\n"
        "from dicomlake.spark.daemon import preload\n"
        "preload()\n"
        "before = set(sys.modules)\n"
        "import dicomlake.ingest.worker\n"
        "new = set(sys.modules) - before\n"
        "print(sorted(m for m in new if not m.startswith('dicomlake.ingest')"
        " and m.partition('.')[0] not in sys.stdlib_module_names))\n"
    )
    assert out.stdout.strip() == "[]", out


def test_a_failed_preload_is_reported_and_the_daemon_goes_on() -> None:
    out = _python(
        "import sys\n"
        "sys.modules['dicomlake.dicom.header'] = None  # importing it raises\n"
        "from dicomlake.spark.daemon import preload\n"
        "preload()\n"
        "print('went on')\n"
    )
    assert out.stdout.strip() == "went on"
    assert "preload failed: ModuleNotFoundError" in out.stderr, out.stderr
