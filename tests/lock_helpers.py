"""Real processes that take a lake's lock, for the lock tests (local and HDFS)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

# argv: root, start-file, hold seconds, stale seconds, heartbeat seconds, webhdfs url.
# Says it is ready (<start-file>.ready.<pid>), waits for start-file (so several start at once:
# `start_together`), takes the lock, prints one JSON line,
# holds it for "hold" seconds (reading a line from stdin first when hold < 0), then checks its
# lease and releases.
TAKER = """
import json, logging, os, sys, time
from dicomlake.config import HdfsConfig, LockConfig
from dicomlake.errors import LockBusyError, LockLostError
from dicomlake.lake.lock import holding
from dicomlake.storage import filesystem_for
from urllib.parse import urlsplit

logging.basicConfig(level=logging.INFO)
root, start, hold, stale, beat, webhdfs = sys.argv[1:]
namenodes = {urlsplit(root).netloc: webhdfs} if root.startswith("hdfs:") else {}
fs = filesystem_for(root, HdfsConfig(namenodes=namenodes))
config = LockConfig(stale_seconds=float(stale), heartbeat_seconds=float(beat))
open(f"{start}.ready.{os.getpid()}", "w").close()
while not os.path.exists(start):
    time.sleep(0.005)
try:
    with holding(fs, root, None, "test", config) as lock:
        print(json.dumps({"held": lock.run_id}), flush=True)
        if float(hold) < 0:
            sys.stdin.readline()
        else:
            time.sleep(float(hold))
        try:
            lock.check()
            print(json.dumps({"lease": "ok"}), flush=True)
        except LockLostError as exc:
            print(json.dumps({"lease": "lost", "message": str(exc)}), flush=True)
            sys.exit(5)
except LockBusyError as exc:
    print(json.dumps({"busy": str(exc)}), flush=True)
    sys.exit(4)
"""


def start_takers(
    root: str,
    start: Path,
    count: int,
    *,
    hold: float,
    stale: float = 600.0,
    heartbeat: float = 30.0,
    webhdfs: str = "http://127.0.0.1:1",
) -> list[subprocess.Popen]:
    """``count`` processes that try to take ``root``'s lock once ``start`` exists."""
    argv = [sys.executable, "-c", TAKER, root, str(start), str(hold), str(stale), str(heartbeat)]
    return [
        subprocess.Popen(
            [*argv, webhdfs],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(count)
    ]


def start_together(start: Path, procs: list[subprocess.Popen], timeout: float = 60) -> None:
    """Make ``start`` once every one of ``procs`` (started with it) waits for it: a taker still
    importing when the others go could take the lock after the winner has let it go."""
    deadline = time.monotonic() + timeout
    for proc in procs:
        while not Path(f"{start}.ready.{proc.pid}").exists():
            assert proc.poll() is None, proc.stderr.read()[-3000:]
            assert time.monotonic() < deadline, f"taker {proc.pid} not ready in {timeout} s"
            time.sleep(0.01)
    start.touch()


def first_line(proc: subprocess.Popen) -> dict:
    line = proc.stdout.readline()
    assert line, proc.stderr.read()
    return json.loads(line)


def kill(proc: subprocess.Popen) -> None:
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()


def wait_all(procs: list[subprocess.Popen], timeout: float = 120) -> list[int]:
    """Exit codes; a crash (neither 0 nor 4) fails with the end of its stderr."""
    deadline = time.monotonic() + timeout
    codes = [p.wait(max(1.0, deadline - time.monotonic())) for p in procs]
    for proc, code in zip(procs, codes, strict=True):
        assert code in (0, 4), proc.stderr.read()[-3000:]
    return codes
