"""What the lake already holds: the ``sources`` ledger and the ``runs`` table."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import pyarrow as pa

from dicomlake.errors import LakeError
from dicomlake.lake import delta_read, schemas
from dicomlake.lake.layout import LakeLayout
from dicomlake.lake.parquet import parquet_files, read_files
from dicomlake.lake.paths import path_id
from dicomlake.storage import FileSystem
from dicomlake.vocab import SourceOutcome


@dataclass(frozen=True)
class Ledger:
    """The latest (size, mtime in ms) seen per landing path id, and the content already stored.

    The ledger holds no landing path: a listed path is looked up by its `path_id`, under the
    keyring's path secret. A ``failed`` record (a read that failed, a directory that could not
    be listed) is not a sighting: the next run tries the path again.
    """

    seen: dict[str, tuple[int, int]]
    stored_sha256: frozenset[str]
    secret: bytes

    def is_new(self, path: str, size: int, mtime_ms: int) -> bool:
        """Whether a listed landing file is new or changed since the ledger last saw it."""
        return self.seen.get(path_id(self.secret, path)) != (size, mtime_ms)


def read_table(
    fs: FileSystem,
    layout: LakeLayout,
    name: str,
    columns: list[str] | None = None,
    as_of: delta_read.AsOf = None,
) -> pa.Table:
    """A whole lake table (its latest snapshot, or as of a version or time) as one Arrow table.

    A table of a lake from before Delta Lake (files, no log: its next run converts it) is its
    files, so that run's ledger knows them (and refuses a lake with landing paths in clear).
    """
    if as_of is None and delta_read.open_table(fs, layout, name) is None:
        return read_files(fs, parquet_files(fs, layout.table(name)), schemas.SCHEMAS[name], columns)
    return delta_read.read_snapshot(fs, layout, name, columns, as_of)


def read_ledger(fs: FileSystem, layout: LakeLayout, secret: bytes) -> Ledger:
    """The lake's ledger; ``secret`` is `paths.path_secret` of the run's keyring."""
    columns = ["source_path_id", "source_size", "source_mtime", "outcome", "source_sha256"]
    try:
        sources = read_table(fs, layout, "sources", [*columns, "seen_at"])
    except KeyError:  # no file has the column
        raise LakeError(
            f"{layout.table('sources')} has no source_path_id: the lake was written by an "
            "older dicomlake that kept landing paths in clear; ingest into a new lake"
        ) from None
    seen: dict[str, tuple[int, int, int]] = {}
    stored = set()
    rows = sources.to_pydict()
    for path, size, mtime, outcome, sha, seen_at in zip(
        rows["source_path_id"],
        rows["source_size"],
        rows["source_mtime"],
        rows["outcome"],
        rows["source_sha256"],
        rows["seen_at"],
        strict=True,
    ):
        key = int(seen_at.timestamp() * 1000)
        if outcome == SourceOutcome.FAILED:
            continue
        if path not in seen or seen[path][2] <= key:
            seen[path] = (size, int(mtime.timestamp() * 1000), key)
        if outcome == SourceOutcome.INGESTED:
            stored.add(sha)
    return Ledger({p: (s, m) for p, (s, m, _) in seen.items()}, frozenset(stored), secret)


def latest_packs(rows: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """Per pack path, its newest ``packs`` row (key rotation adds newer ones)."""
    return {r["pack_path"]: r for r in sorted(rows, key=lambda r: r["wrapped_at"])}
