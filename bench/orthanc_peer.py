"""Orthanc as a peer in the ingest benchmark: the same landing zone stored over its REST API.

    .venv/bin/python bench/orthanc_peer.py LANDING [--compression] [--clients 2]   # by hand

``measure`` starts Debian's ``Orthanc`` (bench/setup.sh installs it when missing) with its own
configuration: storage and index in a fresh temporary directory, HTTP on a free port with
remote access refused (Orthanc has no bind-address setting, so every non-loopback client is
turned away instead), no DICOM server, no authentication, no plugins, no job history, and
``StorageCompression`` as asked (zlib). ``clients`` threads, each with its own keep-alive
connection, POST every file of the landing zone to ``/instances``, taking the next file from
one shared list; the clock runs from the first request to the last answer. The stored size is
every byte Orthanc keeps (its storage area and its SQLite index, both in that directory). Orthanc
is stopped and its directory removed before ``measure`` returns.
"""

from __future__ import annotations

import argparse
import contextlib
import http.client
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psutil

from cpu_share import busy_cpu_seconds, other_cpu_share

SETUP = Path(__file__).resolve().parent / "setup.sh"
START_TIMEOUT = 60.0
"""Seconds Orthanc has to answer on its port once started."""

REQUEST_TIMEOUT = 600.0
"""Seconds one upload may take (a large file into a compressing Orthanc on a busy machine)."""


class OrthancError(RuntimeError):
    """Orthanc could not be installed, did not start, or refused a file: the message says which."""


def orthanc_binary() -> str:
    """The ``Orthanc`` executable, installed by bench/setup.sh first if it is missing."""
    found = shutil.which("Orthanc")
    if found is None:
        done = subprocess.run(["bash", str(SETUP)], stdout=sys.stderr, check=False)
        found = shutil.which("Orthanc")
        if done.returncode != 0 or found is None:
            raise OrthancError(f"Orthanc is not installed and {SETUP} could not install it")
    return found


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass(frozen=True)
class Orthanc:
    """A running Orthanc of the benchmark's: its port and the directory it stores into."""

    port: int
    storage: Path
    pid: int

    def __repr__(self) -> str:
        return f"Orthanc(http://127.0.0.1:{self.port}, storage={self.storage})"

    def connection(self) -> http.client.HTTPConnection:
        return http.client.HTTPConnection("127.0.0.1", self.port, timeout=REQUEST_TIMEOUT)

    def stored_bytes(self) -> int:
        return sum(p.stat().st_size for p in self.storage.rglob("*") if p.is_file())


def config(storage: Path, port: int, compression: bool) -> dict[str, Any]:
    """Orthanc's configuration for one benchmark run."""
    return {
        "Name": "dicomlake-bench",
        "StorageDirectory": str(storage),
        "IndexDirectory": str(storage),
        "StorageCompression": compression,
        "HttpServerEnabled": True,
        "HttpPort": port,
        "RemoteAccessAllowed": False,
        "AuthenticationEnabled": False,
        "DicomServerEnabled": False,
        "Plugins": [],
        "SaveJobs": False,
        "HttpCompressionEnabled": False,
        "KeepAlive": True,
        "TcpNoDelay": True,
    }


@contextlib.contextmanager
def running(work: Path, compression: bool, log: Path) -> Iterator[Orthanc]:
    """An Orthanc storing under ``work`` (empty), stopped on exit."""
    binary = orthanc_binary()
    storage = work / "storage"
    port = _free_port()
    conf = work / "orthanc.json"
    conf.write_text(json.dumps(config(storage, port, compression), indent=1))
    with open(log, "w") as logf:
        proc = subprocess.Popen(
            [binary, str(conf)], cwd=work, stdout=logf, stderr=subprocess.STDOUT
        )
    server = Orthanc(port, storage, proc.pid)
    try:
        _wait_until_up(server, proc, log)
        yield server
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def _wait_until_up(server: Orthanc, proc: subprocess.Popen[bytes], log: Path) -> None:
    deadline = time.monotonic() + START_TIMEOUT
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise OrthancError(f"Orthanc exited with {proc.returncode} on start; see {log}")
        try:
            conn = server.connection()
            conn.request("GET", "/system")
            if conn.getresponse().status == 200:
                return
        except OSError:
            pass
        time.sleep(0.2)
    raise OrthancError(f"Orthanc did not answer on port {server.port} in {START_TIMEOUT:.0f}s")


def upload(server: Orthanc, files: list[Path], clients: int) -> dict[str, Any]:
    """POST every file to ``/instances`` from ``clients`` threads; seconds, files and bytes."""
    queue = iter(files)
    lock = threading.Lock()
    failures: list[str] = []
    sent = [0, 0]  # files, bytes

    def client() -> None:
        conn = server.connection()
        try:
            while True:
                with lock:
                    path = next(queue, None)
                if path is None or failures:
                    return
                body = path.read_bytes()
                conn.request("POST", "/instances", body, {"Content-Type": "application/dicom"})
                response = conn.getresponse()
                answer = response.read()
                if response.status != 200:
                    failures.append(f"{path}: HTTP {response.status} {answer[:200]!r}")
                    return
                with lock:
                    sent[0] += 1
                    sent[1] += len(body)
        except (OSError, http.client.HTTPException) as exc:
            failures.append(f"{type(exc).__name__}: {exc}")
        finally:
            conn.close()

    threads = [threading.Thread(target=client) for _ in range(clients)]
    t0 = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    seconds = time.perf_counter() - t0
    if failures:
        raise OrthancError("Orthanc refused a file: " + "; ".join(failures[:3]))
    return {"seconds": seconds, "files": sent[0], "bytes_read": sent[1]}


def measure(landing: Path, compression: bool, log: Path, clients: int = 2) -> dict[str, Any]:
    """Store every file of ``landing`` into a fresh Orthanc; its figures, beside dicomlake's."""
    files = sorted(p for p in landing.rglob("*") if p.is_file())
    with tempfile.TemporaryDirectory(prefix="dicomlake-orthanc-") as work:
        with running(Path(work), compression, log) as server:
            orthanc = psutil.Process(server.pid)
            cpu0, ours0, busy0 = (
                sum(orthanc.cpu_times()[:2]),
                time.process_time(),
                busy_cpu_seconds(),
            )
            result = upload(server, files, clients)
            busy = busy_cpu_seconds() - busy0
            cpu = sum(orthanc.cpu_times()[:2]) - cpu0 + time.process_time() - ours0
        stored = server.stored_bytes()  # once Orthanc has stopped and closed its index
    return {
        **result,
        "compression": compression,
        "clients": clients,
        "cpu_seconds": cpu,  # Orthanc's and its clients'
        "other_cpu_share": other_cpu_share(busy, cpu, result["seconds"]),
        "mb_per_s": result["bytes_read"] / 1e6 / result["seconds"],
        "files_per_s": result["files"] / result["seconds"],
        "stored_bytes": stored,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("landing", type=Path)
    parser.add_argument("--compression", action="store_true", help="StorageCompression true")
    parser.add_argument("--clients", type=int, default=2)
    parser.add_argument("--log", type=Path, default=Path(os.devnull))
    args = parser.parse_args(argv)
    print(json.dumps(measure(args.landing, args.compression, args.log, args.clients)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
