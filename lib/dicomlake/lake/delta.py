"""The lake's tables as Delta Lake tables: their creation, a run's commits and snapshot reads.

Executors write plain Parquet files into the table directories; a file becomes part of a table
only when a commit in the table's ``_delta_log/`` adds it, so readers that go through the log
(this module, Spark's ``format("delta")``, ``deltalake``) never see a run in part.

Each run commits each table it wrote with one transaction carrying the application transaction
``(APP_ID, sequence)``, ``runs`` last. The sequence grows by one per run, so a table whose
transaction version is already at a run's sequence holds that run: recovery commits only the
tables that are behind. Commits make no checkpoint and drop no log file (``dicomlake maintain``
does both), so a run adds exactly version ``v + 1`` to a table that was at ``v`` when it began.

Column statistics in the log are clear text: no table here has an encrypted column (the
restricted tables stay plain Parquet under ``restricted/``).
"""

from __future__ import annotations

import functools
import json
import re
from collections.abc import Iterable
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
from deltalake.exceptions import TableNotFoundError
from deltalake.transaction import AddAction, RemoveAction

from dicomlake.errors import ConfigError, LakeError
from dicomlake.lake import schemas
from dicomlake.lake.layout import TABLES, LakeLayout
from dicomlake.lake.parquet import parquet_files
from dicomlake.storage import FileSystem, join

APP_ID = "dicomlake-ingest"
# A run's commits leave checkpoints and log clean-up to maintenance (see the module docstring).
_NO_HOOKS = PostCommitHookProperties(create_checkpoint=False, cleanup_expired_logs=False)
# Strings longer than this get no min/max statistics (header_json would bloat the log).
_MAX_STAT_CHARS = 64
_FOOTER_READ = 64 * 1024

AsOf = int | datetime | None


def partition_by(name: str) -> list[str]:
    return list(schemas.INSTANCE_PARTITIONS) if name == "instances" else []


def parse_as_of(text: str) -> int | datetime:
    """``--as-of``: a table version (an integer) or an ISO 8601 time (UTC when it has no zone)."""
    if text.isdigit():
        return int(text)
    try:
        when = datetime.fromisoformat(
            text.removesuffix("Z") + ("+00:00" if text.endswith("Z") else "")
        )
    except ValueError:
        raise ConfigError(
            f"--as-of {text!r} is neither a table version nor an ISO 8601 time"
        ) from None
    return when if when.tzinfo else when.replace(tzinfo=timezone.utc)


def open_table(layout: LakeLayout, name: str, as_of: AsOf = None) -> DeltaTable | None:
    """The table's snapshot (the latest, or as of a version or time); None if it did not exist."""
    try:
        table = DeltaTable(layout.table(name))
    except TableNotFoundError:
        return None
    if isinstance(as_of, int):
        table.load_as_version(as_of)
    elif as_of is not None:
        if as_of < _created_at(table):
            return None
        table.load_as_version(as_of)
    return table


def _created_at(table: DeltaTable) -> datetime:
    first = min(table.history(), key=lambda h: h["version"])
    return datetime.fromtimestamp(first["timestamp"] / 1000, tz=timezone.utc)


def read_snapshot(
    layout: LakeLayout, name: str, columns: list[str] | None = None, as_of: AsOf = None
) -> pa.Table:
    """A table's rows in ``schemas.SCHEMAS[name]`` (or its ``columns``), read through the log.

    Columns the table does not have yet (written before they were added) read as null.
    """
    schema = schemas.SCHEMAS[name]
    wanted = schema if columns is None else pa.schema([schema.field(c) for c in columns])
    table = open_table(layout, name, as_of)
    if table is None:
        return wanted.empty_table()
    dataset = table.to_pyarrow_dataset()
    present = [c for c in wanted.names if c in dataset.schema.names]
    try:
        rows = dataset.to_table(columns=present)
    except FileNotFoundError as exc:
        raise LakeError(
            f"version {table.version()} of {layout.table(name)} needs a file vacuumed since "
            f"(time travel reaches back maintain.retention_hours): {exc}"
        ) from None
    except (OSError, pa.ArrowInvalid) as exc:  # a file changed under the log
        raise LakeError(
            f"version {table.version()} of {layout.table(name)} has a file that is not as its "
            f"log recorded it ({exc}): restore the lake from a snapshot"
        ) from None
    for i, field in enumerate(wanted):
        if field.name not in present:
            rows = rows.add_column(i, field.name, pa.nulls(rows.num_rows, field.type))
    return rows.select(wanted.names).cast(wanted)


def prepare(fs: FileSystem, layout: LakeLayout) -> tuple[dict[str, int], int]:
    """Create the tables that do not exist yet and add the columns a table lacks (nullable:
    older rows read them as null); returns every table's version and the next run's sequence
    number. The tables are prepared at once on a remote filesystem (`FileSystem.run_all`)."""
    versions, sequences = {}, {}

    def one(name: str) -> None:
        table = open_table(layout, name) or _create(fs, layout, name)
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


def _create(fs: FileSystem, layout: LakeLayout, name: str) -> DeltaTable:
    """A new table; or, for a table of a lake from before Delta Lake (Parquet files, no log),
    the table of those files, converted in place (hive partitions, statistics collected)."""
    uri, partitions = layout.table(name), partition_by(name)
    if not parquet_files(fs, uri):
        return DeltaTable.create(
            uri,
            schemas.SCHEMAS[name],
            partition_by=partitions or None,
            post_commithook_properties=_NO_HOOKS,
        )
    fields = pa.schema([schemas.SCHEMAS[name].field(c) for c in partitions])
    convert_to_deltalake(
        uri,
        partition_by=Schema.from_arrow(fields) if partitions else None,
        partition_strategy="hive" if partitions else None,
        post_commithook_properties=_NO_HOOKS,
    )
    return DeltaTable(uri)


def commit_run(
    fs: FileSystem, layout: LakeLayout, run_id: str, sequence: int, files: Iterable[str]
) -> None:
    """Add a run's published table files (lake-relative) to their tables: the others at once on
    a remote filesystem (each commit waits on the file it writes, `FileSystem.run_all`), then
    ``runs``, once all of them hold the run.

    Tables that already hold the run (their transaction version is at ``sequence``) are left
    alone.
    """
    by_table: dict[str, list[str]] = {}
    for relative in files:
        _, name, inside = relative.split("/", 2)
        by_table.setdefault(name, []).append(inside)

    def one(name: str) -> None:
        table = open_table(layout, name)
        if table is None:
            raise LakeError(f"run {run_id}: table {layout.table(name)} is missing")
        if (table.transaction_version(APP_ID) or 0) >= sequence:
            return  # committed before a crash
        actions: list[AddAction | RemoveAction] = [
            _add(fs, layout, name, inside) for inside in by_table[name]
        ]
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

    fs.run_all(functools.partial(one, name) for name in by_table if name != "runs")
    if "runs" in by_table:
        one("runs")


def replace_rows(fs: FileSystem, layout: LakeLayout, name: str, inside: str) -> None:
    """Make the published file ``inside`` the table's only file, in one commit (older versions
    keep the rows it replaces until vacuumed)."""
    table = open_table(layout, name)
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
        }
    )


def _bound(value: Any) -> Any:
    """A statistic Delta can hold, comparable with its kind; None when it is left out."""
    if isinstance(value, str):
        return value if len(value) <= _MAX_STAT_CHARS else None
    if isinstance(value, bool) or not isinstance(value, int | float | date):
        return None
    return value


def _iso(value: Any) -> Any:
    if isinstance(value, datetime):
        stamp = value if value.tzinfo else value.replace(tzinfo=timezone.utc)
        return stamp.astimezone(timezone.utc).isoformat(timespec="milliseconds")[:-6] + "Z"
    if isinstance(value, date):
        return value.isoformat()
    return value
