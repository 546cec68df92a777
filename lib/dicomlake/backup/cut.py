"""A live listing of a lake made one moment of it: the lake as its ``runs`` table last said.

Walking a lake while ingests and maintenance go on lists each place at another moment: a table's
log before a run's commit and another's after it, a run's packs before they were published and
its table commits after, a compaction's commit without the file it wrote. `cut` mends the
listing, after the walk, into the lake as it was once the last run the ``runs`` table holds was
complete:

1. The ``runs`` table's log is listed again: its newest commit's transaction version (the run
   sequence `delta.commit_run` records) is the last complete run. Every table commits a run
   before ``runs`` does (`delta.COMMIT_ORDER`), so the other logs, listed again after it, hold
   every commit of every complete run.
2. Each table is cut before its first commit of a later run (a run committing as the logs were
   listed): those commits, and the files they add, are left out. Maintenance commits (no run)
   never follow such a commit: they run under the lake's lock, after the run finished.
3. Every data file of each table at its cut is in the listing: one the walk passed before it
   was written is added. One that is gone (a damaged lake, or vacuumed during a walk longer
   than ``maintain.retention_hours``), or a path outside its table, leaves the table as walked.
4. The runs that completed after the walk began wrote files the walk may have passed: their
   ``pixels/<run>/`` and ``quarantine/<run>/`` are listed again, and so is ``restricted/``.

A run that is mid-commit is then left out whole by its intent (`scan.list_lake`). A table
whose log cannot be read, or names what it cannot hold, is left as walked, with a warning: a
damaged lake is backed up as it is, never refused.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

from deltalake import DeltaTable

from dicomlake.backup.manifest import path_problem
from dicomlake.errors import BackupError, LakeError, StorageError
from dicomlake.lake import delta
from dicomlake.lake.delta_read import commit_actions, data_files, open_table
from dicomlake.lake.layout import TABLES, LakeLayout
from dicomlake.storage import FileInfo, FileSystem, join

log = logging.getLogger(__name__)

DELTA_LOG = "_delta_log"


def runs_version(fs: FileSystem, root: str) -> int:
    """The newest commit version in the ``runs`` table's log (-1: none yet)."""
    return max((v for _, _, v, json_ in _log(fs, root, "runs") if json_), default=-1)


def cut(
    fs: FileSystem,
    root: str,
    files: dict[str, Any],
    add: Callable[[str, int, int], None],
    runs_before: int,
) -> int:
    """Mend ``files`` (lake-relative paths of a walk of ``root`` that began when the ``runs``
    log's newest version was ``runs_before``) as the module says; ``add(path, size, mtime)``
    adds a file. Returns how many listed files it left out."""
    return _Mending(fs, LakeLayout(root), files, add).mend(runs_before)


@dataclass(frozen=True)
class _Mending:
    fs: FileSystem
    layout: LakeLayout
    files: dict[str, Any]
    add: Callable[[str, int, int], None]
    opened: dict[tuple[str, int], DeltaTable] = field(default_factory=dict)

    def mend(self, runs_before: int) -> int:
        newest_runs = self._relist_log("runs")
        if newest_runs < 0:
            return 0  # no run committed yet: nothing to cut at
        try:
            complete = self._table("runs", newest_runs).transaction_version(delta.APP_ID) or 0
            since = self._runs_since(runs_before, newest_runs)
        except (LakeError, ValueError, TypeError) as exc:
            log.warning(
                "the runs table's log cannot be read (%s): the lake is copied as walked", exc
            )
            return 0
        left_out = 0
        for name in TABLES:
            newest = newest_runs if name == "runs" else self._relist_log(name)
            try:
                left_out += self._cut_table(name, newest, complete)
            except (LakeError, ValueError, TypeError) as exc:
                log.warning("table %s is copied as walked: %s", name, exc)
        for run_id in since:
            for place in (self.layout.pixels(run_id), self.layout.quarantine(run_id)):
                self._relist(place)
        self._relist(join(self.layout.root, "restricted"))
        return left_out

    def _cut_table(self, name: str, newest: int, complete: int) -> int:
        """Cut one table's log after its last commit of a complete run (or of maintenance),
        and complete its files at that version; returns how many listed files it left out."""
        version, left_out = newest, 0
        while version >= 0 and self._sequence(name, version) > complete:
            for rel in [*self._added(name, version), delta.log_entry(name, version)]:
                left_out += self.files.pop(rel, None) is not None
            version -= 1
        for rel in [r for r in self.files if _later(delta.log_version(r), name, version)]:
            left_out += self.files.pop(rel) is not None  # a checkpoint of a version left out
        if version >= 0:
            self._complete_files(name, version)
        return left_out

    def _relist_log(self, name: str) -> int:
        """List the table's log again, adding its files; its newest commit (-1: none)."""
        newest = -1
        for rel, info, version, json_ in _log(self.fs, self.layout.root, name):
            self.add(rel, info.size, info.mtime_ms)
            newest = max(newest, version) if json_ else newest
        return newest

    def _relist(self, place: str) -> None:
        for f in self.fs.list_files(place):
            rel = relative(self.layout.root, f.path)
            if rel not in self.files:
                self.add(rel, f.size, f.mtime_ms)

    def _commit(self, name: str, version: int) -> list[dict[str, Any]]:
        uri = join(self.layout.root, delta.log_entry(name, version))
        try:
            return commit_actions(self.fs, uri)
        except (StorageError, ValueError) as exc:
            raise LakeError(f"cannot read the lake's log file {uri}: {exc}") from exc

    def _sequence(self, name: str, version: int) -> int:
        """The run sequence a commit records (its ``txn``), -1 for no run's (maintenance)."""
        for action in self._commit(name, version):
            txn = action.get("txn")
            if isinstance(txn, dict) and txn.get("appId") == delta.APP_ID:
                return int(txn.get("version", -1))
        return -1

    def _added(self, name: str, version: int) -> list[str]:
        """The data files a left-out commit adds (lake-relative)."""
        adds = [a.get("add") for a in self._commit(name, version)]
        return [f"tables/{name}/{a['path']}" for a in adds if isinstance(a, dict) and "path" in a]

    def _table(self, name: str, version: int) -> DeltaTable:
        key = (name, version)
        if key not in self.opened:  # the runs table's is read twice
            table = open_table(self.fs, self.layout, name, version)
            if table is None:
                raise LakeError(f"{self.layout.table(name)} has no version {version}")
            self.opened[key] = table
        return self.opened[key]

    def _complete_files(self, name: str, version: int) -> None:
        inside = self.layout.table(name).rstrip("/") + "/"
        for uri in data_files(self._table(name, version), self.layout.table(name)):
            rel = f"tables/{name}/{uri[len(inside) :]}"
            # A log names its files: one outside its table, or a path a restore would refuse,
            # is a damaged log (this table is then copied as walked), never a file to take
            if not uri.startswith(inside) or path_problem(rel):
                raise LakeError(f"the log of {inside} names {uri}, not one of its files")
            if rel in self.files:
                continue
            info = self.fs.status(uri)
            if info is None:  # the lake is damaged, or a vacuum ran during a very long walk
                raise LakeError(
                    f"{uri}, a data file of version {version} of {self.layout.table(name)}, is "
                    "gone; if the lake is whole, take the snapshot again"
                )
            self.add(rel, info.size, info.mtime_ms)

    def _runs_since(self, before: int, newest: int) -> list[str]:
        """The run ids the ``runs`` table committed after version ``before``."""
        out = []
        for version in range(before + 1, newest + 1):
            for action in self._commit("runs", version):
                info = action.get("commitInfo")
                if isinstance(info, dict) and isinstance(run := info.get("dicomlake.run_id"), str):
                    out.append(run)
        return out


def _log(fs: FileSystem, root: str, name: str) -> Iterator[tuple[str, FileInfo, int, bool]]:
    """A table's log files (never ``_last_checkpoint`` nor a commit being written): path,
    listing, version, and whether it is a commit (else a checkpoint)."""
    for f in fs.list_files(join(root, "tables", name, DELTA_LOG)):
        rel = relative(root, f.path)
        entry = delta.log_version(rel)
        if entry is not None:
            yield rel, f, entry[1], rel.endswith(".json")


def _later(entry: tuple[str, int] | None, name: str, version: int) -> bool:
    return entry is not None and entry[0] == name and entry[1] > version


def relative(root: str, uri: str) -> str:
    """``uri``'s path below the listed ``root``."""
    prefix = root.rstrip("/") + "/"
    if not uri.startswith(prefix):
        raise BackupError(f"listed file {uri!r} is not under the listed root {root!r}")
    return uri[len(prefix) :]
