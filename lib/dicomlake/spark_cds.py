"""Class-data sharing for the JVM of a local master: Spark's classes mapped from an archive.

A local job's JVM spends about 1.7 s of its start (and of its first job) loading, parsing and
verifying the same few thousand classes from Spark's jars. HotSpot can map them ready-made
from an archive (AppCDS). Java 17 writes one only when a JVM run with
``-XX:ArchiveClassesAtExit`` exits, so `build` runs a short local job for it::

    .venv/bin/python -m dicomlake.spark_cds        # dev/setup.sh does this

The archive's name carries what it depends on (a key of the java binary and Spark's jars) and
its size: after an upgrade the key changes, so no stale archive is used and none is made until
`build` runs again, and a cut file is never mapped. The JVM checks an archive's header and
class path as it maps it and runs without it if they do not fit.
"""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import os
import shutil
import subprocess
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
    return f"{JVM_OPTIONS} -XX:SharedArchiveFile={archive} {_QUIET}"


def build(config: Config) -> Path | None:
    """Make the archive for this java and Spark: its path, or None when it is there already.

    A short local job runs in this process's own JVM, which writes the archive as it exits;
    a new JVM must then start on it with sharing required (``-Xshare:on``) before it gets its
    final name.
    """
    from pyspark import SparkContext

    directory = cache_dir()
    key = archive_key(java_binary(), spark_jars())
    if key is None:
        raise RuntimeError("java not found: install Java 17 or set JAVA_HOME")
    if find_archive(directory, key) is not None:
        return None
    if SparkContext._gateway is not None or os.environ.get("PYSPARK_GATEWAY_PORT"):
        raise RuntimeError("the archive is made by a JVM of its own: run it in a new process")
    directory.mkdir(parents=True, exist_ok=True)
    partial = directory / f"spark-{key}.{os.getpid()}.tmp"
    try:
        code = _run_job(config, f"-XX:ArchiveClassesAtExit={partial}")
        if code != 0 or not partial.is_file():
            raise RuntimeError(f"the JVM exited with {code} and wrote no archive")
        check = subprocess.run(
            [sys.executable, "-m", "dicomlake.spark_cds", "--check", str(partial)],
            capture_output=True,
            text=True,
        )
        if check.returncode != 0:
            raise RuntimeError(f"a JVM cannot start on the new archive:\n{check.stderr[-2000:]}")
        archive = directory / f"spark-{key}-{partial.stat().st_size}.jsa"
        os.replace(partial, archive)
        return archive
    finally:
        partial.unlink(missing_ok=True)


def _run_job(config: Config, options: str) -> int:
    """Run a short local job with these JVM options in this process; the JVM's exit code."""
    from pyspark import SparkContext

    from dicomlake.ingest.session import spark_context

    spark = dataclasses.replace(
        config.spark,
        master="local[2]",
        conf={
            **config.spark.conf,
            "spark.driver.extraJavaOptions": f"{JVM_OPTIONS} {options} {_QUIET}",
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
        gateway.proc.stdin.close()  # the JVM exits when its stdin closes
    return gateway.proc.wait(timeout=600)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m dicomlake.spark_cds",
        description=f"Make the class-data sharing archive of the local Spark JVM in {cache_dir()}"
        " (nothing to do when it is there).",
    )
    parser.add_argument("--check", type=Path, help=argparse.SUPPRESS)  # build's own test
    args = parser.parse_args(argv)
    config = load_config(env={})
    if args.check:
        # a JVM that crashes on the archive leaves its report beside it, not in the working dir
        crash = args.check.with_name(args.check.name + ".crash-%p.log")
        return _run_job(
            config, f"-XX:SharedArchiveFile={args.check} -Xshare:on -XX:ErrorFile={crash}"
        )
    archive = build(config)
    if archive is not None:
        print(f"made {archive} ({archive.stat().st_size >> 20} MiB): local Spark starts faster")
    return 0


if __name__ == "__main__":
    sys.exit(main())
