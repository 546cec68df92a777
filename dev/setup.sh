#!/usr/bin/env bash
# Make .venv with dicomlake and everything its jobs and tests need. Safe to run again.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  "$PYTHON" -m venv .venv
fi
stamp=.venv/.dicomlake-installed
if [ ! -f "$stamp" ] || [ pyproject.toml -nt "$stamp" ]; then
  .venv/bin/python -m pip install --quiet --upgrade pip
  .venv/bin/python -m pip install --quiet -e ".[spark,samples,test]"
  touch "$stamp"
fi
command -v java >/dev/null || { echo "Java 17 is needed for Spark (and HDFS): install a JDK" >&2; exit 1; }
