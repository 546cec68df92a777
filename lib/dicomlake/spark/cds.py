"""Making the class-data sharing archive of a local Spark JVM (see `dicomlake.spark.jvm`).

Java 17 writes an archive only when a JVM run with ``-XX:ArchiveClassesAtExit`` exits, so
`build` runs a short local job for it::

    .venv/bin/python -m dicomlake.spark.cds        # dev/setup.sh does this

No archive is made until `build` runs again after a Java or Spark upgrade.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import subprocess
import sys
from pathlib import Path

from pyspark import SparkContext

from dicomlake.config import Config, load_config
from dicomlake.spark.context import spark_context
from dicomlake.spark.jvm import (
    JVM_OPTIONS,
    QUIET_ARCHIVE,
    archive_key,
    cache_dir,
    find_archive,
    java_binary,
    spark_jars,
)


def build(config: Config) -> Path | None:
    """Make the archive for this java and Spark: its path, or None when it is there already.

    A short local job runs in this process's own JVM, which writes the archive as it exits;
    a new JVM must then start on it with sharing required (``-Xshare:on``) before it gets its
    final name.
    """
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
            [sys.executable, "-m", "dicomlake.spark.cds", "--check", str(partial)],
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
    spark = dataclasses.replace(
        config.spark,
        master="local[2]",
        conf={
            **config.spark.conf,
            "spark.driver.extraJavaOptions": f"{JVM_OPTIONS} {options} {QUIET_ARCHIVE}",
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
        assert gateway is not None  # the context above started it
        gateway.shutdown()
        gateway.proc.stdin.close()  # the JVM exits when its stdin closes
    return int(gateway.proc.wait(timeout=600))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m dicomlake.spark.cds",
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
