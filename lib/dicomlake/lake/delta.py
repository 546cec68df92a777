"""The lake's tables as Delta Lake tables: their creation and a run's commits (reading them:
`dicomlake.lake.delta_read`).

Executors write plain Parquet files into the table directories; a file becomes part of a table
only when a commit in the table's ``_delta_log/`` adds it, so readers that go through the log
(this module, Spark's ``format("delta")``, ``deltalake``) never see a run in part.

Each run commits each table it wrote with one transaction carrying the application transaction
``(APP_ID, sequence)``, in `COMMIT_ORDER`: a table after the tables its rows refer to, so no
reader sees an instance before its frames, elements and packs, and ``runs`` last, once the run
is whole. The sequence grows by one per run, so a table whose transaction version is already at
a run's sequence holds that run: recovery (the same commits, in the same order) commits only the
tables that are behind. Commits make no checkpoint and drop no log file (``dicomlake maintain``
does both), so a run adds exactly version ``v + 1`` to a table that was at ``v`` when it began.

Column statistics in the log are clear text: no table here has an encrypted column (the
restricted tables stay plain Parquet under ``restricted/``).
"""

from __future__ import annotations

import functools
import json
import logging
import math
import re
from collections.abc import Callable, Iterable
from datetime import date, datetime, timezone
from typing import Any
from urllib.parse import unquote

import pyarrow as pa
import pyarrow.parquet as pq
from deltalake import (
    CommitProperties,
    DeltaTable,
    PostCommitHookProperties,
    Schema,
    Transaction,
    convert_to_deltalake,
)
from deltalake.exceptions import CommitFailedError
from deltalake.transaction import AddAction, RemoveAction

from dicomlake.errors import LakeError
from dicomlake.lake import schemas
from dicomlake.lake.delta_read import open_table
from dicomlake.lake.layout import TABLES, LakeLayout
from dicomlake.lake.parquet import parquet_files
from dicomlake.storage import FileSystem, join

log = logging.getLogger(__name__)

APP_ID = "dicomlake-ingest"
# Each group's tables refer only to tables of earlier groups: an errors or frames row names a
# pack, an instance its frames, elements and pack, a sources row its instance; runs says the run
# is whole. The tables of a group are committed at once on a remote filesystem.
COMMIT_ORDER = (
    ("packs", "elements"),
    ("frames", "errors"),
    ("instances",),
    ("sources",),
    ("runs",),
)
# A run's commits leave checkpoints and log clean-up to maintenance (see the module docstring).
_NO_HOOKS = PostCommitHookProperties(create_checkpoint=False, cleanup_expired_logs=False)
# Strings longer than this get no min/max statistics (header_json would bloat the log).
_MAX_STAT_CHARS = 64
_FOOTER_READ = 64 * 1024


def partition_by(name: str) -> list[str]:
    return list(schemas.INSTANCE_PARTITIONS) if name == "instances" else []


def prepare(
    fs: FileSystem, layout: LakeLayout, retention_hours: float
) -> tuple[dict[str, int], int]:
    """Create the tables that do not exist yet (with `retention` for ``retention_hours``) and
    add the columns a table lacks (nullable: older rows read them as null); returns every
    table's version and the next run's sequence number. The tables are prepared at once on a
    remote filesystem (`FileSystem.run_all`)."""
    versions, sequences = {}, {}

    def one(name: str) -> None:
        table = open_table(fs, layout, name) or _create(fs, layout, name, retention_hours)
        have = {f.name for f in table.schema().fields}
        missing = [f for f in schemas.SCHEMAS[name] if f.name not in have]
        if missing:
            table.alter.add_columns(
                Schema.from_arrow(pa.schema(missing)).fields, post_commithook_properties=_NO_HOOKS
            )
            table.update_incremental()
        versions[name] = table.version()
        sequences[name] = table.transaction_version(APP_ID) or 0

    fs.run_all(functools.partial(one, name) for name in TABLES)
    return {name: versions[name] for name in TABLES}, max(sequences.values()) + 1


def _create(fs: FileSystem, layout: LakeLayout, name: str, retention_hours: float) -> DeltaTable:
    """A new table; or, for a table of a lake from before Delta Lake (Parquet files, no log),
    the table of those files, converted in place (hive partitions, statistics collected)."""
    uri, partitions = layout.table(name), partition_by(name)
    if not parquet_files(fs, uri):
        return DeltaTable.create(
            uri,
            schemas.SCHEMAS[name],
            partition_by=partitions or None,
            configuration=retention(retention_hours),
            post_commithook_properties=_NO_HOOKS,
        )
    fields = pa.schema([schemas.SCHEMAS[name].field(c) for c in partitions])
    convert_to_deltalake(
        uri,
        partition_by=Schema.from_arrow(fields) if partitions else None,
        partition_strategy="hive" if partitions else None,
        configuration=retention(retention_hours),
        post_commithook_properties=_NO_HOOKS,
    )
    return DeltaTable(uri)


def retention(hours: float) -> dict[str, str]:
    """The table properties that make Delta keep removed files' tombstones and the log for
    ``maintain.retention_hours`` (in whole seconds, rounded up): a checkpoint drops tombstones,
    and a log clean-up drops versions, older than these, and vacuum deletes only the files its
    tombstones name (Spark's VACUUM, too, goes by them)."""
    interval = f"interval {math.ceil(hours * 3600)} seconds"
    return {"delta.deletedFileRetentionDuration": interval, "delta.logRetentionDuration": interval}


def keep_retention(table: DeltaTable, hours: float) -> None:
    """Set the table's `retention` for ``hours`` unless it has it already (one commit)."""
    wanted = retention(hours)
    have = table.metadata().configuration
    if any(have.get(key) != value for key, value in wanted.items()):
        table.alter.set_table_properties(wanted, post_commithook_properties=_NO_HOOKS)


def commit_run(
    fs: FileSystem,
    layout: LakeLayout,
    run_id: str,
    sequence: int,
    files: Iterable[str],
    check: Callable[[], None] = lambda: None,
) -> None:
    """Add a run's published table files (lake-relative) to their tables, group after group of
    `COMMIT_ORDER`: the tables of a group at once on a remote filesystem (each commit waits on
    the file it writes, `FileSystem.run_all`), the next group once all of them hold the run;
    ``check`` (the run's lease) before each group.

    Tables that already hold the run (their transaction version is at ``sequence``) are left
    alone, and so is one whose commit of the run lost to another's (the losing commit names
    the run's transaction: `CommitFailedError`).
    """
    by_table: dict[str, list[str]] = {}
    for relative in files:
        _, name, inside = relative.split("/", 2)
        by_table.setdefault(name, []).append(inside)

    def one(name: str) -> None:
        table = open_table(fs, layout, name)
        if table is None:
            raise LakeError(f"run {run_id}: table {layout.table(name)} is missing")
        if (table.transaction_version(APP_ID) or 0) >= sequence:
            return  # committed before a crash
        actions: list[AddAction | RemoveAction] = [
            _add(fs, layout, name, inside) for inside in by_table[name]
        ]
        try:
            table.create_write_transaction(
                actions,
                mode="append",
                schema=table.schema(),
                partition_by=partition_by(name) or None,
                commit_properties=CommitProperties(
                    app_transactions=[Transaction(APP_ID, sequence)],
                    custom_metadata={"dicomlake.run_id": run_id},
                ),
                post_commithook_properties=_NO_HOOKS,
            )
        except CommitFailedError:
            table.update_incremental()
            if (table.transaction_version(APP_ID) or 0) < sequence:
                raise
            log.warning("table %s: run %s was committed by another finishing it", name, run_id)
        except OSError as exc:  # the object store's (HDFS: permission, quota, safe mode)
            raise LakeError(
                f"{layout.table(name)}: the commit of run {run_id} failed ({_cause(exc)}); the "
                "run is committed, and the next run finishes it once the cause is fixed"
            ) from exc

    for group in COMMIT_ORDER:
        check()
        fs.run_all(functools.partial(one, name) for name in group if name in by_table)


def _cause(exc: OSError) -> str:
    """An object store's error without the server's Java stack frames and terminal colours."""
    lines = re.sub(r"\x1b\[[0-9;]*m", "", str(exc)).splitlines()
    return " ".join(line.strip() for line in lines if not _JAVA_FRAME.match(line)) or repr(exc)


_JAVA_FRAME = re.compile(r"\s*(at [\w$.<>]+\(|\.\.\. \d+ more)")


def replace_rows(fs: FileSystem, layout: LakeLayout, name: str, inside: str) -> None:
    """Make the published file ``inside`` the table's only file, in one commit (older versions
    keep the rows it replaces until vacuumed)."""
    table = open_table(fs, layout, name)
    if table is None:
        raise LakeError(f"table {layout.table(name)} is missing")
    table.create_write_transaction(
        [_add(fs, layout, name, inside)],
        mode="overwrite",
        schema=table.schema(),
        partition_by=partition_by(name) or None,
        post_commithook_properties=_NO_HOOKS,
    )


def log_entry(name: str, version: int) -> str:
    """The lake-relative path of a table's commit file for ``version``."""
    return f"tables/{name}/_delta_log/{version:020d}.json"


_LOG_ENTRY = re.compile(r"^tables/([^/]+)/_delta_log/(\d{20})\.(json|checkpoint\.parquet)$")


def log_version(relative: str) -> tuple[str, int] | None:
    """(table, version) of a lake-relative commit or checkpoint file, else None."""
    match = _LOG_ENTRY.match(relative)
    return (match.group(1), int(match.group(2))) if match else None


def table_versions(paths: Iterable[str]) -> dict[str, int]:
    """Per table, the newest commit among lake-relative ``paths`` (a snapshot's files)."""
    out: dict[str, int] = {}
    for path in paths:
        entry = log_version(path)
        if entry is not None and path.endswith(".json"):
            out[entry[0]] = max(out.get(entry[0], -1), entry[1])
    return dict(sorted(out.items()))


def _add(fs: FileSystem, layout: LakeLayout, name: str, inside: str) -> AddAction:
    uri = join(layout.table(name), inside)
    info = fs.status(uri)
    if info is None:
        raise LakeError(f"{uri} was never published; restore the lake from a snapshot")
    tail = fs.read(uri, max(0, info.size - _FOOTER_READ))
    footer = int.from_bytes(tail[-8:-4], "little") + 8
    if footer > len(tail):
        tail = fs.read(uri, info.size - footer)
    meta = pq.read_metadata(pa.BufferReader(tail))
    values = dict(part.split("=", 1) for part in inside.split("/")[:-1])
    partitions = {k: None if v == schemas.NULL_PARTITION else unquote(v) for k, v in values.items()}
    return AddAction(inside, info.size, partitions, info.mtime_ms, True, _stats(meta))


def _stats(meta: pq.FileMetaData) -> str:
    """Delta's per-file statistics from the Parquet footer: row count, nulls, min and max of
    the flat columns (strings only when short). A column any row group lacks a figure for gets
    none: a missing statistic only costs skipping, a wrong one loses rows."""
    nulls: dict[str, int | None] = {}
    low: dict[str, Any] = {}
    high: dict[str, Any] = {}
    for g in range(meta.num_row_groups):
        group = meta.row_group(g)
        for c in range(group.num_columns):
            col = group.column(c)
            name, st = col.path_in_schema, col.statistics
            if "." in name:
                continue  # nested
            if st is None or not st.has_null_count:
                nulls[name] = None
            elif nulls.get(name, 0) is not None:
                nulls[name] = nulls.get(name, 0) + st.null_count
            if st is not None and st.has_null_count and st.null_count == group.num_rows:
                continue  # all null: no bound needed
            bounds = (_bound(st.min), _bound(st.max)) if st is not None and st.has_min_max else None
            if bounds is None or None in bounds or low.get(name, 0) is None:
                low[name] = high[name] = None
                continue
            low[name] = bounds[0] if name not in low else min(low[name], bounds[0])
            high[name] = bounds[1] if name not in high else max(high[name], bounds[1])
    keep = [n for n, v in low.items() if v is not None]
    return json.dumps(
        {
            "numRecords": meta.num_rows,
            "minValues": {n: _iso(low[n]) for n in keep},
            "maxValues": {n: _iso(high[n]) for n in keep},
            "nullCount": {n: c for n, c in nulls.items() if c is not None},
        },
        allow_nan=False,
    )


def _bound(value: Any) -> Any:
    """A statistic Delta can hold, comparable with its kind; None when it is left out."""
    if isinstance(value, str):
        return value if len(value) <= _MAX_STAT_CHARS else None
    if isinstance(value, bool) or not isinstance(value, int | float | date):
        return None
    if isinstance(value, float) and not math.isfinite(value):
        return None  # JSON has no Infinity nor NaN: a strict reader would refuse the log
    return value


def _iso(value: Any) -> Any:
    if isinstance(value, datetime):
        stamp = value if value.tzinfo else value.replace(tzinfo=timezone.utc)
        return stamp.astimezone(timezone.utc).isoformat(timespec="milliseconds")[:-6] + "Z"
    if isinstance(value, date):
        return value.isoformat()
    return value
