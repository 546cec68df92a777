"""Reading the lake's Delta tables: a table as it is now or was at a version or time (time
travel), its rows, and the checks that its log and files are whole.

A time a reader asks for is resolved to a version by the commit times recorded in the log
(`version_at`), never by the log files' modification times, which a copy or a restore resets.
"""

from __future__ import annotations

import functools
import json
import re
from datetime import datetime, timezone
from typing import Any
from urllib.parse import unquote

import pyarrow as pa
from deltalake import DeltaTable
from deltalake.exceptions import DeltaError, TableNotFoundError

from dicomlake.errors import ConfigError, LakeError
from dicomlake.lake import schemas
from dicomlake.lake.layout import TABLES, LakeLayout
from dicomlake.storage import FileSystem, join

AsOf = int | datetime | None


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


def commit_actions(fs: FileSystem, uri: str) -> list[dict[str, Any]]:
    """The actions of the log's commit file ``uri``; ValueError when it is not JSON lines of
    actions (UTF-8 and JSON errors are ValueErrors; JSON nested past the parser's depth too)."""
    try:
        actions = [json.loads(line) for line in fs.read(uri).decode().splitlines()]
    except RecursionError:
        raise ValueError("nested past the parser's depth") from None
    if not actions or not all(isinstance(a, dict) for a in actions):
        raise ValueError("no actions")
    return actions


def _unreadable(fs: FileSystem, uri: str, exc: DeltaError, as_of: AsOf) -> LakeError:
    """Why a table's log cannot be read: its first commit file that is not JSON lines, or else
    deltalake's own words."""
    log_dir = join(uri, "_delta_log")
    for info in sorted(fs.list_files(log_dir), key=lambda f: f.path):
        if not _COMMIT_FILE.fullmatch(info.path.rsplit("/", 1)[-1]):
            continue
        try:
            commit_actions(fs, info.path)
        except ValueError as bad:
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


def data_files(table: DeltaTable, uri: str) -> list[str]:
    """The data files of the table's loaded version, as URIs under ``uri``, the table's.

    A log's paths are percent-encoded (Delta's protocol; deltalake encodes what it is given).
    ``file_uris`` decodes them, but gives the table's own URI encoded: a lake at
    ``/data/my lake`` as ``/data/my%20lake``, which names no file."""
    paths = table.get_add_actions(flatten=True).column("path").to_pylist()
    return [join(uri, unquote(path)) for path in paths]


def _missing_files(fs: FileSystem, table: DeltaTable, uri: str) -> list[str]:
    """The data files of the table's loaded version that are not there."""
    gone: list[str] = []
    fs.run_all(functools.partial(_note_gone, fs, file, gone) for file in data_files(table, uri))
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
        if gone := _missing_files(fs, table, layout.table(name)):
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
    uri = layout.table(name)
    gone = _missing_files(fs, table, uri)
    latest = DeltaTable(uri)
    damaged = sorted(set(data_files(latest, uri)).intersection(gone))
    if damaged or not gone:
        return _missing(uri, latest.version(), damaged or [str(exc).splitlines()[0]])
    return (
        f"version {table.version()} of {uri} needs {gone[0]}, which a later version removed "
        "and vacuum has deleted since (time travel reaches back maintain.retention_hours)"
    )
