"""Process helpers shared by the dev cluster scripts: pid files, port checks, waiting.

Stdlib only, so the scripts run under any Python 3.10+ without the project's venv.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import NoReturn

REPO = Path(__file__).resolve().parent.parent


def env_int(name: str, default: int) -> int:
    """An integer from the environment, with an error that names the variable."""
    raw = os.environ.get(name)
    if raw is None or raw == "":
        return default
    try:
        return int(raw)
    except ValueError:
        fail(f"{name}={raw!r} is not an integer")


def fail(message: str) -> NoReturn:
    """Print ``message`` to stderr and exit with status 1."""
    print(f"error: {message}", file=sys.stderr)
    raise SystemExit(1)


def port_in_use(port: int, host: str = "127.0.0.1") -> bool:
    """Whether something listens on ``host:port`` (or it cannot be bound for another reason)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        # Match the daemons' own bind (they set SO_REUSEADDR), so TIME_WAIT is not "in use".
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((host, port))
        except OSError:
            return True
    return False


def check_ports(ports: Mapping[str, tuple[int, str]]) -> None:
    """Exit with a clear message when one of the named ports is taken.

    ``ports`` maps a label ("NameNode RPC") to (port, the env var that overrides it).
    """
    busy = [
        f"{label} port {port} (set {var} to change it)"
        for label, (port, var) in ports.items()
        if port_in_use(port)
    ]
    if busy:
        fail(
            "in use on 127.0.0.1 by another process (a leftover daemon? try the 'stop' command "
            "or look with `ss -ltnp`): " + "; ".join(busy)
        )


def live_pid(pidfile: Path, *markers: str) -> int | None:
    """The pid in ``pidfile`` if that process is alive and its command line contains ``markers``.

    A stale pid file (dead process, or a pid reused by something else) is removed, so a crashed
    run never blocks the next start and a reused pid is never signalled.
    """
    try:
        pid = int(pidfile.read_text().strip())
    except (FileNotFoundError, ValueError):
        return None
    cmdline = _cmdline(pid)
    if cmdline and all(m in cmdline for m in markers):
        return pid
    pidfile.unlink(missing_ok=True)
    return None


def spawn(
    cmd: Sequence[str],
    *,
    log: Path,
    pidfile: Path,
    markers: Sequence[str],
    env: Mapping[str, str] | None = None,
) -> int:
    """Start ``cmd`` detached (own session, survives this script), output to ``log``.

    Returns once the process shows ``markers`` in its command line (see :func:`live_pid`), or
    has exited (which the caller's wait then reports with the log).
    """
    log.parent.mkdir(parents=True, exist_ok=True)
    if log.exists():  # keep one previous log, so an error tail shows only this run
        log.replace(log.with_name(log.name + ".1"))
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            list(cmd),
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            env=dict(env) if env is not None else None,
        )
    # Until exec() the child's command line is still ours: wait, so live_pid() recognises it.
    deadline = time.monotonic() + 10
    while proc.poll() is None and time.monotonic() < deadline:
        if all(m in _cmdline(proc.pid) for m in markers):
            break
        time.sleep(0.01)
    pidfile.write_text(f"{proc.pid}\n")
    return proc.pid


def _cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
    except OSError:
        return ""


def terminate(pidfile: Path, markers: Sequence[str], name: str, timeout: float = 30.0) -> bool:
    """SIGTERM the process of ``pidfile``, wait for it, SIGKILL after ``timeout``.

    Returns whether a process was running.
    """
    pid = live_pid(pidfile, *markers)
    if pid is None:
        print(f"{name}: not running")
        return False
    os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and _alive(pid):
        time.sleep(0.2)
    if _alive(pid):
        print(f"{name}: still alive after {timeout:.0f}s, sending SIGKILL", file=sys.stderr)
        os.kill(pid, signal.SIGKILL)
        while _alive(pid):
            time.sleep(0.1)
    pidfile.unlink(missing_ok=True)
    print(f"{name}: stopped (pid {pid})")
    return True


def _alive(pid: int) -> bool:
    # The daemons are not our children once this script restarts, so reap-free polling of /proc;
    # a zombie child (started by this very process) counts as gone.
    with contextlib.suppress(ChildProcessError):
        os.waitpid(pid, os.WNOHANG)
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


def wait_for(
    check: Callable[[], bool],
    *,
    what: str,
    timeout: float,
    alive: Callable[[], str | None] = lambda: None,
    interval: float = 0.25,
) -> None:
    """Poll ``check`` until it is true; exit with an error after ``timeout`` seconds.

    ``alive`` returns a message when a daemon being waited for has died, to fail fast.
    """
    deadline = time.monotonic() + timeout
    while True:
        if check():
            return
        died = alive()
        if died:
            fail(f"while waiting for {what}: {died}")
        if time.monotonic() > deadline:
            fail(f"timed out after {timeout:.0f}s waiting for {what}")
        time.sleep(interval)


def log_tail(log: Path, lines: int = 30) -> str:
    """The last lines of a log file, for error messages."""
    try:
        text = log.read_text(errors="replace").splitlines()
    except FileNotFoundError:
        return "(no log)"
    # Cut the huge lines (the classpath in STARTUP_MSG) so the error stays readable.
    return "\n".join(line[:300] for line in text[-lines:])
