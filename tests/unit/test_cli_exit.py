"""How the command's process ends: with `main`'s code, its output flushed, and no teardown.

The teardown is what sometimes aborts a process that has read Parquet (pyarrow's thread pool,
destroyed at exit): these tests run real processes, as the command and the jobs run.
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
from pathlib import Path

from dicomlake.cli import EXIT_ERROR

# Reads a Parquet file the way the lake's code does (which starts pyarrow's thread pool), then
# ends as the command does, or as a plain script would. Where pyarrow's pool is destroyed, in
# the C library's exit(), so are the C atexit handlers: one that aborts is registered, so an
# exit that takes that path aborts every time, not once in a dozen runs as the pool does.
PARQUET_READ_THEN = """
import ctypes, sys
import pyarrow as pa
from dicomlake.cli import exit_now
from dicomlake.lake.parquet import read_files, write_table
from dicomlake.storage.local import LocalFileSystem

fs, uri = LocalFileSystem(), sys.argv[1] + "/part.parquet"
table = pa.table({"n": list(range(20000))})
write_table(fs, uri, table)
assert read_files(fs, [uri], table.schema).num_rows == table.num_rows
libc = ctypes.CDLL(None)
libc.__cxa_atexit.argtypes = [ctypes.c_void_p] * 3
assert libc.__cxa_atexit(ctypes.cast(libc.abort, ctypes.c_void_p), None, None) == 0
print("read", flush=True)
"""


def _read_then(tmp_path: Path, ending: str) -> subprocess.CompletedProcess[str]:
    script = PARQUET_READ_THEN + ending
    return subprocess.run(
        [sys.executable, "-c", script, str(tmp_path)], capture_output=True, text=True
    )


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
    written, summary = proc.stdout.split("\n", 1)
    assert written.startswith("written before the exit")  # then the failure's summary line
    assert json.loads(written.removeprefix("written before the exit")) == {
        "command": "ingest",
        "error": f"config file '{missing}' does not exist",
        "exit_code": EXIT_ERROR,
    }
    assert summary == ""
    assert f"config file '{missing}' does not exist" in proc.stderr
    assert not marker.exists(), "the interpreter's teardown ran"


def test_the_command_ends_without_the_c_exit_that_can_abort_after_parquet_reads(tmp_path):
    proc = _read_then(tmp_path, "exit_now(0)\n")
    assert (proc.returncode, proc.stdout) == (0, "read\n"), proc.stderr


def test_a_plain_exit_after_parquet_reads_takes_the_path_that_aborts(tmp_path):
    """The check above can fail: an ending through the interpreter's teardown runs the C exit
    handlers, and the registered one aborts."""
    proc = _read_then(tmp_path, "sys.exit(0)\n")
    assert (proc.returncode, proc.stdout) == (-signal.SIGABRT, "read\n"), proc.stderr
