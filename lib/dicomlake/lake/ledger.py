"""What the lake already holds: the ``sources`` ledger and the ``runs`` table."""

from __future__ import annotations

from dataclasses import dataclass

import pyarrow as pa

from dicomlake.lake import delta
from dicomlake.lake.layout import LakeLayout
from dicomlake.storage import FileSystem


@dataclass(frozen=True)
class Ledger:
    """The latest (size, mtime in ms) seen per landing path, and the content already stored."""

    seen: dict[str, tuple[int, int]]
    stored_sha256: frozenset[str]

    def is_new(self, path: str, size: int, mtime_ms: int) -> bool:
        """Whether a listed landing file is new or changed since the ledger last saw it."""
        return self.seen.get(path) != (size, mtime_ms)


def read_table(
    fs: FileSystem,
    layout: LakeLayout,
    name: str,
    columns: list[str] | None = None,
    as_of: delta.AsOf = None,
) -> pa.Table:
    """A whole lake table (its latest snapshot, or as of a version or time) as one Arrow table."""
    return delta.read_snapshot(layout, name, columns, as_of)


def read_ledger(fs: FileSystem, layout: LakeLayout) -> Ledger:
    sources = read_table(
        fs,
        layout,
        "sources",
        ["source_path", "source_size", "source_mtime", "outcome", "source_sha256", "seen_at"],
    )
    seen: dict[str, tuple[int, int, int]] = {}
    stored = set()
    rows = sources.to_pydict()
    for path, size, mtime, outcome, sha, seen_at in zip(
        rows["source_path"],
        rows["source_size"],
        rows["source_mtime"],
        rows["outcome"],
        rows["source_sha256"],
        rows["seen_at"],
        strict=True,
    ):
        key = int(seen_at.timestamp() * 1000)
        if path not in seen or seen[path][2] <= key:
            seen[path] = (size, int(mtime.timestamp() * 1000), key)
        if outcome == "ingested":
            stored.add(sha)
    return Ledger({p: (s, m) for p, (s, m, _) in seen.items()}, frozenset(stored))


def latest_packs(rows: list[dict]) -> dict[str, dict]:
    """Per pack path, its newest ``packs`` row (key rotation adds newer ones)."""
    return {r["pack_path"]: r for r in sorted(rows, key=lambda r: r["wrapped_at"])}
