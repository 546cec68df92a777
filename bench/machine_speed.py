"""How fast this machine runs right now: a fixed piece of single-core work, timed.

On a shared virtual machine the same run can take a third longer from one minute to the next
(the host's other guests, CPU steal that the guest is not told about), and a benchmark that
compares runs made minutes apart cannot tell that from a change of its own. `probe` times the
same work every call (SHA-256, zlib and interpreted Python, as an ingest mixes them), so that
each run carries the machine's speed at its start; `spread` says by how much it moved.
"""

from __future__ import annotations

import hashlib
import random
import statistics
import time
import zlib


def _samples() -> bytes:
    """1 MiB of little-endian 16-bit samples with 8 bits of noise: zlib shrinks it by a third,
    about as it does pixel data."""
    data = bytearray(1 << 20)
    data[0::2] = random.Random(7).randbytes(1 << 19)
    return bytes(data)


_DATA = _samples()
_ROUNDS = 3


def _work() -> int:
    digest = hashlib.sha256()
    for _ in range(48):
        digest.update(_DATA)
    packed = len(zlib.compress(_DATA[: 1 << 19], 6))
    total = 0
    for i in range(600_000):
        total += i & 0xFF
    return packed + total + digest.digest()[0]


def probe() -> float:
    """Seconds the fixed work takes now: the median of a few rounds (~0.1 s each)."""
    times = []
    for _ in range(_ROUNDS):
        t0 = time.perf_counter()
        _work()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def spread(seconds: list[float]) -> float:
    """How much slower the slowest probe was than the fastest (0.25: by a quarter)."""
    return max(seconds) / min(seconds) - 1 if seconds else 0.0
