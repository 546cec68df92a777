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
# The compiled header path (native/, Rust): rebuilt only when its sources change (a release
# build takes about half a minute). Without it every header takes the slower pydicom path.
native_stamp=.venv/.dicomlake-native-installed
if [ ! -f "$native_stamp" ] ||
  [ -n "$(find native -path native/target -prune -o -newer "$native_stamp" -type f -print -quit)" ]; then
  command -v cargo >/dev/null || PATH="$HOME/.cargo/bin:$PATH"
  command -v cargo >/dev/null ||
    { echo "Rust is needed to build native/ (the header path): install it with rustup" >&2; exit 1; }
  .venv/bin/python -m pip install --quiet "maturin>=1.5,<2"
  rm -rf native/target/wheels
  .venv/bin/python -m maturin build --release --quiet -m native/Cargo.toml -i .venv/bin/python \
    -o native/target/wheels
  .venv/bin/python -m pip install --quiet --force-reinstall --no-deps native/target/wheels/*.whl
  touch "$native_stamp"
fi
command -v java >/dev/null || { echo "Java 17 is needed for Spark (and HDFS): install a JDK" >&2; exit 1; }
# Spark's classes for local jobs, ready-mapped (see dicomlake.spark.cds): made once per java
# and Spark; without it local Spark only starts ~1.7 s slower.
mkdir -p .cache
.venv/bin/python -m dicomlake.spark.cds 2>.cache/spark_cds.log ||
  echo "note: no class-data sharing archive, local Spark starts without it: .cache/spark_cds.log" >&2
# DCMTK: the tests compare the lake's headers and frames with this independent reader; and
# Orthanc, the benchmark's peer (tests/unit/test_bench_orthanc.py). bench/setup.sh installs both.
if ! command -v dcm2json >/dev/null || ! command -v Orthanc >/dev/null; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    bash bench/setup.sh
  else
    echo "DCMTK and Orthanc are needed by the tests: run 'bash bench/setup.sh' as root" \
      "(tests/unit/test_dcmtk_fidelity.py and test_bench_orthanc.py fail without them)" >&2
  fi
fi
