#!/usr/bin/env bash
# The README's second command: set up and run the whole test suite (unit, Spark, real HDFS,
# Spark standalone cluster). Extra arguments go to pytest.
set -euo pipefail
cd "$(dirname "$0")/.."
dev/setup.sh
dev/airflow.sh >/dev/null  # Airflow 3 in its own venv (.cache/airflow-venv) for tests/airflow
exec .venv/bin/python -m pytest "$@"
