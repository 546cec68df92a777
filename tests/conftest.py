"""Fixtures shared by every test: one local Spark context per test session, keyrings."""

from __future__ import annotations

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
def sc(kms_jar):
    """The Spark context dicomlake's jobs run on, local[2], one for the whole test session."""
    from dicomlake.ingest.session import spark_context

    os.environ["PYSPARK_PYTHON"] = sys.executable
    cfg = load_config(
        env={
            "DICOMLAKE_SPARK_MASTER": "local[2]",
            # The KMS jar lets the one session read the restricted table (tests/integration).
            "DICOMLAKE_SPARK_CONF": "{spark.ui.enabled: 'false', "
            f"spark.ui.showConsoleProgress: 'false', spark.jars: '{kms_jar}'}}",
        }
    )
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
