"""The lake's tables as Delta Lake tables: their creation, a run's commits and snapshot reads.

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

A time a reader asks for is resolved to a version by the commit times recorded in the log
(`version_at`), never by the log files' modification times, which a copy or a restore resets.

Column statistics in the log are clear text: no table here has an encrypted column (the
restricted tables stay plain Parquet under ``restricted/``).
"""

from __future__ import annotations

import functools
import json
import math
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
from deltalake.exceptions import DeltaError, TableNotFoundError
from deltalake.transaction import AddAction, RemoveAction

from dicomlake.errors import ConfigError, LakeError
from dicomlake.lake import schemas
from dicomlake.lake.layout import TABLES, LakeLayout
from dicomlake.lake.parquet import parquet_files
from dicomlake.storage import FileSystem, join

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

AsOf = int | datetime | None


def partition_by(name: str) -> list[str]:
    return list(schemas.INSTANCE_PARTITIONS) if name == "instances" else []


def parse_as_of(text: str) -> int | datetime:
    """``--as-of``: a table version (ASCII digits) or an ISO 8601 time (UTC when it has no
    zone). Digits that are also an ISO 8601 basic date (``20261207``) are refused as ambiguous."""
    when = _iso_time(text)
    if re.fullmatch(r"[0-9]+", text) is None:
        if when is None:
            raise ConfigError(
                f"--as-of {text!r} is neither a table version (digits 0-9) nor an ISO 8601 time"
            )
        return when
    if when is not None:
        raise ConfigError(
            f"--as-of {text!r} is ambiguous: table version {int(text)} or the date "
            f"{when:%Y-%m-%d}; write a date with dashes ({when:%Y-%m-%d})"
        )
    return int(text)


def _iso_time(text: str) -> datetime | None:
    if not text.isascii():
        return None
    try:
        when = datetime.fromisoformat(text)
    except ValueError:
        return None
    return when if when.tzinfo else when.replace(tzinfo=timezone.utc)


def open_table(
    fs: FileSystem, layout: LakeLayout, name: str, as_of: AsOf = None
) -> DeltaTable | None:
    """The table's snapshot (the latest, or as of a version or time); None if it did not exist
    (then). LakeError, naming the table (and the log file, when one is damaged), when its log
    cannot be read or has no such version."""
    uri = layout.table(name)
    try:
        table = DeltaTable(uri)
        if as_of is None:
            return table
        version = as_of if isinstance(as_of, int) else version_at(table, as_of)
        if version is None:
            return None  # the table did not exist yet
        if version > table.version():
            raise LakeError(f"{uri} has no version {version}: the latest is {table.version()}")
        table.load_as_version(version)
    except TableNotFoundError:
        return None
    except DeltaError as exc:
        raise _unreadable(fs, uri, exc, as_of) from None
    return table


def version_at(table: DeltaTable, when: datetime) -> int | None:
    """The table's latest version committed at or before ``when`` by the commit times its log
    records (``commitInfo.timestamp``); None if the table did not exist yet. LakeError when its
    log no longer reaches back that far."""
    commits: list[tuple[int, int]] = sorted((h["version"], h["timestamp"]) for h in table.history())
    then = when.timestamp() * 1000
    if not commits:  # a log whose commits record no time: none can be placed in time
        raise LakeError(f"{table.table_uri}: its log records no commit times to travel by")
    before = [version for version, stamp in commits if stamp <= then]
    if before:
        return max(before)
    oldest, stamp = commits[0]
    if oldest == 0:
        return None
    raise LakeError(
        f"{table.table_uri}: its log reaches back to version {oldest} "
        f"({datetime.fromtimestamp(stamp / 1000, tz=timezone.utc).isoformat()}), not to "
        f"{when.isoformat()} (time travel reaches back maintain.retention_hours)"
    )


_COMMIT_FILE = re.compile(r"\d{20}\.json")


def _unreadable(fs: FileSystem, uri: str, exc: DeltaError, as_of: AsOf) -> LakeError:
    """Why a table's log cannot be read: its first commit file that is not JSON lines, or else
    deltalake's own words."""
    log_dir = join(uri, "_delta_log")
    for info in sorted(fs.list_files(log_dir), key=lambda f: f.path):
        if not _COMMIT_FILE.fullmatch(info.path.rsplit("/", 1)[-1]):
            continue
        try:
            actions = [json.loads(line) for line in fs.read(info.path).decode().splitlines()]
            if not actions or not all(isinstance(a, dict) for a in actions):
                raise ValueError("no actions")
        except ValueError as bad:  # JSON and UTF-8 errors both are
            return LakeError(
                f"{uri}: its log file {info.path} is damaged ({bad}): restore the lake from a "
                "snapshot"
            )
    reason = str(exc).splitlines()[0]
    if as_of is None:
        return LakeError(
            f"{uri}: its log cannot be read ({reason}): restore the lake from a snapshot"
        )
    return LakeError(
        f"{uri} as of {as_of} cannot be read ({reason}): its log may no longer hold that "
        "version (time travel reaches back maintain.retention_hours)"
    )


def _missing_files(fs: FileSystem, table: DeltaTable) -> list[str]:
    """The data files of the table's loaded version that are not there."""
    uris = table.file_uris()
    gone: list[str] = []
    fs.run_all(functools.partial(_note_gone, fs, uri, gone) for uri in uris)
    return sorted(gone)


def _note_gone(fs: FileSystem, uri: str, gone: list[str]) -> None:
    if fs.status(uri) is None:
        gone.append(uri)


def require_logs(fs: FileSystem, layout: LakeLayout) -> list[tuple[str, DeltaTable]]:
    """Every existing table, its log read: LakeError naming a log file that does not read (a
    writer checks before it adds to a damaged table)."""
    opened = ((name, open_table(fs, layout, name)) for name in TABLES)
    return [(name, table) for name, table in opened if table is not None]


def require_readable(fs: FileSystem, layout: LakeLayout) -> None:
    """`require_logs`, and every file of each table's latest version there (a stat per file:
    for maintenance, which reads them all, not for an ingest, which adds to them)."""
    for name, table in require_logs(fs, layout):
        if gone := _missing_files(fs, table):
            raise LakeError(_missing(layout.table(name), table.version(), gone))


def _missing(uri: str, version: int, gone: list[str]) -> str:
    more = f" and {len(gone) - 1} more" if len(gone) > 1 else ""
    return (
        f"{uri}: {gone[0]}{more}, which version {version} of its log holds, is missing: "
        "restore the lake from a snapshot"
    )


def read_snapshot(
    fs: FileSystem,
    layout: LakeLayout,
    name: str,
    columns: list[str] | None = None,
    as_of: AsOf = None,
) -> pa.Table:
    """A table's rows in ``schemas.SCHEMAS[name]`` (or its ``columns``), read through the log.

    Columns the table does not have yet (written before they were added) read as null.
    """
    schema = schemas.SCHEMAS[name]
    wanted = schema if columns is None else pa.schema([schema.field(c) for c in columns])
    table = open_table(fs, layout, name, as_of)
    if table is None:
        return wanted.empty_table()
    dataset = table.to_pyarrow_dataset()
    present = [c for c in wanted.names if c in dataset.schema.names]
    try:
        rows = dataset.to_table(columns=present)
    except FileNotFoundError as exc:
        raise LakeError(_gone(fs, layout, name, table, exc)) from None
    except (OSError, pa.ArrowInvalid) as exc:  # a file changed under the log
        raise LakeError(
            f"version {table.version()} of {layout.table(name)} has a file that is not as its "
            f"log recorded it ({exc}): restore the lake from a snapshot"
        ) from None
    for i, field in enumerate(wanted):
        if field.name not in present:
            rows = rows.add_column(i, field.name, pa.nulls(rows.num_rows, field.type))
    return rows.select(wanted.names).cast(wanted)


def _gone(
    fs: FileSystem, layout: LakeLayout, name: str, table: DeltaTable, exc: FileNotFoundError
) -> str:
    """Why a file of the table's loaded version is not there: the latest version still holds
    it (the lake is damaged), or a later version removed it and vacuum has deleted it since."""
    uri, gone = layout.table(name), _missing_files(fs, table)
    latest = DeltaTable(uri)
    damaged = sorted(set(latest.file_uris()).intersection(gone))
    if damaged or not gone:
        return _missing(uri, latest.version(), damaged or [str(exc).splitlines()[0]])
    return (
        f"version {table.version()} of {uri} needs {gone[0]}, which a later version removed "
        "and vacuum has deleted since (time travel reaches back maintain.retention_hours)"
    )


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
    fs: FileSystem, layout: LakeLayout, run_id: str, sequence: int, files: Iterable[str]
) -> None:
    """Add a run's published table files (lake-relative) to their tables, group after group of
    `COMMIT_ORDER`: the tables of a group at once on a remote filesystem (each commit waits on
    the file it writes, `FileSystem.run_all`), the next group once all of them hold the run.

    Tables that already hold the run (their transaction version is at ``sequence``) are left
    alone.
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

    for group in COMMIT_ORDER:
        fs.run_all(functools.partial(one, name) for name in group if name in by_table)


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
