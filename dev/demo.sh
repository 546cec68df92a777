#!/usr/bin/env bash
# The README's first command: set up, build a sample landing zone of real DICOM files,
# ingest it with Spark local[*] into data/demo/lake, print the summary and the tables' paths.
set -euo pipefail
cd "$(dirname "$0")/.."
dev/setup.sh
exec .venv/bin/dicomlake demo --conf conf/local.yaml --workdir "${1:-data/demo}"
