"""A progress bar on stderr for long local work (Spark shows its own stage progress).

Library code wraps its loops in :func:`track`; nothing is drawn unless the command line turned
bars on with :func:`enable` (the library never writes to the terminal by itself).
"""

from __future__ import annotations

import sys
import time
from collections.abc import Iterable, Iterator
from typing import TypeVar

T = TypeVar("T")

_enabled = False
_WIDTH = 30
_EVERY = 0.2  # seconds between redraws


def enable(on: bool = True) -> None:
    """Draw bars from now on (the CLI does this when stderr is a terminal)."""
    global _enabled
    _enabled = on


def track(items: Iterable[T], total: int, label: str) -> Iterator[T]:
    """Yield ``items``, drawing ``label [####    ] done/total`` while it goes."""
    if not _enabled or total <= 0:
        yield from items
        return
    start = last = time.monotonic()
    for done, item in enumerate(items, 1):
        yield item
        now = time.monotonic()
        if now - last >= _EVERY or done == total:
            last = now
            filled = _WIDTH * done // total
            rate = done / (now - start) if now > start else 0.0
            sys.stderr.write(
                f"\r{label} [{'#' * filled}{' ' * (_WIDTH - filled)}] {done}/{total} ({rate:.1f}/s)"
            )
            sys.stderr.flush()
    sys.stderr.write("\n")
