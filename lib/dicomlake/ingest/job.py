"""The ingest job's driver: plan, run the tasks on Spark, commit, summarise."""

from __future__ import annotations

import functools
import json
import logging
import time
from collections import Counter, defaultdict
from collections.abc import Iterable, Iterator
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from typing import Any
from urllib.parse import urlsplit

import pyarrow as pa
from py4j.protocol import Py4JJavaError
from pyspark import SparkContext

import dicomlake
from dicomlake.config import Config
from dicomlake.crypto.keyring import Keyring
from dicomlake.dicom.deid import options_json
from dicomlake.errors import ConfigError, JobFailedError, LakeWriteError, StorageError
from dicomlake.ingest.plan import Landing, plan_landing, split_tasks
from dicomlake.ingest.worker import TaskContext, TaskResult, deid_options, process_task, timed
from dicomlake.lake import schemas
from dicomlake.lake.commit import commit, recover, staged
from dicomlake.lake.delta_read import require_logs
from dicomlake.lake.identities import drop_instances
from dicomlake.lake.keyring_binding import bind_keyring
from dicomlake.lake.layout import LakeLayout
from dicomlake.lake.ledger import read_ledger
from dicomlake.lake.lock import Lock, holding, new_run_id
from dicomlake.lake.parquet import read_files, write_table
from dicomlake.lake.paths import PathRows, path_id, path_secret
from dicomlake.lake.restricted import write_rows
from dicomlake.storage import (
    ENTRY_PROBLEMS,
    FileInfo,
    FileSystem,
    canonical_uri,
    filesystem_for,
    overlap,
)
from dicomlake.vocab import RETRIED, SourceOutcome

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class IngestSummary:
    """What one run did, in numbers a person can act on."""

    run_id: str
    landing: str
    """The landing zone's filesystem (``file``, ``hdfs://nn``), as ``runs.landing``: its path
    may name a patient, and scheduler logs keep this summary."""
    landing_path_id: str
    """The landing zone's path id (``reidentify --path-id`` gives its path back)."""
    lake: str
    files_listed: int
    files_seen: int
    ingested: int
    duplicates: int
    quarantined: int
    failed: int
    skipped: int
    """Entries recorded as not read: links, FIFOs, bad names... (see ``skipped_reasons``)."""
    files_hidden: int
    """Hidden and temporary names, left out without a record."""
    files_settling: int
    """Files modified within ``ingest.settle_seconds``, left for the next run."""
    bytes_read: int
    bytes_stored: int
    packs_written: int
    seconds: float
    stage_seconds: dict[str, float] = field(default_factory=dict)
    reasons: dict[str, int] = field(default_factory=dict)
    skipped_reasons: dict[str, int] = field(default_factory=dict)
    deid_removed: dict[str, int] = field(default_factory=dict)
    """What de-identification removed that no rule keeps: unknown attributes, private ones,
    text in safe-listed private slots (counted per instance)."""
    sop_uid_from_meta: int = 0
    """Instances without SOPInstanceUID (0008,0018), named by the file meta's
    MediaStorageSOPInstanceUID (0002,0003)."""
    header_paths: dict[str, int] = field(default_factory=dict)
    """Headers read by the compiled core (``fast``) and by pydicom (``reference``: what the
    core declines, or every header where it is not installed)."""
    tables: dict[str, str] = field(default_factory=dict)

    @property
    def error_share(self) -> float:
        return (self.quarantined + self.failed) / self.files_seen if self.files_seen else 0.0

    def as_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["error_share"] = round(self.error_share, 4)
        out["mb_per_s"] = round(self.bytes_read / 1e6 / self.seconds, 2) if self.seconds else 0.0
        return out


def _wrapping_keyring(keyring: Keyring) -> Keyring:
    """What executors get: in public-key mode only the public half, so they cannot decrypt."""
    return keyring.public_only() if keyring.mode == "x25519" else keyring


def run_ingest(
    sc: SparkContext, landing: str, lake: str, config: Config, keyring: Keyring
) -> IngestSummary:
    """Ingest what is new in ``landing`` into ``lake`` as one committed run, holding the lake's
    lock (LockBusyError when another command holds it) and checking the lake's keyring first."""
    landing, lake = canonical_uri(landing), canonical_uri(lake)
    if overlap(landing, lake, config.hdfs):
        raise ConfigError(
            f"the landing zone {landing} and the lake {lake} overlap: a run would ingest the "
            "lake's own files, or the lake's files would be landing files; keep them apart"
        )
    if not filesystem_for(landing, config.hdfs, landing=True).exists(landing):
        # A mistyped or unmounted landing zone is not an empty one: nothing is made or locked
        raise ConfigError(f"the landing zone {landing} does not exist: check --landing")
    layout = LakeLayout(lake)  # a lake path its tables' client cannot name: before any write
    now = datetime.now(timezone.utc)
    lake_fs = filesystem_for(lake, config.hdfs)
    with holding(lake_fs, lake, new_run_id(now), "ingest", config.lock) as lock:
        bind_keyring(lake_fs, layout, keyring, lock)
        return _run_locked(
            sc, landing=landing, lake=lake, config=config, keyring=keyring, lock=lock, now=now
        )


@dataclass(frozen=True, kw_only=True)
class _Run:
    """One run's fixed facts, shared by its phases, and the seconds each stage took."""

    run_id: str
    landing: str
    lake: str
    layout: LakeLayout
    lake_fs: FileSystem
    config: Config
    keyring: Keyring
    lock: Lock
    now: datetime
    stage: dict[str, float] = field(default_factory=lambda: defaultdict(float))


@dataclass(frozen=True)
class _Plan:
    """What the run will do: the landing zone sorted (`Landing`), the work split into tasks,
    and the content the lake holds already (by SHA-256)."""

    landing: Landing
    tasks: list[list[FileInfo]]
    stored_sha256: frozenset[str]


@dataclass(frozen=True)
class _Collected:
    """The tasks' rows gathered on the driver, and the run's counts (its ``runs`` row and
    summary)."""

    sources: list[dict[str, Any]]
    errors: list[dict[str, Any]]
    packs: list[dict[str, Any]]
    staged: list[str]
    counts: dict[str, int]


def _run_locked(
    sc: SparkContext,
    *,
    landing: str,
    lake: str,
    config: Config,
    keyring: Keyring,
    lock: Lock,
    now: datetime,
) -> IngestSummary:
    start = time.perf_counter()
    lake_fs = filesystem_for(lake, config.hdfs)
    run = _Run(
        run_id=lock.run_id,
        landing=landing,
        lake=lake,
        layout=LakeLayout(lake),
        lake_fs=lake_fs,
        config=config,
        keyring=keyring,
        lock=lock,
        now=now,
    )
    plan = _plan(run, sc.defaultParallelism)
    results = _execute(sc, run, plan) if plan.tasks else []
    collected = _collect(plan.landing, results)
    if plan.tasks:
        with timed(run.stage, "commit"):
            _commit(run, plan.landing, collected)
    return _summary(run, plan.landing, results, collected, time.perf_counter() - start)


def _plan(run: _Run, min_tasks: int) -> _Plan:
    """Recover earlier runs, read the ledger, list the landing zone and split the new work."""
    config = run.config
    landing_fs = filesystem_for(run.landing, config.hdfs, landing=True)
    with timed(run.stage, "list"):
        rolled, abandoned = recover(run.lake_fs, run.layout, run.lock)
        if rolled or abandoned:
            log.warning(
                "recovered earlier runs: rolled forward %s, discarded %s", rolled, abandoned
            )
        require_logs(run.lake_fs, run.layout)  # before any work, not at the commit
        ledger = read_ledger(run.lake_fs, run.layout, path_secret(run.keyring))
        settle_ms = int(config.ingest.settle_seconds * 1000)
        now_ms = _filesystem_now_ms(run.lake_fs, run.layout, run.run_id)
        settled_ms = now_ms - settle_ms if settle_ms else None
        entries = landing_fs.list_entries(run.landing, config.ingest.follow_symlinks)
        listing = plan_landing(entries, run.landing, ledger, settled_ms)
    log.info(
        "run %s: %d entries listed, %d new or changed, %d settling, %d hidden",
        run.run_id,
        listing.listed,
        len(listing.work),
        listing.settling,
        listing.hidden,
    )
    tasks = split_tasks(listing.work, task_bytes=config.ingest.task_bytes, min_tasks=min_tasks)
    return _Plan(listing, tasks, ledger.stored_sha256)


def _execute(sc: SparkContext, run: _Run, plan: _Plan) -> list[TaskResult]:
    """Run the tasks on Spark (each stages its own files), then keep one copy of content two
    tasks both stored."""
    ctx = TaskContext(
        run_id=run.run_id,
        lake=run.lake,
        config=run.config,
        keyring=_wrapping_keyring(run.keyring).to_bytes(),
        started_ms=int(run.now.timestamp() * 1000),
    )
    stored = sc.broadcast(plan.stored_sha256)
    landing = run.landing

    def run_task(items: Iterable[tuple[int, list[FileInfo]]]) -> Iterator[TaskResult]:
        from pyspark import TaskContext as SparkTaskContext

        task = SparkTaskContext.get()
        assert task is not None  # this runs in a Spark task
        attempt = task.attemptNumber()
        for index, files in items:
            yield process_task(index, attempt, files, landing, ctx, stored.value)

    tasks = plan.tasks
    files = len(plan.landing.work)
    sc.setJobDescription(f"dicomlake ingest {run.run_id}: {files} files in {len(tasks)} tasks")
    with timed(run.stage, "tasks"):
        try:
            results = (
                sc.parallelize(list(enumerate(tasks)), len(tasks)).mapPartitions(run_task).collect()
            )
        except Py4JJavaError as exc:
            raise JobFailedError(
                f"run {run.run_id}: the Spark job failed after its task retries, nothing was "
                f"committed and the next run redoes the work: {_first_cause(exc)}"
            ) from exc
    stored.unpersist()
    with timed(run.stage, "dedupe"):
        _drop_cross_task_duplicates(run.lake_fs, run.layout, run.run_id, results, run.keyring)
    return results


def _collect(listing: Landing, results: list[TaskResult]) -> _Collected:
    """The tasks' rows, and what the run counts of them."""
    sources = [row for r in results for row in r.sources]
    outcomes = Counter(row["outcome"] for row in sources)
    packs = [row for r in results for row in r.packs]
    counts = dict(
        files_listed=listing.listed,
        files_seen=len(listing.work),
        ingested=outcomes[SourceOutcome.INGESTED],
        duplicates=outcomes[SourceOutcome.DUPLICATE],
        quarantined=outcomes[SourceOutcome.QUARANTINED],
        failed=outcomes[SourceOutcome.FAILED],
        skipped=outcomes[SourceOutcome.SKIPPED],
        bytes_read=sum(r.bytes_read for r in results),
        bytes_stored=sum(r.bytes_stored for r in results),
        packs_written=sum(1 for p in packs if p["pack_path"].startswith("pixels/")),
    )
    return _Collected(
        sources=sources,
        errors=[row for r in results for row in r.errors],
        packs=packs,
        staged=[p for r in results for p in r.staged],
        counts=counts,
    )


def _commit(run: _Run, listing: Landing, collected: _Collected) -> None:
    """Stage the driver's small tables (``runs`` last) and commit them with the tasks' files."""
    options = deid_options(run.config)
    # A landing zone's own path may name a patient or a study (a folder per import), as its
    # files' paths do: the runs table names it by its path id, its filesystem alone in clear
    paths = PathRows(path_secret(run.keyring), run.run_id)
    run_row = {
        "run_id": run.run_id,
        "landing": _filesystem(run.landing),
        "landing_path_id": paths.id_of(run.landing),
        "started_at": run.now,
        "committed_at": datetime.now(timezone.utc),
        **collected.counts,
        "files_hidden": listing.hidden,
        "files_settling": listing.settling,
        "watermark": datetime.fromtimestamp(
            max(f.mtime_ms for f in listing.work) / 1000, tz=timezone.utc
        ),
        "dicomlake_version": dicomlake.__version__,
        "deid_options": options_json(options) if options else json.dumps({"enabled": False}),
    }
    small_tables = {
        "errors": (collected.errors, schemas.ERRORS),
        "packs": (collected.packs, schemas.PACKS),
        "sources": (collected.sources, schemas.SOURCES),
        "runs": ([run_row], schemas.RUNS),  # last: the commit publishes it last
    }
    writes = {
        f"tables/{name}/part-{run.run_id}.parquet": pa.Table.from_pylist(rows, schema=schema)
        for name, (rows, schema) in small_tables.items()
        if rows
    }
    fs, layout = run.lake_fs, run.layout
    restricted = f"restricted/paths/part-{run.run_id}.parquet"
    target = functools.partial(staged, layout, run.run_id)
    fs.run_all(
        [
            *(
                functools.partial(write_table, fs, target(relative), table)
                for relative, table in writes.items()
            ),
            functools.partial(
                write_rows, fs, target(restricted), "paths", paths.rows(), run.keyring
            ),
        ]
    )
    commit(
        fs,
        layout,
        run.lock,
        [*collected.staged, *writes, restricted],
        run.config.maintain.retention_hours,
    )


def _filesystem(uri: str) -> str:
    """The filesystem a URI is on: ``scheme://authority``, or ``file`` for a local path."""
    parts = urlsplit(uri)
    return f"{parts.scheme}://{parts.netloc}" if parts.scheme not in ("", "file") else "file"


def _summary(
    run: _Run,
    listing: Landing,
    results: list[TaskResult],
    collected: _Collected,
    seconds: float,
) -> IngestSummary:
    for r in results:
        for name, task_seconds in r.seconds.items():
            run.stage[f"task.{name}"] += task_seconds
    errors = collected.errors
    skipped = Counter(
        r["reason"] for r in errors if r["reason"] in ENTRY_PROBLEMS and r["reason"] not in RETRIED
    )
    with_identities = deid_options(run.config) is not None
    return IngestSummary(
        run_id=run.run_id,
        landing=_filesystem(run.landing),
        landing_path_id=path_id(path_secret(run.keyring), run.landing),
        lake=run.lake,
        **collected.counts,
        files_hidden=listing.hidden,
        files_settling=listing.settling,
        skipped_reasons=dict(skipped),
        seconds=round(seconds, 3),
        stage_seconds={k: round(v, 3) for k, v in sorted(run.stage.items())},
        reasons=dict(Counter(e["reason"] for e in errors)),
        deid_removed=dict(sum((r.deid_removed for r in results), Counter())),
        sop_uid_from_meta=sum(r.sop_uid_from_meta for r in results),
        header_paths=dict(sum((r.header_paths for r in results), Counter())),
        tables={
            **{name: run.layout.table(name) for name in schemas.SCHEMAS},
            "paths": run.layout.restricted("paths"),
            **({"identities": run.layout.restricted("identities")} if with_identities else {}),
        },
    )


def _filesystem_now_ms(fs: FileSystem, layout: LakeLayout, run_id: str) -> int:
    """The lake filesystem's time now, as it stamps a file's mtime (the NameNode's clock on
    HDFS), from a file written in the run's staging area."""
    probe = staged(layout, run_id, "clock")
    try:
        fs.write_bytes(probe, b"")
        info = fs.status(probe)
        fs.delete(layout.staging(run_id), recursive=True)  # a staging area left: a run that died
    except (StorageError, OSError) as exc:
        raise LakeWriteError(f"cannot write to the lake at {probe}: {exc}") from exc
    if info is None:
        raise LakeWriteError(f"cannot write to the lake: {probe} is gone right after its write")
    return info.mtime_ms


def _first_cause(exc: Py4JJavaError) -> str:
    """The Python error a task died of, from Spark's long Java trace."""
    text = str(exc.java_exception)
    for line in text.splitlines():
        if "Error" in line and "dicomlake" in line:
            return line.strip()
    return text.splitlines()[0] if text else repr(exc)


def _drop_packs(
    fs: FileSystem, layout: LakeLayout, run_id: str, result: TaskResult, packs: set[str]
) -> None:
    """Leave out of ``result`` (and delete from staging) its ``packs``, which hold no chunk a
    row refers to."""
    for row in [p for p in result.packs if p["pack_path"] in packs]:
        result.packs.remove(row)
        result.staged.remove(row["pack_path"])
        fs.delete(staged(layout, run_id, row["pack_path"]))


def _drop_cross_task_duplicates(
    fs: FileSystem, layout: LakeLayout, run_id: str, results: list[TaskResult], keyring: Keyring
) -> None:
    """Keep one copy of content that two tasks of this run both stored.

    Tasks cannot see each other, so identical files in two tasks are both stored; the later
    task's rows become duplicates and are removed from its staged fragments (its chunks stay in
    the pack, unreferenced), and a pack left holding nothing else is not published. Rare in
    practice, so done here rather than coordinated per file.
    """
    owner: dict[str, int] = {}
    dropped: dict[int, set[str]] = defaultdict(set)
    for r in sorted(results, key=lambda r: r.task):
        for row in r.sources:
            if row["outcome"] != SourceOutcome.INGESTED:
                continue
            sha = row["source_sha256"]
            if sha in owner:
                row["outcome"] = SourceOutcome.DUPLICATE
                row["SOPInstanceUID"] = None
                dropped[r.task].add(sha)
            else:
                owner[sha] = r.task
    for r in results:
        if r.task not in dropped:
            continue
        for relative in r.staged:
            if relative.startswith("restricted/identities/"):
                uri = staged(layout, run_id, relative)
                drop_instances(fs, uri, keyring, dropped[r.task])
                continue
            name = relative.split("/")[1] if relative.startswith("tables/") else None
            if name not in ("instances", "frames", "elements"):
                continue
            uri = staged(layout, run_id, relative)
            schema = schemas.SCHEMAS[name]
            if name == "instances":
                schema = pa.schema([f for f in schema if f.name not in schemas.INSTANCE_PARTITIONS])
            table = read_files(fs, [uri], schema)
            keep = [i not in dropped[r.task] for i in table.column("instance_id").to_pylist()]
            write_table(fs, uri, table.filter(pa.array(keep)))
            if name == "frames":
                held = table.filter(pa.array(keep)).column("pack_path").to_pylist()
                _drop_packs(
                    fs, layout, run_id, r, set(table.column("pack_path").to_pylist()) - set(held)
                )
