"""How the command's process ends: with `main`'s code, its output flushed, and no teardown.

The teardown is what sometimes aborts a process that has read Parquet (pyarrow's thread pool,
destroyed at exit): these tests run real processes, as the command and the jobs run.
"""

from __future__ import annotations

import subprocess
import sys
from importlib.metadata import entry_points

from dicomlake.cli import EXIT_ERROR

# Reads a few Parquet files the way the lake's code does, then ends as the command does.
PARQUET_READS_THEN_EXIT = """
import sys
import pyarrow as pa
from dicomlake.cli import exit_now
from dicomlake.lake.parquet import read_files, write_table
from dicomlake.storage.local import LocalFileSystem

fs, root = LocalFileSystem(), sys.argv[1]
table = pa.table({"n": list(range(20000)), "s": [str(i) for i in range(20000)]})
files = [f"{root}/part-{i}.parquet" for i in range(5)]
for uri in files:
    write_table(fs, uri, table)
assert read_files(fs, files, table.schema).num_rows == 5 * table.num_rows
exit_now(0)
"""


def test_the_exit_code_and_output_survive_and_the_teardown_is_skipped(tmp_path):
    marker = tmp_path / "teardown-ran"
    missing = tmp_path / "missing.yaml"
    script = (
        "import atexit, pathlib\n"
        f"atexit.register(pathlib.Path({str(marker)!r}).touch)\n"
        "from dicomlake.cli import run\n"
        "print('written before the exit', end='')\n"  # no newline: still in the buffer
        f"run(['ingest', '--conf', {str(missing)!r}, '--landing', 'in', '--lake', 'out'])\n"
    )
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True)
    assert proc.returncode == EXIT_ERROR
    assert proc.stdout == "written before the exit"
    assert f"config file '{missing}' does not exist" in proc.stderr
    assert not marker.exists(), "the interpreter's teardown ran"


def test_the_installed_command_ends_through_run():
    (script,) = entry_points(group="console_scripts", name="dicomlake")
    assert script.value == "dicomlake.cli:run"


def test_no_exit_after_parquet_reads_aborts(tmp_path):
    # With sys.exit instead of exit_now, 1 run in 12 or 13 aborts here (SIGABRT): 40 clean
    # runs would then come by chance a few times in a hundred
    codes = []
    for run in range(40):
        root = tmp_path / str(run)
        root.mkdir()
        proc = subprocess.run(
            [sys.executable, "-c", PARQUET_READS_THEN_EXIT, str(root)],
            capture_output=True,
            text=True,
        )
        assert "Traceback" not in proc.stderr, proc.stderr
        codes.append(proc.returncode)
    assert codes == [0] * len(codes)
