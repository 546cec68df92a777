"""The work of one ingest task, run on an executor: files in, staged packs and table fragments out.

Each task reads its own files through :mod:`dicomlake.storage` (big bytes never cross the
JVM/Python boundary; on HDFS the next files are read ahead while one is processed, see
:mod:`dicomlake.ingest.readahead`), splits each into header and frames, seals the chunks into
pack files and writes its table fragments under the run's staging area. A file over
``ingest.stream_bytes`` is never held whole: its header is split off, the file hashed as one
stream, then its frames read on and sealed one by one, its chunks rolling over into the task's
next packs. Smaller files are taken a few at a time: read and split, then their chunks encoded
together, then sealed (`HELD_FILES`). The chunks of a file not held are encoded on several
threads at once (`_Encoder`).
It returns only small rows (ledger, errors, packs) to the driver. Names carry the task's attempt
number, so a retried task never overwrites what another attempt wrote; the driver commits only
the files of successful attempts.

Every header is de-identified (:mod:`dicomlake.dicom.deid`, keyed by the keyring's pseudonym
secret) before any analyst-visible value is taken from it: promoted columns, DICOM JSON, element
rows, and the SOPInstanceUID of frames and ledger rows are pseudonyms. The identified values go
to the task's restricted identities file, its identified columns encrypted (PME). The pack
files keep the original bytes, encrypted, so export still rebuilds the original file.

Landing paths never reach a table: rows name a file by its keyed ``source_path_id``
(:mod:`dicomlake.lake.paths`), and the task writes the paths it saw to its restricted paths
file, encrypted. Rejected files are copied into quarantine encrypted
(:mod:`dicomlake.lake.quarantine`), under their random ``error_id``.
"""

from __future__ import annotations

import contextlib
import functools
import gc
import hashlib
import itertools
import logging
import re
import secrets
import time
import traceback
from collections import Counter, defaultdict
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, BinaryIO
from urllib.parse import quote

import numpy as np
import pyarrow as pa
from pydicom.config import disable_value_validation

from dicomlake.config import Config, DeidConfig, IngestConfig
from dicomlake.crypto.keyring import Keyring
from dicomlake.dicom.deid import PSEUDONYM_PURPOSE
from dicomlake.dicom.elements import ELEMENT_SCHEMA
from dicomlake.dicom.header import HeaderRecords, header_records, warm_up
from dicomlake.dicom.split import SplitInstance, split_instance, split_stream
from dicomlake.errors import (
    DicomLakeError,
    DicomParseError,
    KeyringError,
    LakeWriteError,
    StorageError,
)
from dicomlake.ingest.readahead import READ_MARGIN, ReadAhead
from dicomlake.ingest.rowcheck import RowCheck
from dicomlake.lake import schemas
from dicomlake.lake.commit import staged
from dicomlake.lake.layout import LakeLayout
from dicomlake.lake.parquet import write_table
from dicomlake.lake.paths import PathRows, path_secret
from dicomlake.lake.quarantine import BLOCK, copy_path, write_copy
from dicomlake.lake.restricted import write_rows
from dicomlake.pixels import codecs
from dicomlake.pixels.pack import PackInfo, PackWriter
from dicomlake.pixels.spec import FrameSpec
from dicomlake.storage import ENTRY_PROBLEMS, FileInfo, FileSystem, ReadStream, filesystem_for
from dicomlake.vocab import RETRIED, RejectReason, SourceOutcome

log = logging.getLogger(__name__)

READ_BLOCK = 8 << 20
"""Bytes per read when a file is read in parts (hashing and splitting a streamed file): on
HDFS every read is two HTTP round trips, so small frames are read many at a time."""
READ_AHEAD_BYTES = 64 << 20
"""Landing bytes a task reads ahead of the file it works on (see `ReadAhead`)."""
HELD_FILES = 16
HELD_BYTES = 16 << 20
"""Files held whole and no larger than this are held back, up to `HELD_FILES` of them or this
many bytes in all, and their chunks encoded together before any is sealed (`_Task.finish_held`).
The Python steps right after a codec call run on cold caches, 2-4 times slower than warm: held
back, a file's header no longer follows the last file's codecs, nor a chunk's sealing its own.
On the benchmark's ~100 KB files the header and sealing stages took 20-30% less time. A larger
file's chunks are encoded this many bytes at a time, each group before any of it is sealed."""


@dataclass(frozen=True)
class TaskContext:
    """What every task of a run shares (pickled once per task; keep it small)."""

    run_id: str
    lake: str
    config: Config
    keyring: bytes  # a keyring that can wrap (the public half only, in public-key mode)
    started_ms: int


@dataclass
class TaskResult:
    """The small rows a task sends back to the driver."""

    task: int
    attempt: int
    sources: list[dict[str, Any]] = field(default_factory=list)
    errors: list[dict[str, Any]] = field(default_factory=list)
    packs: list[dict[str, Any]] = field(default_factory=list)
    staged: list[str] = field(default_factory=list)  # lake-relative paths, ready to publish
    seconds: dict[str, float] = field(default_factory=lambda: defaultdict(float))
    bytes_read: int = 0
    bytes_stored: int = 0
    # What de-identification removed for want of a rule that keeps it (`deidentify`'s counts)
    deid_removed: Counter[str] = field(default_factory=Counter)
    # Instances named by the file meta's MediaStorageSOPInstanceUID, having no SOPInstanceUID
    sop_uid_from_meta: int = 0
    # Headers read by the compiled core ("fast") and by pydicom ("reference"): `header_records`
    header_paths: Counter[str] = field(default_factory=Counter)


def _ts(ms: int) -> datetime:
    return datetime.fromtimestamp(ms / 1000, tz=timezone.utc)


def deid_options(config: Config) -> DeidConfig | None:
    """The run's de-identification options; None when ``deid.enabled`` is false."""
    return config.deid if config.deid.enabled else None


def pack_row(relative: str, info: PackInfo, ctx: TaskContext) -> dict[str, Any]:
    """The ``packs`` row of a closed pack (pixels, or a quarantine copy) at ``relative``."""
    return {
        "pack_path": relative,
        "pack_id": info.pack_id,
        "kek_id": info.kek_id,
        "wrapped_key": info.wrapped_key,
        "size": info.size,
        "chunks": info.chunks,
        "ingest_run_id": ctx.run_id,
        "wrapped_at": _ts(ctx.started_ms),
    }


def without_path(message: str, path: str) -> str:
    """``message`` with the landing path, and each of its names (with and without extension)
    of 4 characters or more, replaced: for the text of an unexpected error, which may quote
    the path (dicomlake's own messages name none, and are not masked: a landing directory
    named like one of their words would blank it)."""
    names = {path}
    for name in path.split("/"):
        names |= {name, name.rsplit(".", 1)[0]}
    longest_first = sorted((n for n in names if len(n) >= 4), key=len, reverse=True)
    if not longest_first:
        return message
    words = "|".join(map(re.escape, longest_first))
    return re.sub(
        rf"(?<![A-Za-z0-9])(?:{words})(?![A-Za-z0-9])",
        lambda m: "<landing path>" if m.group() == path else "<name>",
        message,
    )


class _NoCopy(Exception):
    """A landing file grew past ingest.quarantine_max_bytes, or could not be read, while it
    was copied into quarantine."""


@contextlib.contextmanager
def timed(seconds: dict[str, float], stage: str) -> Iterator[None]:
    """Add the block's wall time to ``seconds[stage]`` (a ``defaultdict(float)``)."""
    start = time.perf_counter()
    try:
        yield
    finally:
        seconds[stage] += time.perf_counter() - start


def partition_dir(values: dict[str, Any]) -> str:
    """Hive-style directory of an instance row, escaped the way Spark escapes partition values."""
    parts = []
    for name in schemas.INSTANCE_PARTITIONS:
        value = values.get(name)
        text = schemas.NULL_PARTITION if value in (None, "") else quote(str(value), safe="")
        parts.append(f"{name}={text}")
    return "/".join(parts)


_Chunk = tuple[str, int, bytes, FrameSpec | None, str]
"""One chunk of an instance: kind, index, raw bytes, frame description, codec."""
_Encoded = list[tuple[_Chunk, tuple[str, bytes]]]
"""Chunks, each with what `codecs.encode` made of it."""


def _groups(chunks: Iterable[_Chunk], limit: int) -> Iterator[list[_Chunk]]:
    """``chunks`` in order, in lists of at least ``limit`` raw bytes (but the last)."""
    group: list[_Chunk] = []
    size = 0
    for chunk in chunks:
        group.append(chunk)
        size += len(chunk[2])
        if size >= limit:
            yield group
            group, size = [], 0
    if group:
        yield group


class _Encoder:
    """Encodes a task's chunks (`codecs.encode`), those of a file not held on
    ``pixels.encode_threads`` threads at once.

    The codecs release the GIL, so the frames of one big file take a second core wherever one
    is free: a run of a few big files, the last task of a run. Held files are encoded on the
    task's own thread: handing small files' chunks to threads cost ~5% more CPU than it gained
    where every core is busy (bench/ingest_runs.py on the 3,000 small files).
    """

    def __init__(self, threads: int, verify: bool) -> None:
        self._threads, self._verify = threads, verify
        # The task's own thread encodes a share too
        self._pool = (
            ThreadPoolExecutor(threads - 1, thread_name_prefix="dicomlake-encode")
            if threads > 1
            else None
        )

    def encode(self, chunks: list[_Chunk]) -> _Encoded:
        """Each of ``chunks`` encoded, one after another on this thread."""
        return [(c, codecs.encode(c[2], c[3], codec=c[4], verify=self._verify)) for c in chunks]

    def encode_at_once(self, chunks: list[_Chunk]) -> _Encoded:
        """`encode`, ``chunks`` cut into a run per thread, the first run on this thread."""
        n = min(self._threads, len(chunks))
        if self._pool is None or n < 2:
            return self.encode(chunks)
        runs = [chunks[k * len(chunks) // n : (k + 1) * len(chunks) // n] for k in range(n)]
        others = [self._pool.submit(self.encode, run) for run in runs[1:]]
        first = self.encode(runs[0])
        return first + [pair for future in others for pair in future.result()]

    def close(self) -> None:
        """Wait for the threads; runs not started are dropped (a task that failed)."""
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=True)


@dataclass
class _Held:
    """A file held back after its header was read (see `HELD_BYTES`)."""

    info: FileInfo
    data: bytes
    sha: str
    split: SplitInstance
    records: HeaderRecords
    encoded: _Encoded | Exception | None = None  # its chunks, or why not


class _Packs:
    """The task's open pack file, rolled over at the configured size."""

    def __init__(self, task: _Task) -> None:
        self._fs, self._layout, self._ctx = task.lake_fs, task.layout, task.ctx
        self._result = task.result
        self._keyring = task.keyring
        self.kek_id = self._keyring.active_kek_id
        self._seq = 0
        self._writer: PackWriter | None = None
        self._out: contextlib.ExitStack | None = None
        self.relative = ""

    def writer_for(self, incoming: int) -> PackWriter:
        """The pack the next ``incoming`` bytes go into; the lake failing is LakeWriteError."""
        try:
            return self._writer_for(incoming)
        except (LakeWriteError, KeyringError):
            raise
        except Exception as exc:
            raise LakeWriteError(f"cannot write pack {self.relative}: {exc}") from exc

    def _writer_for(self, incoming: int) -> PackWriter:
        limit = self._ctx.config.pixels.pack_bytes
        if self._writer is not None and self._writer.bytes_written + incoming > limit:
            self.close()
        if self._writer is None:
            self._seq += 1
            pack_id = (
                f"{self._ctx.run_id}-t{self._result.task:05d}"
                f"-a{self._result.attempt}-{self._seq:03d}"
            )
            self.relative = f"pixels/{self._ctx.run_id}/{pack_id}.pack"
            self._out = contextlib.ExitStack()
            stream = self._out.enter_context(
                self._fs.open_write(staged(self._layout, self._ctx.run_id, self.relative))
            )
            self._writer = PackWriter(_LakeStream(stream, self.relative), pack_id, self._keyring)
        return self._writer

    def close(self) -> None:
        if self._writer is None:
            return
        info = self._writer.close()
        assert self._out is not None
        self._out.close()
        self._result.staged.append(self.relative)
        self._result.packs.append(pack_row(self.relative, info, self._ctx))
        self._writer = None


class _LakeStream:
    """A pack's output stream whose failures are LakeWriteError, told apart from a landing
    file's own failures as its chunks are encoded."""

    def __init__(self, raw: BinaryIO, relative: str) -> None:
        self._raw, self._relative = raw, relative

    def write(self, data: bytes) -> int:
        try:
            return self._raw.write(data)
        except Exception as exc:
            raise LakeWriteError(f"cannot write pack {self._relative}: {exc}") from exc


class _ElementRows:
    """The element rows of a task's instances.

    Each instance's rows come as an Arrow batch (made as its header is read, so a value that
    does not fit the schema fails that file alone); every `BATCH_ROWS` rows the batches are
    combined into one table, their instances named in it, so many small batches do not add
    up in memory.
    """

    BATCH_ROWS = 32768

    def __init__(self, run_id: str) -> None:
        self._run_id = run_id
        self._batches: list[pa.RecordBatch] = []
        self._names: list[tuple[str, str | None]] = []  # each batch's instance_id and SOP UID
        self._rows = 0
        self._instances = 0
        self._tables: list[pa.Table] = []

    def add(self, rows: pa.RecordBatch, instance_id: str, sop: str | None) -> None:
        """Add one instance's element rows (`ELEMENT_SCHEMA`), naming the instance."""
        self._batches.append(rows)
        self._names.append((instance_id, sop))
        self._rows += rows.num_rows
        self._instances += 1
        if self._rows >= self.BATCH_ROWS:
            self._flush()

    def _flush(self) -> None:
        if not self._batches:
            return
        rows = pa.Table.from_batches(self._batches, schema=ELEMENT_SCHEMA).combine_chunks()
        # Each instance's names once, then taken for each of its rows: one Arrow call each
        counts = [batch.num_rows for batch in self._batches]
        at = pa.array(np.repeat(np.arange(len(counts)), counts))
        ids, sops = (
            pa.array(list(names), pa.string()).take(at) for names in zip(*self._names, strict=True)
        )
        run = pa.repeat(pa.scalar(self._run_id, pa.string()), rows.num_rows)
        columns = [ids, sops, *rows.columns, run]
        self._tables.append(pa.Table.from_arrays(columns, schema=schemas.ELEMENTS))
        self._batches, self._names, self._rows = [], [], 0

    def table(self) -> pa.Table | None:
        """The rows of every instance added so far; None when no instance was added."""
        if not self._instances:
            return None
        self._flush()
        return pa.concat_tables(self._tables) if self._tables else schemas.ELEMENTS.empty_table()


class _Task:
    def __init__(self, task: int, attempt: int, ctx: TaskContext, encoder: _Encoder) -> None:
        self.ctx = ctx
        self.encoder = encoder
        self.layout = LakeLayout(ctx.lake)
        self.lake_fs = filesystem_for(ctx.lake, ctx.config.hdfs)
        self.result = TaskResult(task, attempt)
        # Per partition directory: (sort key, the instance's row, checked by `_check_instance`)
        self.instances: dict[str, list[tuple[tuple[Any, ...], dict[str, Any]]]] = defaultdict(list)
        self.frames: list[dict[str, Any]] = []
        self.elements = _ElementRows(ctx.run_id)
        self.identities: list[dict[str, Any]] = []
        self.seen_sha: set[str] = set()
        self.keyring = Keyring.from_bytes(ctx.keyring)
        self.deid = deid_options(ctx.config)
        self.secret = self.keyring.secret_for(PSEUDONYM_PURPOSE) if self.deid else b""
        # Paths are pseudonymised whether or not headers are: a landing path is not a header
        self.paths = PathRows(path_secret(self.keyring), ctx.run_id)
        self.packs = _Packs(self)
        self.held: list[_Held] = []

    def timed(self, stage: str) -> contextlib.AbstractContextManager[None]:
        return timed(self.result.seconds, stage)

    def source_row(
        self,
        info: FileInfo,
        sha: str | None,
        outcome: str,
        instance_id: str | None = None,
        sop: str | None = None,
    ) -> None:
        self.finish_held()  # a task records its files in order: the held ones come first
        self.result.sources.append(
            {
                "source_path_id": self.paths.id_of(info.path),
                "source_size": info.size,
                "source_mtime": _ts(info.mtime_ms),
                "source_sha256": sha,
                "outcome": outcome,
                "instance_id": instance_id,
                "SOPInstanceUID": sop,
                "ingest_run_id": self.ctx.run_id,
                "seen_at": _ts(self.ctx.started_ms),
            }
        )

    def reject(
        self,
        info: FileInfo,
        reason: str,
        message: str,
        *,
        data: bytes | None = None,
        sha: str | None = None,
        landing_fs: FileSystem | None = None,
    ) -> None:
        """Record a bad input, with an encrypted copy of it in quarantine when one is asked for
        (``data``, or ``landing_fs`` to read it from) and it is within
        ``ingest.quarantine_max_bytes``; a copy that cannot be made (a landing file gone or
        changing while copied, a name the lake refuses) leaves the row without one, saying why.
        ``message`` names tags, offsets, lengths and limits, never values nor any part of the
        landing path (`describe`, `unreadable`)."""
        self.finish_held()  # see source_row
        error_id = secrets.token_hex(16)
        copy = data is not None or landing_fs is not None
        quarantine = None
        try:
            if copy:
                quarantine = self.quarantine_copy(info, error_id, data, landing_fs)
        except Exception as exc:  # noqa: BLE001 - a lake that fails for good fails the pack writes
            message = f"{message}; no quarantine copy: {describe(exc, info.path)}"
            copy = False  # failed: the next run tries the file again
        self.result.errors.append(
            {
                "error_id": error_id,
                "source_path_id": self.paths.id_of(info.path),
                "source_size": info.size,
                "source_mtime": _ts(info.mtime_ms),
                "source_sha256": sha,
                "reason": reason,
                "message": message,
                "quarantine_path": quarantine,
                "ingest_run_id": self.ctx.run_id,
                "recorded_at": _ts(self.ctx.started_ms),
            }
        )
        self.source_row(info, sha, SourceOutcome.QUARANTINED if copy else SourceOutcome.FAILED)

    def quarantine_copy(
        self, info: FileInfo, error_id: str, data: bytes | None, landing_fs: FileSystem | None
    ) -> str | None:
        """Seal the rejected file into ``quarantine/<run>/<error_id>.pack`` (staged); None
        when it is over ``ingest.quarantine_max_bytes`` or its landing copy cannot be read."""
        limit = self.ctx.config.ingest.quarantine_max_bytes
        if (len(data) if data is not None else info.size) > limit:
            return None
        relative = copy_path(self.ctx.run_id, error_id)
        target = staged(self.layout, self.ctx.run_id, relative)
        with self.timed("quarantine"), contextlib.ExitStack() as reading:
            if data is not None:
                blocks: Iterable[bytes] = (
                    data[at : at + BLOCK] for at in range(0, len(data), BLOCK)
                )
            else:  # not held in memory: streamed across, and bounded as it is read
                assert landing_fs is not None
                blocks = _bounded_blocks(reading, landing_fs, info.path, limit)
            try:
                with self.lake_fs.open_write(target) as out:
                    sealed = write_copy(out, error_id, self.keyring, blocks)
            except _NoCopy:
                self.lake_fs.delete(target)
                return None
        self.result.staged.append(relative)
        self.result.packs.append(pack_row(relative, sealed, self.ctx))
        return relative

    def take(
        self, info: FileInfo, landing_fs: FileSystem, reads: ReadAhead, stored: frozenset[str]
    ) -> None:
        """Ingest one landing entry behind the task's firewall (`firewall`)."""
        if info.problem is not None:
            self.refuse(info)
            return
        with self.firewall(info, landing_fs=landing_fs):
            self.ingest_file(info, landing_fs, reads, stored)

    @contextlib.contextmanager
    def firewall(
        self,
        info: FileInfo,
        *,
        data: bytes | None = None,
        sha: str | None = None,
        landing_fs: FileSystem | None = None,
    ) -> Iterator[None]:
        """Whatever goes wrong with a file (reading, parsing, de-identifying, encoding, its
        rows) becomes its errors row (with its SHA-256 ``sha`` where known), its copy from
        ``data`` or read again from ``landing_fs``, and the task goes on. Only the lake failing
        (`LakeWriteError`, `KeyringError`) stops the task."""
        try:
            yield
        except (LakeWriteError, KeyringError):
            raise
        except Exception as exc:  # noqa: BLE001 - the firewall: one file never stops a run
            message = describe(exc, info.path)
            log.warning("run %s: internal error on a landing file: %s", self.ctx.run_id, message)
            self.reject(
                info,
                RejectReason.INTERNAL_ERROR,
                message,
                data=data,
                sha=sha,
                landing_fs=landing_fs,
            )

    def refuse(self, info: FileInfo) -> None:
        """Record an entry the listing found unreadable as a file: no copy, and ``skipped``
        (seen, like a file, once per path, size and mtime) unless the next run should look
        again (`RETRIED`: ``failed``)."""
        assert info.problem is not None
        self.reject(info, info.problem, ENTRY_PROBLEMS[info.problem])
        # reject() records what it cannot copy as failed; its row is the last one
        if info.problem not in RETRIED:
            self.result.sources[-1]["outcome"] = SourceOutcome.SKIPPED

    def ingest_file(
        self, info: FileInfo, landing_fs: FileSystem, reads: ReadAhead, stored: frozenset[str]
    ) -> None:
        cfg = self.ctx.config
        how = _read_as(info, cfg.ingest)
        if how == "too_large":
            self.reject(
                info,
                "too_large",
                f"{info.size} bytes is over ingest.max_file_bytes={cfg.ingest.max_file_bytes}",
                landing_fs=landing_fs,
            )
            return
        streamed = how == "streamed"
        with contextlib.ExitStack() as reading:
            split = None
            if streamed:
                # Its header before its hash: a file that is no DICOM, or whose header is
                # broken, is refused having read its header, not up to max_file_bytes of it
                read = reading.enter_context(_SequentialReads(landing_fs, info.path))
                try:
                    with self.timed("parse"):
                        split = split_stream(
                            read, info.size, limit=cfg.ingest.max_chunk_bytes, block=READ_BLOCK
                        )
                except DicomParseError as exc:
                    failure = _header_failure(info, landing_fs, exc)
                    self.refuse_split(info, failure, landing_fs=landing_fs)
                    return
                read.release()  # idle while the file is hashed; its frames open it again
            try:
                data, sha, size = self.read_source(info, landing_fs, reads, streamed)
            except StorageError as exc:
                self.reject(info, "unreadable", unreadable(exc))
                return
            self.result.bytes_read += size
            if size != info.size:
                self.reject(
                    info,
                    "changed_while_reading",
                    f"listed with {info.size} bytes, read {size}",
                    data=data,
                    landing_fs=landing_fs,
                )
                return
            if any(held.sha == sha for held in self.held):
                self.finish_held()  # a duplicate only of a file that was stored
            if sha in stored or sha in self.seen_sha:
                self.source_row(info, sha, "duplicate", instance_id=sha)
                return
            try:
                if split is None:
                    with self.timed("parse"):
                        split = split_instance(data, max_inflated=cfg.ingest.max_chunk_bytes)
                with self.timed("header"):
                    records = header_records(split, self.secret, self.deid)
                if data is not None and len(data) <= HELD_BYTES:
                    self.hold(_Held(info, data, sha, split, records))
                    return
                self.store(info, sha, split, records, streamed)  # reads a streamed file's frames
            except DicomParseError as exc:
                # store() keeps no row of a file it gives up on (the chunks it sealed stay in
                # the pack, referenced by no row)
                self.refuse_split(info, exc, data=data, sha=sha, landing_fs=landing_fs)

    def refuse_split(
        self,
        info: FileInfo,
        exc: DicomParseError,
        *,
        data: bytes | None = None,
        sha: str | None = None,
        landing_fs: FileSystem | None = None,
    ) -> None:
        """Record a file that did not split (or whose streamed frames could not be read)."""
        if exc.reason == "unreadable":  # no copy: the next run tries it again
            self.reject(info, exc.reason, exc.message)
            return
        message = exc.message
        if exc.over_limit:  # a part too big to hold, a deflated file inflating past it
            message += " (ingest.max_chunk_bytes)"
        self.reject(info, exc.reason, message, data=data, sha=sha, landing_fs=landing_fs)

    def read_source(
        self, info: FileInfo, landing_fs: FileSystem, reads: ReadAhead, streamed: bool
    ) -> tuple[bytes | None, str, int]:
        """The file's bytes (None when streamed: hashed block by block), SHA-256 and size."""
        if not streamed:
            with self.timed("read"):  # the wait: the read itself may have run ahead
                data = reads.read(info)
            with self.timed("hash"):
                return data, hashlib.sha256(data).hexdigest(), len(data)
        digest, size = hashlib.sha256(), 0
        # One stream, not ranged reads: on HDFS each of those is two round trips (2 GB: 3.5 s
        # streamed, 10-13 s in 8 MiB reads)
        with landing_fs.open_read(info.path) as src:
            while True:
                with self.timed("read"):
                    block = src.read(min(READ_BLOCK, info.size + READ_MARGIN - size))
                if not block:
                    return None, digest.hexdigest(), size
                with self.timed("hash"):
                    digest.update(block)
                size += len(block)

    def store(
        self,
        info: FileInfo,
        sha: str,
        split: SplitInstance,
        records: HeaderRecords,
        streamed: bool,
        encoded: _Encoded | None = None,
    ) -> None:
        """Seal the chunks of one instance (``encoded``, or encoded now) and keep its rows.

        A streamed file's frames are read here, as they are sealed, and hashed again: if that
        hash is not the first reading's, DicomParseError (changed_while_reading) is raised
        before any row of the file is kept.
        """
        sop = records.values["SOPInstanceUID"]
        chunks = self.seal(info, sha, split, streamed, sop, encoded)
        with self.timed("rows"):
            self.keep_rows(info, sha, split, records, chunks)
        self.result.header_paths[records.path] += 1
        self.seen_sha.add(sha)

    def hold(self, held: _Held) -> None:
        self.held.append(held)
        if len(self.held) >= HELD_FILES or sum(len(h.data) for h in self.held) >= HELD_BYTES:
            self.finish_held()

    def finish_held(self) -> None:
        """Encode the chunks of every held file, then seal them and keep the rows, file by
        file, each behind its own firewall."""
        held, self.held = self.held, []
        with self.timed("encode"):
            for file in held:
                try:
                    file.encoded = self.encoder.encode(list(self.chunks(file.split)))
                except Exception as exc:  # noqa: BLE001 - raised again behind its firewall
                    file.encoded = exc
        for file in held:
            with self.firewall(file.info, data=file.data, sha=file.sha):
                if isinstance(file.encoded, Exception):
                    raise file.encoded
                self.store(file.info, file.sha, file.split, file.records, False, file.encoded)
            # An error held here and its traceback, which holds this frame, would be a cycle:
            # freed only by the collector, paused while the task runs (`_collector_paused`)
            file.encoded = None

    def chunks(self, split: SplitInstance) -> Iterator[_Chunk]:
        """The instance's chunks, in order."""
        codec = "store" if split.encapsulated else self.ctx.config.pixels.codec
        yield "prefix", 0, split.prefix, None, "auto"
        for i, frame in enumerate(split.frames, 1):
            yield "frame", i, frame, split.frame_spec, codec
        yield "suffix", 0, split.suffix, None, "auto"

    def encode(self, group: list[_Chunk]) -> _Encoded:
        """Each chunk of ``group`` (of a file not held) encoded, all before any is sealed."""
        with self.timed("encode"):
            return self.encoder.encode_at_once(group)

    def seal(
        self,
        info: FileInfo,
        sha: str,
        split: SplitInstance,
        streamed: bool,
        sop: str | None,
        encoded: _Encoded | None,
    ) -> list[dict[str, Any]]:
        """Seal the instance's chunks (prefix, frames, suffix) into packs, as ``encoded`` or
        encoded `HELD_BYTES` at a time, each group before any of it is sealed (as held files
        are); return their frames rows. The sealing (SHA-256, AES-GCM, the pack's writes) is
        the ``encrypt`` stage."""
        packs, run_id = self.packs, self.ctx.run_id
        reread = hashlib.sha256() if streamed else None
        rows = []
        groups: Iterable[_Encoded] = (
            [encoded]
            if encoded is not None
            else map(self.encode, _groups(self.chunks(split), HELD_BYTES))
        )
        for (kind, index, raw, _, _), coded in itertools.chain.from_iterable(groups):
            with self.timed("encrypt"):
                if streamed or kind == "prefix":
                    # A file held whole goes into one pack; a streamed one rolls over between
                    # its chunks, so its frames may go on in the task's next packs
                    writer = packs.writer_for(len(raw) if streamed else info.size)
                if reread is not None:
                    reread.update(raw)
                rec = writer.add_encoded(
                    instance=sha, kind=kind, index=index, raw=raw, encoded=coded
                )
            rows.append(
                {
                    "instance_id": sha,
                    "SOPInstanceUID": sop,
                    "chunk_kind": kind,
                    "frame_number": index,
                    "pack_path": packs.relative,
                    "offset": rec.offset,
                    "length": rec.length,
                    "codec": rec.codec,
                    "kek_id": packs.kek_id,
                    "raw_length": rec.raw_length,
                    "raw_sha256": rec.raw_sha256,
                    "ingest_run_id": run_id,
                }
            )
        if reread is not None and reread.hexdigest() != sha:
            raise DicomParseError(
                "changed_while_reading",
                f"SHA-256 {reread.hexdigest()} when split, {sha} when first read",
            )
        return rows

    def keep_rows(
        self,
        info: FileInfo,
        sha: str,
        split: SplitInstance,
        records: HeaderRecords,
        chunks: list[dict[str, Any]],
    ) -> None:
        """Keep the instance's rows (instances, frames, elements, identities, ledger)."""
        run_id = self.ctx.run_id
        frames = [row for row in chunks if row["chunk_kind"] == "frame"]
        values, identities = dict(records.values), records.identities
        if identities is not None:
            identities.update(
                instance_id=sha, ingest_run_id=run_id, ingested_at=_ts(self.ctx.started_ms)
            )
        sop = values["SOPInstanceUID"]
        study_date = values.get("StudyDate")
        stored_pixels = sum(row["length"] for row in frames)
        stored_total = sum(row["length"] for row in chunks)
        values.update(
            {
                "Modality": schemas.partition_text(values.get("Modality")),
                "study_year": study_date.year if study_date is not None else None,
                "header_json": records.header_json,
                "pack_path": chunks[0]["pack_path"],  # the prefix's pack
                "frame_chunks": len(split.frames),
                "pixel_codec": ",".join(sorted({row["codec"] for row in frames})) or None,
                "raw_pixel_bytes": sum(row["raw_length"] for row in frames),
                "stored_pixel_bytes": stored_pixels,
                "stored_bytes": stored_total,
                "instance_id": sha,
                "source_path_id": self.paths.id_of(info.path),
                "source_size": info.size,
                "source_mtime": _ts(info.mtime_ms),
                "source_sha256": sha,
                "ingest_run_id": run_id,
                "ingested_at": _ts(self.ctx.started_ms),
                "sop_uid_from_meta": split.sop_uid_from_meta,
            }
        )
        # Each row is checked now, so a value that does not fit its column fails this file
        # alone; the element rows are the last to be converted, and the first kept.
        _check_instance(values)
        if identities is not None:
            _check_identities(identities)
        directory = partition_dir(values)
        self.elements.add(records.elements, sha, sop)
        self.instances[directory].append((_instance_order(values), values))
        self.frames.extend(chunks)
        if identities is not None:
            self.identities.append(identities)
            self.result.deid_removed.update(identities["deid_counts"])
        self.result.bytes_stored += stored_total
        self.result.sop_uid_from_meta += split.sop_uid_from_meta
        self.source_row(info, sha, "ingested", instance_id=sha, sop=sop)

    def write_fragments(self, close_packs: Callable[[], None]) -> None:
        """Write the task's table fragments, and close its last pack with ``close_packs``."""
        r = self.result
        name = f"part-{self.ctx.run_id}-t{r.task:05d}-a{r.attempt}.parquet"
        fragments: list[tuple[str, pa.Table]] = []
        for directory, keyed in sorted(self.instances.items()):
            rows = [row for _, row in sorted(keyed, key=lambda row: row[0])]
            # Converted all at once (0.016 ms a row): each passed `_check_instance`
            table = pa.Table.from_pylist(rows, schema=_INSTANCE_FILE_SCHEMA)
            fragments.append((f"tables/instances/{directory}/{name}", table))
        if self.frames:
            fragments.append(
                (f"tables/frames/{name}", pa.Table.from_pylist(self.frames, schema=schemas.FRAMES))
            )
        elements = self.elements.table()
        if elements is not None:
            fragments.append((f"tables/elements/{name}", elements))
        target = functools.partial(staged, self.layout, self.ctx.run_id)
        writes = {
            relative: functools.partial(write_table, self.lake_fs, target(relative), table)
            for relative, table in fragments
        }
        restricted = {"identities": self.identities, "paths": self.paths.rows()}
        for table, rows in restricted.items():
            if rows:
                relative = f"restricted/{table}/{name}"
                writes[relative] = functools.partial(
                    write_rows, self.lake_fs, target(relative), table, rows, self.keyring
                )
        with self.timed("write"):
            # One instances file per partition: many small files, each a slow create on HDFS.
            # The last pack closes meanwhile (its index and trailer: one more slow close).
            self.lake_fs.run_all([close_packs, *writes.values()])
            r.staged.extend(writes)


@contextlib.contextmanager
def _collector_paused() -> Iterator[None]:
    """No cyclic garbage collection meanwhile. A task keeps its rows until it ends, and makes
    next to no cyclic garbage (~1,000 objects in 3,000 files): the collector's passes over the
    growing rows freed nothing and cost 4-7% of a small file's time."""
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


def _header_failure(
    info: FileInfo, landing_fs: FileSystem, exc: DicomParseError
) -> DicomParseError:
    """Why a streamed file's header did not split: ``changed_while_reading`` where the file no
    longer has its listed size (a header cut short by a copy still under way), else ``exc``."""
    if exc.reason == "unreadable":  # a read that failed: the next run tries it again
        return exc
    try:
        now = landing_fs.status(info.path)
    except StorageError:
        return exc
    if now is not None and now.size == info.size:
        return exc
    found = "gone" if now is None else f"{now.size} bytes"
    return DicomParseError(
        "changed_while_reading", f"listed with {info.size} bytes, {found} when its header was read"
    )


def _bounded_blocks(
    stack: contextlib.ExitStack, landing_fs: FileSystem, path: str, limit: int
) -> Iterator[bytes]:
    """A landing file's bytes in `BLOCK`s; _NoCopy once it passes ``limit`` bytes, or
    when it cannot be read."""
    try:
        src = stack.enter_context(landing_fs.open_read(path))
        total = 0
        while block := src.read(BLOCK):
            total += len(block)
            if total > limit:
                raise _NoCopy
            yield block
    except StorageError as exc:
        raise _NoCopy from exc


_INSTANCE_FILE_SCHEMA = pa.schema(
    [f for f in schemas.INSTANCES if f.name not in schemas.INSTANCE_PARTITIONS]
)
_check_instance = RowCheck(_INSTANCE_FILE_SCHEMA)
_check_identities = RowCheck(schemas.IDENTITIES)


def _instance_order(values: dict[str, Any]) -> tuple[bool, Any, str]:
    """Where an instance goes in its fragment: by study date (none last), then series."""
    date = values.get("StudyDate")
    return (date is None, date or datetime.min.date(), values.get("SeriesInstanceUID") or "")


_TOLD_AS_IS = (DicomLakeError, RecursionError, MemoryError)
"""Errors whose message names no value of the file (dicomlake's own, and fixed texts); others,
such as a conversion error quoting the value that did not fit, are told by type only."""


def unreadable(exc: StorageError) -> str:
    """The message of a landing file that could not be read (`StorageError.detail`: no path)."""
    return f"cannot read the file: {exc.detail}"


def describe(exc: BaseException, path: str) -> str:
    """An unexpected error with the landing file at ``path``, for its errors row: its type,
    where in dicomlake it was raised, and its message only for `_TOLD_AS_IS` kinds (without
    the path, see `without_path`)."""
    text = type(exc).__name__
    if isinstance(exc, StorageError):
        text += f": {exc.detail}"
    elif isinstance(exc, _TOLD_AS_IS) and str(exc):
        text += f": {without_path(str(exc), path)[:300]}"
    frames = [f for f in traceback.extract_tb(exc.__traceback__) if "dicomlake" in f.filename]
    if frames:
        text += f" (in {frames[-1].name}, {Path(frames[-1].filename).name}:{frames[-1].lineno})"
    return text


def _read_as(info: FileInfo, limits: IngestConfig) -> str:
    """How a landing file is taken: "too_large" (quarantined unread), "streamed" (over
    ``ingest.stream_bytes``: never held whole) or "whole"."""
    if info.size > limits.max_file_bytes:
        return "too_large"
    return "streamed" if info.size > limits.stream_bytes else "whole"


class _SequentialReads(contextlib.AbstractContextManager["_SequentialReads"]):
    """Ranged reads of a landing file, served from one open stream while each read starts where
    the last one ended (as a split reads: header, frames in order): on HDFS a ranged read is two
    round trips and a new DataNode stream, so 2 GB in 8 MiB reads took 10-13 s, against 3.5 s
    as one stream. A read elsewhere opens the stream again there; leaving closes it.

    A read that fails is DicomParseError("unreadable"), told apart from a failed write to the
    lake, which fails the task.
    """

    def __init__(self, landing_fs: FileSystem, path: str) -> None:
        self._fs, self._path = landing_fs, path
        self._open = contextlib.ExitStack()
        self._stream: ReadStream | None = None
        self._at = -1  # the stream's offset in the file

    def __call__(self, offset: int, length: int) -> bytes:
        """Bytes ``[offset, offset + length)``, fewer where the file ends."""
        parts: list[bytes] = []
        try:
            if self._stream is None or offset != self._at:
                self._open.close()
                self._stream = self._open.enter_context(self._fs.open_read(self._path, offset))
                self._at = offset
            while length > 0 and (part := self._stream.read(length)):
                parts.append(part)
                length -= len(part)
                self._at += len(part)
        except StorageError as exc:
            raise DicomParseError("unreadable", unreadable(exc)) from exc
        return b"".join(parts)

    def release(self) -> None:
        """Close the stream; the next read opens it again, where that read starts."""
        self._open.close()
        self._stream = None

    def __exit__(self, *exc_info: object) -> None:
        self._open.close()


def process_task(
    task: int,
    attempt: int,
    files: list[FileInfo],
    landing: str,
    ctx: TaskContext,
    stored: frozenset[str],
) -> TaskResult:
    """Ingest ``files`` (one task's share); ``stored`` is the content the lake already has."""
    pixels = ctx.config.pixels
    encoder = _Encoder(pixels.encode_threads, pixels.verify)
    work = _Task(task, attempt, ctx, encoder)
    with work.timed("start"):
        # In a stage of its own rather than in the first file's; nothing left to do where
        # Spark's worker daemon did it before forking this worker (dicomlake.spark.daemon)
        warm_up()
    landing_fs = filesystem_for(landing, ctx.config.hdfs, landing=True)
    # Local reads come from the page cache: there is no wait to overlap, only a thread to pay.
    remote = landing_fs.remote
    ahead = (
        [f for f in files if f.problem is None and _read_as(f, ctx.config.ingest) == "whole"]
        if remote
        else []
    )
    # pydicom checks every value against its VR's rules as it reads and sets it, only to warn;
    # the lake keeps values as read either way, so the checks are skipped (pydicom's own switch)
    with (
        contextlib.closing(encoder),
        ReadAhead(landing_fs, ahead, READ_AHEAD_BYTES) as reads,
        disable_value_validation(),
        _collector_paused(),
    ):
        for info in files:
            work.take(info, landing_fs, reads, stored)
        work.finish_held()
    work.write_fragments(work.packs.close)
    return work.result
