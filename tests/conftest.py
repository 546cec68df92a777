"""Fixtures shared by every test: one local Spark context per test session, keyrings."""

from __future__ import annotations

import dataclasses
import os
import subprocess
import sys
from pathlib import Path

import pytest

from dicomlake.config import Config, load_config

QUICK_LOCK = {"DICOMLAKE_LOCK_STALE_SECONDS": "2", "DICOMLAKE_LOCK_HEARTBEAT_SECONDS": "0.5"}
"""A lock that goes stale 2 s after its holder dies, for tests that kill a writer."""


@pytest.fixture(scope="session")
def config() -> Config:
    """Built-in defaults only: tests never read a person's own config or DICOMLAKE_* variables."""
    return load_config(env={})


@pytest.fixture(scope="session")
def quick_lock_config() -> Config:
    """The defaults with `QUICK_LOCK`: the next writer takes a killed writer's lock over."""
    return load_config(env=QUICK_LOCK)


REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="session")
def kms_jar() -> Path:
    """The Java KMS client for Spark's Parquet Modular Encryption (built once, cached)."""
    proc = subprocess.run(
        [sys.executable, str(REPO / "dev" / "build_kms_jar.py")],
        capture_output=True,
        text=True,
        timeout=300,
    )
    if proc.returncode != 0:
        pytest.fail(f"dev/build_kms_jar.py failed:\n{proc.stdout}{proc.stderr}", pytrace=False)
    return Path(proc.stdout.strip())


@pytest.fixture(scope="session")
def delta_spark(delta_jars: str) -> dict[str, str]:
    """The Spark properties of a session that reads and writes Delta tables."""
    return {"spark.jars": delta_jars, **DELTA_SPARK_CONF}


@pytest.fixture(scope="session")
def delta_jars() -> str:
    """Delta Lake's Spark connector (dev/delta_jars.py: fetched once, cached), comma-separated."""
    proc = subprocess.run(
        [sys.executable, str(REPO / "dev" / "delta_jars.py")],
        capture_output=True,
        text=True,
        timeout=600,
    )
    if proc.returncode != 0:
        pytest.fail(f"dev/delta_jars.py failed:\n{proc.stdout}{proc.stderr}", pytrace=False)
    return proc.stdout.strip()


# What a Spark session needs besides the jars to read and write Delta tables.
DELTA_SPARK_CONF = {
    "spark.sql.extensions": "io.delta.sql.DeltaSparkSessionExtension",
    "spark.sql.catalog.spark_catalog": "org.apache.spark.sql.delta.catalog.DeltaCatalog",
}


@pytest.fixture(scope="session")
def sc(kms_jar, delta_jars):
    """The Spark context dicomlake's jobs run on, local[2], one for the whole test session."""
    from dicomlake.spark.context import spark_context

    os.environ["PYSPARK_PYTHON"] = sys.executable
    conf = {
        "spark.ui.enabled": "false",
        "spark.ui.showConsoleProgress": "false",
        # The KMS jar lets the one session read the restricted table (tests/integration); the
        # Delta jars let it read the lake's tables as analysts do.
        "spark.jars": f"{kms_jar},{delta_jars}",
        **DELTA_SPARK_CONF,
    }
    cfg = load_config(env={"DICOMLAKE_SPARK_MASTER": "local[2]"})
    cfg = dataclasses.replace(cfg, spark=dataclasses.replace(cfg.spark, conf=conf))
    context = spark_context(cfg, submitted=False)
    yield context
    context.stop()


@pytest.fixture(scope="session")
def spark(sc):
    """A SparkSession on `sc`, for the tests that read the lake as analysts do (Spark SQL)."""
    from pyspark.sql import SparkSession

    return SparkSession.builder.getOrCreate()


@pytest.fixture(scope="session")
def keyring():
    from dicomlake.crypto.keyring import Keyring

    return Keyring.generate("symmetric")
