"""The share of the machine's CPUs other processes took while a benchmark run went on."""

from __future__ import annotations

import os

import psutil


def busy_cpu_seconds() -> float:
    """CPU seconds every process of the machine has used so far (all CPUs together)."""
    t = psutil.cpu_times()
    return t.user + t.nice + t.system + t.irq + t.softirq + getattr(t, "steal", 0.0)


def other_cpu_share(busy: float, own: float, wall: float) -> float:
    """Of the CPUs' time over ``wall`` seconds, the share used beyond the run's ``own`` CPU
    seconds, ``busy`` being the machine's CPU seconds over the same time: contention makes a
    run's figures low."""
    return round(max(0.0, busy - own) / (wall * (os.cpu_count() or 1)), 3)
