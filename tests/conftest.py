"""Fixtures shared by every test: one local SparkSession per test session, keyrings."""

from __future__ import annotations

import os
import sys

import pytest

from dicomlake.config import Config, load_config


@pytest.fixture(scope="session")
def config() -> Config:
    """Built-in defaults only: tests never read a person's own config or DICOMLAKE_* variables."""
    return load_config(env={})


@pytest.fixture(scope="session")
def spark():
    from dicomlake.ingest.session import spark_session

    os.environ["PYSPARK_PYTHON"] = sys.executable
    cfg = load_config(
        env={
            "DICOMLAKE_SPARK_MASTER": "local[2]",
            "DICOMLAKE_SPARK_CONF": "{spark.ui.enabled: 'false', "
            "spark.ui.showConsoleProgress: 'false'}",
        }
    )
    session = spark_session(cfg, submitted=False)
    yield session
    session.stop()


@pytest.fixture(scope="session")
def keyring():
    from dicomlake.crypto.keyring import Keyring

    return Keyring.generate("symmetric")
