"""What a snapshot copies: the lake's listing, compared with the base snapshot's manifest.

Every snapshot lists the whole lake (names, sizes and mtimes only — no content), because its
manifest lists every file. Each listed file is compared with the base manifest (the last snapshot
of any kind for an incremental, the last full one for a differential; a full has no base) and is
either taken over from the base unread (``unchanged``) or read, hashed and stored if its content
is not in the backup yet. The reason is kept in the manifest's ``reason`` column:

``new``
    Path not in the base, mtime at or after ``scan_from`` (= base watermark - ``lag_seconds``).
``renamed_in``
    Path not in the base, mtime *before* ``scan_from``: a file renamed or copied in keeping its
    old mtime (HDFS renames never change a file's mtime; ``cp -p``, ``hdfs dfs -cp -p``). An
    mtime scan alone would miss it; the path-set comparison catches it.
``modified``
    Path in the base with a different mtime, newer *or older* (a file replaced by an older copy).
``size_changed``
    Same path and mtime, different size (mtime granularity, or a writer that reset the mtime).
``lag_window``
    Same path, size and mtime, but mtime at or after ``scan_from``: files near the previous
    high-water mark are read again, in case they changed again within the clock's granularity
    or were still being closed when the base listed them. If the content is the same, nothing
    is stored (the base's object is checked to exist and the content re-hashed only).
``full``
    A full snapshot reads every file (objects already in the backup are not stored again).

Files in the base but not listed now are deletions: they are simply absent from the new manifest
(counted in ``deleted``). A listed file deleted before it could be read is left out too
(``vanished``).

The watermark is the highest mtime listed, taken from the filesystem's own clock (the listed
mtimes, NameNode times on HDFS), never the driver's, but for files modified after the snapshot
started (by the backup filesystem's clock: a probe file's mtime), from a skewed clock or a
``touch``: those count in no watermark, so they are in every later lag window and read again
until their mtime has passed. An incremental or differential keeps the previous watermark when
no file listed now is newer; a full starts afresh. A base watermark past the snapshot's start
(raised by such a file before this rule) is not trusted: every file is read again. A file with
the same path, size and mtime as in the base and an mtime before ``scan_from`` is trusted to be
unchanged (rsync's quick check); everything else above is re-read.

Never backed up (counted in ``excluded``):

- anything but the lake's own places (`dicomlake.lake.layout.PLACES`: ``tables/``,
  ``pixels/``, ``quarantine/``, ``restricted/``, ``keyring-binding.json``): a keyring, an
  export or notes kept in the lake's folder are no part of it, and may be keys or identified
  files;
- ``_staging/`` (a run's work before its commit) and any path with a hidden component (see
  :mod:`dicomlake.storage.names`; Spark and Parquet readers skip them too, so a restored lake
  reads the same: ``_temporary/``, ``_SUCCESS``, ``.crc`` files, ``.snapshot``);
- temporary names (files being written: ``._COPYING_``, ``.tmp``, ``.part``, ``.crdownload``,
  ``~``);
- ``_commits/<run>.json`` intents. A restored lake has no ``_staging/``, so an intent in it could
  not be rolled forward (recovery would fail). Instead a snapshot resolves each intent itself:
  when the ``runs`` table's commit of the run (the version after the one the intent records,
  committed last) is in the listing, the run is complete and all its files are kept (any the
  listing missed are added); otherwise the run is mid-publish and *all* its files are left out,
  with every table's commits after the version the intent records, so the restored lake is the
  lake before that run — including its ``sources`` ledger rows, so the next ingest redoes the
  run's inputs.

The tables' Delta logs (``tables/<table>/_delta_log/``) are backed up, but for the hidden files
in them (a commit being written, ``_last_checkpoint``, which readers do without).
  Intents are read before the walk and listed again after it.

A live walk (no HDFS snapshot) lists each place at another moment while ingests and maintenance
go on: `dicomlake.backup.cut` mends it, before the intents are resolved, into the lake as it was
once the last run its ``runs`` table holds was complete.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

import pyarrow as pa

from dicomlake.backup import cut
from dicomlake.backup.cut import DELTA_LOG, relative
from dicomlake.errors import BackupError, StorageError
from dicomlake.lake import delta
from dicomlake.lake.layout import PLACES
from dicomlake.storage import FileInfo, FileSystem, join
from dicomlake.storage.names import is_hidden, is_temporary
from dicomlake.vocab import ScanReason

COMMITS = "_commits"


@dataclass(frozen=True)
class Listed:
    """A lake file as listed: path relative to the lake root, size, mtime (filesystem clock)."""

    path: str
    size: int
    mtime_ms: int


@dataclass(frozen=True)
class Entry:
    """A file as a manifest records it."""

    size: int
    mtime_ms: int
    sha256: str
    object: str


@dataclass(frozen=True)
class ToRead:
    """A file the snapshot must read, why, and the SHA-256 it probably has (when known)."""

    file: Listed
    reason: ScanReason
    hint: str | None


@dataclass(frozen=True)
class LakeListing:
    files: dict[str, Listed]
    excluded: int
    runs_excluded: tuple[str, ...]


@dataclass(frozen=True)
class Plan:
    unchanged: dict[str, Entry]
    to_read: list[ToRead]
    deleted: tuple[str, ...]


def is_backed_up(relative: str) -> bool:
    """Whether a lake-relative path belongs in a snapshot (see the module docstring)."""
    parts = relative.split("/")
    if parts[0] not in PLACES or any(is_hidden(p) and p != DELTA_LOG for p in parts):
        return False
    return not is_temporary(parts[-1])


def list_lake(fs: FileSystem, root: str, *, live: bool) -> LakeListing:
    """List the files under ``root`` to back up, with mid-publish runs resolved."""
    runs_before = cut.runs_version(fs, root) if live else -1
    intents = _read_intents(fs, root, {})
    raw = {relative(root, f.path): f for f in fs.list_entries(root)}
    _check_regular(root, raw)
    files = {
        rel: Listed(rel, f.size, f.mtime_ms)
        for rel, f in raw.items()
        if f.problem is None and is_backed_up(rel)
    }
    excluded = len(raw) - len(files)
    if live:  # a run may have started publishing during the walk

        def add(rel: str, size: int, mtime_ms: int) -> None:
            if is_backed_up(rel):
                files[rel] = Listed(rel, size, mtime_ms)

        excluded += cut.cut(fs, root, files, add, runs_before)
        intents = _read_intents(fs, root, intents)
    runs_excluded = []
    for run_id, intent in sorted(intents.items()):
        members, before = intent["files"], intent["versions"]
        if delta.log_entry("runs", before["runs"] + 1) in files:
            for rel in members:
                if rel not in files and (st := fs.status(join(root, rel))) is not None:
                    files[rel] = Listed(rel, st.size, st.mtime_ms)
        else:
            runs_excluded.append(run_id)
            for rel in members:
                excluded += files.pop(rel, None) is not None
            for rel in [r for r in files if _after(delta.log_version(r), before)]:
                excluded += files.pop(rel) is not None
    return LakeListing(files, excluded, tuple(runs_excluded))


def _check_regular(root: str, listed: dict[str, FileInfo]) -> None:
    """BackupError naming what the lake's places hold that is no regular file (a link to
    packs kept elsewhere, say): a snapshot copies files, and one that left them out would
    restore a lake without them."""
    odd = sorted(rel for rel, f in listed.items() if f.problem is not None and is_backed_up(rel))
    if odd:
        more = f" and {len(odd) - 1} more" if len(odd) > 1 else ""
        raise BackupError(
            f"{join(root, odd[0])}{more} in the lake is no regular file "
            f"({listed[odd[0]].problem}): a snapshot copies the lake's files, not links or "
            "devices; keep the files themselves in the lake (mount a volume there rather than "
            "link to it)"
        )


def _after(entry: tuple[str, int] | None, versions: dict[str, int]) -> bool:
    return entry is not None and entry[1] > versions.get(entry[0], entry[1])


def _read_intents(
    fs: FileSystem, root: str, known: dict[str, dict[str, Any]]
) -> dict[str, dict[str, Any]]:
    out = dict(known)
    for f in fs.list_files(join(root, COMMITS)):
        name = f.path.rsplit("/", 1)[-1]
        run_id = name[: -len(".json")]
        if not name.endswith(".json") or run_id in out:
            continue
        try:
            intent = json.loads(fs.read(f.path))
            members, versions = intent["files"], intent["versions"]
        except StorageError:
            if fs.exists(f.path):
                raise
            continue  # the run finished and dropped its intent in the meantime
        except (ValueError, KeyError, TypeError) as exc:
            raise BackupError(f"commit intent {f.path} is unreadable: {exc}") from exc
        if members and isinstance(versions, dict):
            out[run_id] = intent
    return out


def entries(rows: pa.Table) -> dict[str, Entry]:
    """Manifest rows by path."""
    cols = rows.select(["path", "size", "mtime_ms", "sha256", "object"]).to_pydict()
    return {
        p: Entry(s, m, h, o)
        for p, s, m, h, o in zip(
            cols["path"],
            cols["size"],
            cols["mtime_ms"],
            cols["sha256"],
            cols["object"],
            strict=True,
        )
    }


def classify(
    files: dict[str, Listed],
    base: dict[str, Entry] | None,
    scan_from_ms: int | None,
    latest: dict[str, Entry],
) -> Plan:
    """Split the listing into files taken over from ``base`` and files to read.

    ``latest`` (the newest snapshot's entries) only supplies hints: a file whose path, size and
    mtime match there probably has that content, so reading it can skip storing it again.
    """
    unchanged: dict[str, Entry] = {}
    to_read: list[ToRead] = []
    for rel, f in sorted(files.items()):
        entry = None if base is None else base.get(rel)
        reason = _reason(f, entry, base is None, scan_from_ms)
        if entry is not None and reason == ScanReason.UNCHANGED:
            unchanged[rel] = entry
            continue
        seen = latest.get(rel)
        hint = seen.sha256 if seen and (seen.size, seen.mtime_ms) == (f.size, f.mtime_ms) else None
        to_read.append(ToRead(f, reason, hint))
    deleted = tuple(sorted(set(base) - set(files))) if base is not None else ()
    return Plan(unchanged, to_read, deleted)


def _reason(f: Listed, entry: Entry | None, full: bool, scan_from_ms: int | None) -> ScanReason:
    recent = scan_from_ms is None or f.mtime_ms >= scan_from_ms
    if full:
        return ScanReason.FULL
    if entry is None:
        return ScanReason.NEW if recent else ScanReason.RENAMED_IN
    if entry.mtime_ms != f.mtime_ms:
        return ScanReason.MODIFIED
    if entry.size != f.size:
        return ScanReason.SIZE_CHANGED
    return ScanReason.LAG_WINDOW if recent else ScanReason.UNCHANGED
