"""Class-data sharing for the JVM of a local master: Spark's classes mapped from an archive.

A local job's JVM spends about 1.7 s of its start (and of its first job) loading, parsing and
verifying the same few thousand classes from Spark's jars. HotSpot can map them ready-made
from an archive (AppCDS). Java 17 writes one only when a JVM run with
``-XX:ArchiveClassesAtExit`` exits, so `build` runs a short local job for it::

    .venv/bin/python -m dicomlake.spark_cds        # dev/setup.sh does this

The archive's name carries what it depends on (the java binary and Spark's jars): after an
upgrade the name changes, so no stale archive is used and none is made until `build` runs
again. The JVM checks the archive again as it maps it and runs without it if it does not fit.
"""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import os
import shutil
import sys
from pathlib import Path

import pyspark

from dicomlake.config import Config, load_config

JVM_OPTIONS = "-XX:TieredStopAtLevel=1"
"""Options of the JVM of a local master dicomlake starts itself (``spark.conf`` may override):
it is driver and executor for one short job whose work is in Python, so the client compiler
alone starts it ~0.8 s sooner, with ~4 CPU-seconds less."""
_QUIET = "-Xlog:cds*=off"  # the archive's own notices (classes it leaves out) are not news


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


def archive_path(java: Path | None, jars: Path, directory: Path) -> Path | None:
    """The archive for this java and these jars; None when there is no java to key it on."""
    if java is None or not jars.is_dir():
        return None
    digest = hashlib.sha256()
    stat = java.stat()
    digest.update(f"{java}\0{stat.st_size}\0{stat.st_mtime_ns}\0".encode())
    for jar in sorted(jars.iterdir()):
        digest.update(f"{jar.name}\0{jar.stat().st_size}\0".encode())
    return directory / f"spark-{digest.hexdigest()[:16]}.jsa"


def local_jvm_options() -> str:
    """`JVM_OPTIONS`, mapping the archive when `build` has made it."""
    archive = archive_path(java_binary(), spark_jars(), cache_dir())
    if archive is None or not archive.is_file():
        return JVM_OPTIONS
    return f"{JVM_OPTIONS} -XX:SharedArchiveFile={archive} {_QUIET}"


def build(config: Config) -> Path | None:
    """Make the archive for this java and Spark by running a short local job: its path, or
    None when it is there already.

    The JVM writes the archive as it exits, so the job runs in this process's own JVM, which
    is stopped and waited for; the archive appears under its final name only once complete.
    """
    from pyspark import SparkContext

    from dicomlake.ingest.session import spark_context

    directory = cache_dir()
    archive = archive_path(java_binary(), spark_jars(), directory)
    if archive is None:
        raise RuntimeError("java not found: install Java 17 or set JAVA_HOME")
    if archive.is_file():
        return None
    if SparkContext._gateway is not None or os.environ.get("PYSPARK_GATEWAY_PORT"):
        raise RuntimeError("the archive is made by a JVM of its own: run it in a new process")
    directory.mkdir(parents=True, exist_ok=True)
    partial = archive.with_name(f"{archive.name}.{os.getpid()}.tmp")
    dump = f"{JVM_OPTIONS} -XX:ArchiveClassesAtExit={partial} {_QUIET}"
    spark = dataclasses.replace(
        config.spark,
        master="local[2]",
        conf={
            **config.spark.conf,
            "spark.driver.extraJavaOptions": dump,
            "spark.ui.showConsoleProgress": "false",
        },
    )
    sc = spark_context(dataclasses.replace(config, spark=spark), submitted=False)
    try:
        # what a job loads: a broadcast, Python tasks, results collected
        seen = sc.broadcast(frozenset({"x"}))
        sc.parallelize(range(4), 2).mapPartitions(lambda p: [sum(p), len(seen.value)]).collect()
    finally:
        sc.stop()
        gateway = SparkContext._gateway
        gateway.shutdown()
        gateway.proc.stdin.close()  # the JVM exits when its stdin closes, writing the archive
        code = gateway.proc.wait(timeout=600)
    if code != 0 or not partial.is_file():
        partial.unlink(missing_ok=True)
        raise RuntimeError(f"the JVM exited with {code} and wrote no archive")
    os.replace(partial, archive)
    return archive


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m dicomlake.spark_cds",
        description=f"Make the class-data sharing archive of the local Spark JVM in {cache_dir()}"
        " (nothing to do when it is there).",
    )
    parser.parse_args(argv)
    archive = build(load_config(env={}))
    if archive is not None:
        print(f"made {archive} ({archive.stat().st_size >> 20} MiB): local Spark starts faster")
    return 0


if __name__ == "__main__":
    sys.exit(main())
