"""The JVM of a local master dicomlake starts itself: its options, and the class-data sharing
archive it maps when `dicomlake.spark.cds` has made one.

A local job's JVM spends about 1.7 s of its start (and of its first job) loading, parsing and
verifying the same few thousand classes from Spark's jars. HotSpot can map them ready-made
from an archive (AppCDS). The archive's name carries what it depends on (a key of the java
binary and Spark's jars) and its size: after an upgrade the key changes, so no stale archive
is used, and a cut file is never mapped. The JVM checks an archive's header and class path as
it maps it and runs without it if they do not fit.
"""

from __future__ import annotations

import hashlib
import os
import shutil
from pathlib import Path

import pyspark

JVM_OPTIONS = "-XX:TieredStopAtLevel=1"
"""Options of the JVM of a local master dicomlake starts itself (``spark.conf`` may override):
it is driver and executor for one short job whose work is in Python, so the client compiler
alone starts it ~0.8 s sooner, with ~4 CPU-seconds less."""
QUIET_ARCHIVE = "-Xlog:cds*=off"
"""Silences the archive's own notices (classes it leaves out): they are not news."""


def cache_dir() -> Path:
    """Where archives are kept: ``$XDG_CACHE_HOME/dicomlake`` (default ``~/.cache``)."""
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "dicomlake"


def java_binary() -> Path | None:
    """The java that Spark's launcher runs: ``$JAVA_HOME/bin/java``, else java on the PATH."""
    home = os.environ.get("JAVA_HOME")
    found = os.path.join(home, "bin", "java") if home else shutil.which("java")
    return Path(found).resolve() if found and os.path.exists(found) else None


def spark_jars() -> Path:
    """The jars of the Spark that pyspark starts (its own, unless SPARK_HOME says otherwise)."""
    home = os.environ.get("SPARK_HOME") or os.path.dirname(pyspark.__file__)
    return Path(home) / "jars"


def archive_key(java: Path | None, jars: Path) -> str | None:
    """What an archive is made for: this java binary and these jars; None without a java."""
    if java is None or not jars.is_dir():
        return None
    digest = hashlib.sha256()
    stat = java.stat()
    digest.update(f"{java}\0{stat.st_size}\0{stat.st_mtime_ns}\0".encode())
    for jar in sorted(jars.iterdir()):
        digest.update(f"{jar.name}\0{jar.stat().st_size}\0".encode())
    return digest.hexdigest()[:16]


def find_archive(directory: Path, key: str) -> Path | None:
    """The complete archive for ``key``: its name ends in its size in bytes.

    HotSpot maps an archive without checking its length, and a cut one crashes the JVM
    (SIGBUS) at every start; a file whose size is not the one it was made with is not used.
    """
    for path in directory.glob(f"spark-{key}-*.jsa"):
        if path.name == f"spark-{key}-{path.stat().st_size}.jsa":
            return path
    return None


def local_jvm_options() -> str:
    """`JVM_OPTIONS`, mapping the archive when `build` has made it."""
    key = archive_key(java_binary(), spark_jars())
    archive = None if key is None else find_archive(cache_dir(), key)
    if archive is None:
        return JVM_OPTIONS
    return f"{JVM_OPTIONS} -XX:SharedArchiveFile={archive} {QUIET_ARCHIVE}"
