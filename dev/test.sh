#!/usr/bin/env bash
# The README's second command: set up, check lint, formatting and types, and run the whole test
# suite (unit, Spark, real HDFS, Spark standalone cluster). Extra arguments go to pytest.
set -euo pipefail
cd "$(dirname "$0")/.."
dev/setup.sh
dev/airflow.sh >/dev/null  # Airflow 3 in its own venv (.cache/airflow-venv) for tests/airflow
# Lint, format and types first: they take seconds, the suite minutes ([tool.mypy] in pyproject.toml)
.venv/bin/ruff check lib tests bench jobs dev notebooks
.venv/bin/ruff format --check lib tests bench jobs dev notebooks
.venv/bin/mypy
exec .venv/bin/python -m pytest "$@"
