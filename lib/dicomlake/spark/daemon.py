"""Spark's Python worker daemon: the executor environment's own pyspark, and workers forked warm.

Spark puts its ``pyspark.zip`` first on the Python workers' path. Python never caches bytecode
for modules imported from a zip, so every worker process compiles pyspark's modules again:
about 0.7 s of CPU per worker and a second of wall time before a job's first task starts.
When the interpreter has the same pyspark version installed (a pip-installed pyspark, or an
executor environment built for the job), this daemon drops the zip from the path so workers
import the installed, precompiled copy; otherwise it changes nothing.

Spark also puts the jar of its own classes on that path (from when pyspark shipped inside it):
spark-core holds no Python, but its ~6,000 entries are read again by every worker when the
task's set-up adds its files directory to the path (``importlib.invalidate_caches``), 50 ms
each. The daemon drops it too, and forgets the importers of what it dropped (`settle_path`).

It then imports and warms what dicomlake's Python tasks read and write with (`preload`),
pandas left out (`_pandas_hidden`), and freezes the collector's view of it (`gc.freeze`), so
that each forked worker starts ready and collects only its own garbage.

Used through ``spark.python.daemon.module`` (see `dicomlake.spark.context`); only the standard
library at the top, since nothing may import pyspark before the path is settled.
"""

from __future__ import annotations

import contextlib
import gc
import importlib.abc
import os
import re
import sys
import zipfile
from collections.abc import Iterator
from importlib import metadata

_VERSION = re.compile(r"""__version__\s*(?::\s*str\s*)?=\s*["']([^"']+)["']""")
_SPARK_CORE = re.compile(r"spark-core_[0-9.]+-.+\.jar")


def shipped_zips(path: list[str]) -> list[str]:
    """The entries of `path` that are a pyspark.zip."""
    return [p for p in path if _name(p) == "pyspark.zip"]


def zip_version(archive: str) -> str | None:
    """The pyspark version inside a pyspark.zip; None if it cannot be read."""
    try:
        with zipfile.ZipFile(archive) as z:
            match = _VERSION.search(z.read("pyspark/version.py").decode("utf-8"))
    except (OSError, KeyError, zipfile.BadZipFile, UnicodeDecodeError):
        return None
    return match.group(1) if match else None


def prefer_installed(path: list[str], installed: str | None) -> list[str]:
    """`path` without its pyspark.zip entries when they hold the `installed` version."""
    zips = shipped_zips(path)
    if not zips or installed is None or any(zip_version(z) != installed for z in zips):
        return path
    return [p for p in path if p not in zips]


def without_spark_core(path: list[str]) -> list[str]:
    """`path` without the spark-core jars Spark adds to it."""
    return [p for p in path if not _SPARK_CORE.fullmatch(_name(p))]


def settle_path() -> None:
    """Drop what `prefer_installed` and `without_spark_core` leave out of ``sys.path``, and
    the importers Python made for those entries while it started (each one's directory is
    read again whenever a worker invalidates the import caches)."""
    kept = without_spark_core(prefer_installed(sys.path, _installed_version()))
    dropped = [p for p in sys.path if p not in kept]
    sys.path[:] = kept
    for entry in list(sys.path_importer_cache):
        if any(entry == p or entry.startswith((p + "/", p + os.sep)) for p in dropped):
            del sys.path_importer_cache[entry]


def _name(entry: str) -> str:
    return entry.replace("\\", "/").rsplit("/", 1)[-1]


def _installed_version() -> str | None:
    # Looked up in the path's directories alone: importlib.metadata.version would also read
    # the directory of every zip and jar on it (60 ms with spark-core's)
    directories = [p for p in sys.path if not os.path.isfile(p)]
    found = next(iter(metadata.distributions(name="pyspark", path=directories)), None)
    return None if found is None else found.version


class _NoPandas(importlib.abc.MetaPathFinder):
    def find_spec(self, name: str, path: object = None, target: object = None) -> None:
        if name.partition(".")[0] == "pandas":
            raise ModuleNotFoundError(f"No module named {name!r} (hidden by {__name__})")


@contextlib.contextmanager
def _pandas_hidden() -> Iterator[None]:
    """pandas cannot be imported meanwhile.

    pyarrow imports pandas (0.2 s, the daemon's largest import) the first time it converts a
    Python list, only to ask whether the list is a pandas object: no task hands it one. Told
    then that there is no pandas, it does not ask again; where pandas is really wanted
    (``to_pandas``) it imports it then, as it would have.
    """
    finder = _NoPandas()
    sys.meta_path.insert(0, finder)
    try:
        yield
    finally:
        sys.meta_path.remove(finder)


def preload() -> None:
    """Import and warm what dicomlake's Python tasks read and write with (the header path, the
    pixel codecs and ciphers, Arrow, the lake's writers) once, before the daemon forks its workers:
    each of them then starts with it in memory instead of paying ~0.7 s of imports and first
    calls. A failure here costs only that: the worker importing the module again reports it
    in its task."""
    try:
        # What the tasks write with: the lake's stages, tables, packs and quarantine copies.
        # The jobs' own modules (dicomlake.ingest, a layer above) are left to the workers:
        # 10 ms each, once these are in.
        import dicomlake.lake.commit  # noqa: F401
        import dicomlake.lake.quarantine  # noqa: F401
        import dicomlake.lake.restricted  # noqa: F401
        import dicomlake.pixels.pack  # noqa: F401 - codecs and ciphers
        from dicomlake.dicom.header import warm_up

        with _pandas_hidden():  # around warm_up's first Arrow conversion, not the imports
            warm_up()
    except Exception as exc:  # noqa: BLE001 - reported by the task that imports it again
        print(f"dicomlake.spark.daemon: preload failed: {exc!r}", file=sys.stderr)


if __name__ == "__main__":
    settle_path()
    from pyspark.daemon import manager

    preload()
    # What the daemon holds now (~70,000 tracked objects) lives as long as its workers: out
    # of the collector's sight, their full collections skip it (12 ms each) and its pages
    # stay shared
    gc.freeze()
    manager()
