"""A local Spark run listens on loopback addresses only (driver, block manager, UI)."""

from __future__ import annotations

import ipaddress
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.spark

RUN = """
import sys
from dicomlake.config import load_config
from dicomlake.spark.context import spark_context
sc = spark_context(load_config(env={"DICOMLAKE_SPARK_MASTER": "local[1]"}), submitted=False)
assert sc.parallelize(range(10), 2).map(lambda x: x * x).sum() == 285
print("ready", flush=True)
sys.stdin.readline()
sc.stop()
"""


def _descendants(pid: int) -> set[int]:
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError):
                continue
            children.setdefault(ppid, []).append(int(entry.name))
    found, todo = set(), [pid]
    while todo:
        p = todo.pop()
        found.add(p)
        todo.extend(children.get(p, []))
    return found


def _socket_inodes(pids: set[int]) -> set[str]:
    inodes = set()
    for pid in pids:
        try:
            links = [os.readlink(f) for f in Path(f"/proc/{pid}/fd").iterdir()]
        except OSError:
            continue
        inodes.update(link[8:-1] for link in links if link.startswith("socket:["))
    return inodes


def _listening(inodes: set[str]) -> list[tuple[str, int]]:
    """(address, port) of every TCP socket in LISTEN state among ``inodes``."""
    out = []
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for line in Path(table).read_text().splitlines()[1:]:
            fields = line.split()
            local, state, inode = fields[1], fields[3], fields[9]
            if state != "0A" or inode not in inodes:
                continue
            hex_addr, hex_port = local.split(":")
            raw = bytes.fromhex(hex_addr)
            # /proc/net/tcp* print each 32-bit word in host (little-endian) order.
            raw = b"".join(raw[i : i + 4][::-1] for i in range(0, len(raw), 4))
            out.append((str(ipaddress.ip_address(raw)), int(hex_port, 16)))
    return out


def _loopback(address: str) -> bool:
    ip = ipaddress.ip_address(address)
    mapped = getattr(ip, "ipv4_mapped", None)
    return (mapped or ip).is_loopback


def test_a_local_run_listens_on_loopback_only():
    env = {k: v for k, v in os.environ.items() if k != "SPARK_LOCAL_IP"}
    proc = subprocess.Popen(
        [sys.executable, "-c", RUN],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        env=env,
        text=True,
    )
    try:
        assert proc.stdout.readline().strip() == "ready"
        listening = _listening(_socket_inodes(_descendants(proc.pid)))
    finally:
        proc.stdin.write("\n")
        proc.stdin.close()
        proc.wait(120)
    assert listening, "found none of the driver's listening sockets"
    assert [a for a in listening if not _loopback(a[0])] == [], listening
