"""The commit protocol that makes a run's output visible all at once, or not at all.

A run writes everything (pack files, table fragments, quarantine copies) under
``_staging/<run>/`` with the same relative paths it will have in the lake. To commit, it
publishes an intent (``_commits/<run>.json``: the list of files, the run's sequence number and
every table's Delta version before it) by an atomic rename — the commit point — and then moves
the staged files into place (several at once on a remote filesystem). A table file in place is
not yet part of its table: each table then gets one Delta transaction adding the run's files
(:mod:`dicomlake.lake.delta`), a table only once the tables its rows refer to hold the run
(`delta.COMMIT_ORDER`: an instance is never visible before its frames, elements and packs), and
``runs`` last. The tables of a group are committed at once on a remote filesystem.

- A run that dies before the commit point leaves only ``_staging/<run>/``, which no reader looks
  at; the next run deletes it and redoes the work (its files are still new to the ledger).
  A run commits only while it holds the lake's lock (:mod:`dicomlake.lake.lock`) and the next
  run recovers only after taking it, so a staging area it deletes is never a live run's.
- A run that dies after it is rolled forward by the next run (:func:`recover`), which finishes
  the moves and commits the tables that do not hold the run yet. Every move is idempotent (a
  file already in place is skipped) and so is every table commit (the table's transaction
  version tells), so a crash during recovery is recovered too.
- A run that stalled after it (past its lock's lease) and was taken over checks its lease
  before each step of finishing, and stops (:class:`~dicomlake.errors.LockLostError`, the run
  committed). A step it was in as the taker began the same one is done twice at once, and each
  tolerates the other: a file the other moved, a table commit the other made (the Delta commit
  that loses names the run's transaction, and the table then holds the run), a staging area
  the other deleted.

One ingest runs per lake at a time: the lake's lock guarantees it.
"""

from __future__ import annotations

import functools
import json
import logging
from collections.abc import Callable

from dicomlake.errors import LakeError, StorageError
from dicomlake.lake import delta
from dicomlake.lake.layout import LakeLayout
from dicomlake.lake.lock import Lock
from dicomlake.storage import FileSystem, join

log = logging.getLogger(__name__)

INTENT_VERSION = 2  # docs/FORMATS.md "Commit protocol"


def staged(layout: LakeLayout, run_id: str, relative: str) -> str:
    """Where a run stages the file that will be published at ``relative`` in the lake."""
    return join(layout.staging(run_id), relative)


def commit(
    fs: FileSystem, layout: LakeLayout, lock: Lock, files: list[str], retention_hours: float
) -> None:
    """Publish the staged ``files`` of the lock's run (lake-relative paths, a runs record among
    them), after checking the run still holds the lake's lock. Tables it creates keep removed
    files and log for ``retention_hours`` (`delta.retention`)."""
    run_id = lock.run_id
    if not any(f.startswith("tables/runs/") for f in files):
        raise LakeError(f"run {run_id}: a run commits a runs record")
    versions, sequence = delta.prepare(fs, layout, retention_hours)
    intent = json.dumps(
        {
            "version": INTENT_VERSION,
            "run_id": run_id,
            "files": files,
            "sequence": sequence,
            "versions": versions,
        }
    ).encode()
    tmp = join(layout.staging(run_id), "_intent.json")
    fs.write_bytes(tmp, intent)
    lock.check()
    fs.publish(tmp, layout.commit_intent(run_id))  # the commit point
    _roll_forward(fs, layout, run_id, functools.partial(lock.check, committed=True))


def recover(fs: FileSystem, layout: LakeLayout, lock: Lock) -> tuple[list[str], list[str]]:
    """Finish committed runs, drop abandoned ones; returns (rolled forward, abandoned) run ids.

    Runs under the lake's ``lock``: every other run's staging area is abandoned.
    """
    rolled = []
    for info in sorted(fs.list_files(layout.commits)):
        name = info.path.rsplit("/", 1)[-1]
        if name.endswith(".json"):
            run_id = name[: -len(".json")]
            log.warning("run %s was committed but not finished: rolling it forward", run_id)
            _roll_forward(fs, layout, run_id)
            rolled.append(run_id)
    abandoned = []
    for staging in fs.list_dirs(layout.staging_root):
        run_id = staging.rstrip("/").rsplit("/", 1)[-1]
        if run_id == lock.run_id:
            continue
        log.warning("run %s died before its commit: discarding its staging area", run_id)
        try:
            fs.delete(staging, recursive=True)
        except StorageError as exc:  # a stalled run's workers still writing it: never read
            log.warning("staging area of run %s left for the next run: %s", run_id, exc)
        abandoned.append(run_id)
    return rolled, abandoned


def _roll_forward(
    fs: FileSystem, layout: LakeLayout, run_id: str, check: Callable[[], None] = lambda: None
) -> None:
    """Finish the committed run ``run_id``; ``check`` (its own run's lease) before each step."""
    intent_uri = layout.commit_intent(run_id)
    intent = json.loads(fs.read(intent_uri))
    if intent.get("version") != INTENT_VERSION:
        raise LakeError(
            f"commit intent {intent_uri} has version {intent.get('version', 1)}; this dicomlake "
            f"reads version {INTENT_VERSION} (upgrade dicomlake, or finish the run with the "
            "dicomlake that wrote it)"
        )

    def move(relative: str) -> None:
        src, dst = staged(layout, run_id, relative), layout.absolute(relative)
        if fs.exists(dst):
            return  # moved before a crash
        try:
            fs.publish(src, dst)
        except StorageError:
            if fs.exists(dst):
                return  # moved meanwhile by another finishing this run
            if not fs.exists(src):
                raise LakeError(
                    f"run {run_id}: staged file {src} is missing and {dst} was never "
                    "published; restore the lake from a snapshot"
                ) from None
            raise

    check()
    fs.run_all(functools.partial(move, relative) for relative in intent["files"])
    tables = [f for f in intent["files"] if f.startswith("tables/")]
    delta.commit_run(fs, layout, run_id, intent["sequence"], tables, check)
    check()
    try:
        fs.delete(layout.staging(run_id), recursive=True)
    except StorageError:
        if fs.exists(layout.staging(run_id)):
            raise
    fs.delete(intent_uri)
