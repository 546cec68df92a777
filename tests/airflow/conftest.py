"""Fixtures for the Airflow tests: the real Airflow in its own virtualenv, driven by subprocess.

The project's venv never imports Airflow and Airflow's never imports the project or pyspark:
``dev/airflow.sh`` makes (once, cached) the Airflow venv, ``airflow_probe.py`` runs inside it, and
the DAGs' tasks call the project venv's ``spark-submit`` found on ``PATH``.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from airflow_helpers import REPO


@pytest.fixture(scope="session")
def airflow_python() -> Path:
    """The Airflow venv's interpreter (``dev/airflow.sh`` makes the venv on first use)."""
    out = subprocess.run(
        [str(REPO / "dev" / "airflow.sh")], capture_output=True, text=True, timeout=1800
    )
    assert out.returncode == 0, f"dev/airflow.sh failed:\n{out.stdout}\n{out.stderr}"
    python = REPO / out.stdout.strip().splitlines()[-1]
    assert python.exists(), python
    return python


@pytest.fixture(scope="session")
def project_python() -> Path:
    """The project venv's interpreter (the one running these tests)."""
    return Path(sys.executable)
