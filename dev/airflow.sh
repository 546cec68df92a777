#!/usr/bin/env bash
# Airflow in its own virtualenv (.cache/airflow-venv), apart from .venv: Airflow's pins must
# never fight pyspark's. The DAGs only shell out to spark-submit, so this venv never needs the
# project itself. Safe to run again; reinstalls only when the pins below change.
#
#   dev/airflow.sh                      # just make the venv; prints its python
#   dev/airflow.sh standalone           # a local Airflow (UI on :8080) over jobs/dags
#   dev/airflow.sh dags list            # any airflow command, same AIRFLOW_HOME
#
# Environment: PYTHON [python3], DICOMLAKE_AIRFLOW_VENV [.cache/airflow-venv],
# AIRFLOW_HOME [.cache/airflow-home].
set -euo pipefail
cd "$(dirname "$0")/.."
# Keep in step with docker/Dockerfile (tests/integration/test_docker_files.py checks).
AIRFLOW_VERSION=3.3.2
SPARK_PROVIDER_VERSION=6.3.4
PYTHON=${PYTHON:-python3}
venv=${DICOMLAKE_AIRFLOW_VENV:-.cache/airflow-venv}
pins="apache-airflow==$AIRFLOW_VERSION apache-airflow-providers-apache-spark==$SPARK_PROVIDER_VERSION"
stamp=$venv/.dicomlake-pins
if [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "$pins" ]; then
  rm -rf "$venv"
  "$PYTHON" -m venv "$venv"
  "$venv/bin/python" -m pip install --quiet --upgrade pip
  # shellcheck disable=SC2086  # $pins is a list of requirement specifiers
  "$venv/bin/python" -m pip install --quiet $pins
  echo "$pins" > "$stamp"
fi
if [ $# -eq 0 ]; then
  echo "$venv/bin/python"
  exit 0
fi
export AIRFLOW_HOME=${AIRFLOW_HOME:-$PWD/.cache/airflow-home}
export AIRFLOW__CORE__DAGS_FOLDER=${AIRFLOW__CORE__DAGS_FOLDER:-$PWD/jobs/dags}
export AIRFLOW__CORE__LOAD_EXAMPLES=False
# Tasks run the project venv's spark-submit (the provider takes it from PATH only) on local[*],
# unless a spark_default connection says otherwise.
if [ -z "${SPARK_HOME:-}" ] && [ -x .venv/bin/python ]; then
  SPARK_HOME=$(.venv/bin/python -c 'import os, pyspark; print(os.path.dirname(pyspark.__file__))')
  export SPARK_HOME PATH="$SPARK_HOME/bin:$PATH"
fi
export AIRFLOW_CONN_SPARK_DEFAULT=${AIRFLOW_CONN_SPARK_DEFAULT:-'{"conn_type": "spark", "host": "local[*]"}'}
exec "$venv/bin/airflow" "$@"
