#!/usr/bin/env python3
"""Delta Lake's Spark connector jars, fetched once from Maven Central into .cache/delta-<version>.

    python3 dev/delta_jars.py     # prints the jars, comma-separated, for spark.jars

Spark reads and writes the lake's tables with them (``format("delta")``, ``CREATE TABLE ...
USING DELTA``) once the session also has
``spark.sql.extensions=io.delta.sql.DeltaSparkSessionExtension`` and
``spark.sql.catalog.spark_catalog=org.apache.spark.sql.delta.catalog.DeltaCatalog``. The
connector is built per Spark line: ``delta-spark_4.2_2.13`` is for pyspark 4.2. Needs Maven 3.
Stdlib only.

Environment: ``DICOMLAKE_DELTA_VERSION`` [4.4.0].
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
VERSION = os.environ.get("DICOMLAKE_DELTA_VERSION") or "4.4.0"
ARTIFACTS = (f"io.delta:delta-spark_4.2_2.13:{VERSION}", f"io.delta:delta-storage:{VERSION}")


def jars(cache: Path = REPO / ".cache" / f"delta-{VERSION}") -> list[Path]:
    """The connector's jars, fetched on first use (a partial download never becomes the cache)."""
    wanted = [cache / (a.split(":")[1] + f"-{VERSION}.jar") for a in ARTIFACTS]
    if all(p.exists() for p in wanted):
        return wanted
    if shutil.which("mvn") is None:
        raise SystemExit("mvn not found: install Maven 3 (it fetches Delta's jars)")
    staging = cache.with_name(f"{cache.name}.partial-{os.getpid()}")
    for artifact in ARTIFACTS:
        cmd = ["mvn", "-B", "-q", "-Dstyle.color=never", "dependency:copy"]
        cmd += [f"-Dartifact={artifact}", f"-DoutputDirectory={staging}"]
        if subprocess.run(cmd, stdout=sys.stderr).returncode != 0:
            raise SystemExit("Maven could not fetch " + artifact + ": " + " ".join(cmd))
    if not all(p.exists() for p in wanted):  # another process may have finished first
        shutil.rmtree(cache, ignore_errors=True)
        staging.rename(cache)
    shutil.rmtree(staging, ignore_errors=True)
    return wanted


if __name__ == "__main__":
    print(",".join(str(p) for p in jars()))
