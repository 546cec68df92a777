"""One writer at a time: the lock every writing command takes on a lake or backup repository.

::

    <root>/_lock                     {"run_id", "host", "pid", "process", "command", "started",
                                     "stale_seconds"}; made with an exclusive publish, never
                                     rewritten while held
    <root>/_locks/<run>.heartbeat    {"run_id", "heartbeat"}; rewritten every
                                     lock.heartbeat_seconds by a thread of the holder
    <root>/_locks/<run>.end[.<n>]    made (exclusively) by whoever removes <run>'s lock

The lock is held from the exclusive publish of ``_lock`` until it is removed. A lock whose
heartbeat file is older than ``lock.stale_seconds`` is stale: its holder died (or stalled that
long). That is the longer of the taker's ``lock.stale_seconds`` and the holder's own, from its
record, as the holder's lease (:meth:`Lock.check`) runs by its own. Ages are measured by the
filesystem's own clock (the mtime of a file the taker has just written), never by comparing
two hosts' clocks. A holder that ran under the very kernel and PID
namespace of its taker (the same boot id and namespace in ``process``), and whose process is
gone (no process has its pid, or the one that has it started at another time), is taken over
at once, without waiting for its heartbeat to age: a killed run's next run need not wait
``stale_seconds``. A hostname alone would not tell: two machines, or two containers on one,
may share one.

Removing ``<run>``'s lock — its holder's release or a takeover — first creates
``_locks/<run>.end`` exclusively, so exactly one process removes it, and only while ``_lock``
still names ``<run>``: of two takers of one stale lock one wins, the other is busy. A remover
that died between its marker and the removal is judged as a holder is (its process gone here,
or its marker older than the stale time): the next remover makes ``<run>.end.1`` instead, and
so on, so a lock is never left that nobody may remove.

A holder checks its lease (:meth:`Lock.check`) before its commit point: the lock still names
its run and its last heartbeat is younger than ``stale_seconds - heartbeat_seconds``, so no
taker can have judged it stale. A holder that stalled past that refuses to commit
(:class:`~dicomlake.errors.LockLostError`), so a takeover's recovery never races a live run.
Past the commit point it checks again before each step of finishing the run, and stops once a
taker may be finishing it; a step both were in at once is one whose repeat changes nothing
(`dicomlake.lake.commit`).
"""

from __future__ import annotations

import contextlib
import functools
import json
import logging
import math
import os
import re
import secrets
import socket
import threading
import time
from collections.abc import Iterator
from datetime import datetime, timezone
from pathlib import Path

from dicomlake.config import MAX_STALE_SECONDS, LockConfig
from dicomlake.errors import (
    LakeError,
    LockBusyError,
    LockLostError,
    PublishConflictError,
    StorageError,
)
from dicomlake.storage import FileSystem, join

log = logging.getLogger(__name__)

TAKEOVER_TRIES = 3
"""Rounds of read-judge-take before a taker gives up as busy (each round sees a changed lock)."""
END_MARKERS = 8
"""End markers of one lock's removal (`Lock._end`): beyond, its removers keep dying half-way."""


# What a run id may be: one plain file name (it names the files in _locks/)
_RUN_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}")


def new_run_id(now: datetime) -> str:
    """Sortable and unique: UTC time plus random bits (names a run and the lock it holds)."""
    return now.strftime("%Y%m%dT%H%M%SZ") + "-" + secrets.token_hex(3)


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def describe(owner: dict[str, object]) -> str:
    """The holder named in messages: run, command, host and pid, and when it started."""
    return (
        f"run {owner.get('run_id')} ({owner.get('command')} on {owner.get('host')}, "
        f"pid {owner.get('pid')}, started {owner.get('started')})"
    )


class Lock:
    """A held lock (see the module docstring); made by :func:`holding`."""

    def __init__(
        self, fs: FileSystem, root: str, run_id: str, command: str, config: LockConfig
    ) -> None:
        self.fs, self.root, self.run_id, self.config = fs, root, run_id, config
        self.owner = {
            "run_id": run_id,
            "host": socket.gethostname(),
            "pid": os.getpid(),
            "process": _this_process(),
            "command": command,
            "started": _now(),
            "stale_seconds": config.stale_seconds,
        }
        self._last_beat = 0.0  # time.monotonic() of the last heartbeat written
        self._lost: str | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    @property
    def uri(self) -> str:
        return join(self.root, "_lock")

    def _marker(self, run_id: str, kind: str) -> str:
        return join(self.root, "_locks", f"{run_id}.{kind}")

    # -- taking ---------------------------------------------------------------------------------

    def acquire(self) -> None:
        """Take the lock, taking over a stale one; raises LockBusyError naming the holder."""
        self._beat()  # a lock never exists without its heartbeat
        new = self._marker(self.run_id, "new")
        contended, unseen = False, 0
        try:
            for _ in range(TAKEOVER_TRIES):
                self.fs.write_bytes(new, json.dumps(self.owner).encode())
                try:
                    self.fs.publish(new, self.uri)
                    break
                except PublishConflictError:
                    contended = True
                    unseen += not self._take_over_if_stale()
            else:
                if unseen == TAKEOVER_TRIES:  # in the way each time, yet never a lock to read
                    raise LakeError(
                        f"{self.uri} is in the way but no lock (a dangling link, or not a "
                        f"file): if no dicomlake command runs on {self.root}, delete it by hand"
                    )
                raise LockBusyError(f"{self.root} is locked and changed hands while checked")
        except BaseException:
            self.fs.delete(new)
            self.fs.delete(self._marker(self.run_id, "heartbeat"))
            raise
        if contended:  # the lease runs from here: taking over may have taken a while
            self._beat()  # (else from the first beat, a write and a rename ago: 0.4 s on HDFS)
        self._thread = threading.Thread(
            target=self._heartbeats, name=f"dicomlake-lock-{self.run_id}", daemon=True
        )
        self._thread.start()
        log.info("lock %s taken by run %s", self.uri, self.run_id)

    def _take_over_if_stale(self) -> bool:
        """Remove the current lock if stale (True), else raise LockBusyError; False when there
        was no lock to read (released meanwhile: try again)."""
        owner = self._read_owner()
        if owner is None:
            return False
        holder = str(owner.get("run_id"))
        age = self._age_of(holder)
        gone = _gone(owner)
        stale = _stale_seconds(owner, self.config.stale_seconds)
        if not gone and age is not None and age <= stale:
            raise LockBusyError(
                f"{self.root} is busy: locked by {describe(owner)}, heartbeat "
                f"{max(age, 0):.0f} s ago; try again when it has finished (a holder that died "
                "is taken over at once where it ran on this machine, else once its heartbeat "
                f"is {stale:g} s old, the longer of its lock.stale_seconds and this one's, in "
                f"{stale - age:.0f} s)"
            )
        ended = self._end(holder)
        if ended is False:
            raise LockBusyError(
                f"{self.root} is busy: another command is taking over its lock (one that died "
                f"doing so is passed over once its marker in _locks/ is {stale:g} s old)"
            )
        if ended is None:
            return True  # it changed hands meanwhile: judge the new holder
        log.warning(
            "taking over the stale lock of %s in %s: %s",
            describe(owner),
            self.root,
            "its process is gone"
            if gone
            else f"no heartbeat for {'?' if age is None else f'{age:.0f}'} s (over {stale:g} s)",
        )
        return True

    def _age_of(self, holder: str) -> float | None:
        """Seconds since ``holder``'s heartbeat by the filesystem's clock (None: no heartbeat)."""
        return self._age(self._marker(holder, "heartbeat"), self.uri)

    def _age(self, *uris: str) -> float | None:
        """Seconds since the first of ``uris`` that exists was written, by the filesystem's
        clock (None: none exists)."""
        mine = self.fs.status(self._marker(self.run_id, "heartbeat"))
        for uri in uris:
            info = self.fs.status(uri)
            if info is not None and mine is not None:
                return (mine.mtime_ms - info.mtime_ms) / 1000
        return None

    def _read_owner(self) -> dict[str, object] | None:
        """Who holds the lock; None when there is no lock (released while we looked)."""
        tries = TAKEOVER_TRIES
        while True:
            try:
                data = self.fs.read(self.uri)
            except StorageError:
                # Gone, or replaced by another command's lock while read (on HDFS the file is
                # opened, then read from a DataNode): read the new one.
                tries -= 1
                if not self.fs.exists(self.uri):
                    return None
                if not tries:
                    raise
                continue
            try:
                record = json.loads(data)
            except (ValueError, RecursionError):  # nested past the parser's depth too
                record = None
            # Its run id names the holder's marker files: one plain name, never a path
            run_id = record.get("run_id") if isinstance(record, dict) else None
            if isinstance(run_id, str) and _RUN_ID.fullmatch(run_id):
                return dict(record)
            raise LakeError(
                f"{self.uri} is not a lock record: if no dicomlake command runs on "
                f"{self.root}, delete it by hand"
            )

    def _end(self, holder: str) -> bool | None:
        """Remove ``holder``'s lock: True when done, False when another process is removing it,
        None when the lock no longer names ``holder`` (or its remover finished meanwhile)."""
        tmp = self._marker(f"{holder}.end.{self.run_id}", "new")
        ends: list[str] = []
        for n in range(END_MARKERS):
            ends.append(self._marker(holder, f"end.{n}" if n else "end"))
            self.fs.write_bytes(tmp, json.dumps(self.owner).encode())
            try:
                self.fs.publish(tmp, ends[-1])
                break
            except PublishConflictError:
                self.fs.delete(tmp)
                dead = self._remover_died(ends[-1])
                if not dead:
                    return None if dead is None else False
        else:
            raise LakeError(
                f"{self.uri}: {END_MARKERS} commands died while removing this lock: if no "
                f"dicomlake command runs on {self.root}, delete it and {join(self.root, '_locks')}"
                " by hand"
            )
        # Only the end marker's maker removes a lock naming ``holder``: it cannot change under us.
        owner = self._read_owner()
        named = owner is not None and owner.get("run_id") == holder
        if named:
            self.fs.delete(self.uri)
            self.fs.delete(self._marker(holder, "heartbeat"))
        for end in ends:  # its own, and those of removers that died
            self.fs.delete(end)
        return True if named else None

    def _remover_died(self, end: str) -> bool | None:
        """Whether the maker of end marker ``end`` died before removing the lock, judged as a
        holder is: its process is gone here, or the marker is older than the stale time. None
        when the marker is gone: its maker finished."""
        try:
            record = json.loads(self.fs.read(end))
        except StorageError:
            if not self.fs.exists(end):
                return None
            record = None
        except (ValueError, RecursionError):
            record = None
        maker = record if isinstance(record, dict) else {}
        age = self._age(end)
        if age is None:
            return None
        return _gone(maker) or age > _stale_seconds(maker, self.config.stale_seconds)

    # -- holding --------------------------------------------------------------------------------

    def _beat(self) -> None:
        beat = {"run_id": self.run_id, "heartbeat": _now()}
        self.fs.write_bytes(self._marker(self.run_id, "heartbeat"), json.dumps(beat).encode())
        self._last_beat = time.monotonic()

    def _heartbeats(self) -> None:
        while not self._stop.wait(self.config.heartbeat_seconds):
            try:
                if time.monotonic() - self._last_beat > self.config.stale_seconds:
                    self._lose("its heartbeat stalled past lock.stale_seconds")
                    return
                owner = self._read_owner()
                if owner is None or owner.get("run_id") != self.run_id:
                    self._lose(f"the lock now names {owner and describe(owner)}")
                    return
                self._beat()
            except Exception as exc:  # noqa: BLE001 - the lease runs out if this persists
                log.warning("lock %s: heartbeat failed, will retry: %s", self.uri, exc)

    def _lose(self, why: str) -> None:
        self._lost = why
        log.error("run %s lost its lock on %s: %s", self.run_id, self.root, why)

    def check(self, *, committed: bool = False) -> None:
        """Raise LockLostError unless this process surely still holds the lock (its lease);
        ``committed``: the run is past its commit point (the message says who finishes it)."""
        left = self.config.stale_seconds - self.config.heartbeat_seconds
        if self._lost is None and time.monotonic() - self._last_beat > left:
            self._lose(f"no heartbeat written for over {left} s")
        if self._lost is None:
            owner = self._read_owner()
            if owner is None or owner.get("run_id") != self.run_id:
                self._lose(f"the lock now names {owner and describe(owner)}")
        if self._lost is not None:
            raise LockLostError(
                f"run {self.run_id} no longer holds the lock on {self.root} ({self._lost}); "
                + (
                    "the run is committed: the command that took the lock over, or the next "
                    "one, finishes it"
                    if committed
                    else "nothing was committed"
                )
            )

    def release(self) -> None:
        """Stop the heartbeat and remove the lock, unless another process took it over."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        if self._lost is None and self._end(self.run_id) is True:
            log.info("lock %s released by run %s", self.uri, self.run_id)
        else:
            # Its lease is over: a heartbeat written since would only outlive it
            self.fs.delete(self._marker(self.run_id, "heartbeat"))
            log.warning("run %s: its lock on %s was taken over", self.run_id, self.root)


def _stale_seconds(owner: dict[str, object], mine: float) -> float:
    """How old the holder's heartbeat must be for a taker of ``mine`` seconds to judge it
    stale: the longer of the two, the holder's no longer than any config allows (a record is a
    file anyone who writes the lake can write); a record without one: the taker's."""
    theirs = owner.get("stale_seconds")
    if isinstance(theirs, (int, float)) and not isinstance(theirs, bool) and not math.isnan(theirs):
        return max(mine, min(float(theirs), MAX_STALE_SECONDS))
    return mine


def _this_process() -> dict[str, object] | None:
    """What tells this process from any other on any machine, with its pid (`_gone`): the
    kernel's boot id, its PID namespace and its start time; None where /proc does not say."""
    return _process(os.getpid())


@functools.cache
def _process(pid: int) -> dict[str, object] | None:
    """`_this_process` of process ``pid``, kept per pid: a process forked after it was read has
    its own start time (a child taking a lock with its parent's would be judged gone)."""
    try:
        boot = Path("/proc/sys/kernel/random/boot_id").read_text().strip()
        namespace = os.stat("/proc/self/ns/pid").st_ino
        started = _started(pid)
    except (OSError, ValueError, IndexError):
        return None
    return {"boot_id": boot, "pid_namespace": namespace, "pid_started": started}


def _started(pid: int) -> int:
    """When process ``pid`` started, in clock ticks after boot (field 22 of /proc/<pid>/stat,
    counted after the command name, which may hold spaces and parentheses)."""
    stat = Path(f"/proc/{pid}/stat").read_text()
    return int(stat[stat.rindex(")") + 2 :].split()[19])


def _gone(owner: dict[str, object]) -> bool:
    """Whether the lock's holder has surely ended: it ran under this kernel and PID namespace,
    and no process has its pid, or the one that has it started at another time (the pid was
    used again). Anything unknown (another machine, a record without ``process``, a process
    that cannot be looked at) says no: its heartbeat decides."""
    theirs, mine, pid = owner.get("process"), _this_process(), owner.get("pid")
    if not isinstance(theirs, dict) or mine is None or type(pid) is not int or pid <= 0:
        return False
    if any(theirs.get(key) != mine[key] for key in ("boot_id", "pid_namespace")):
        return False
    if pid >= 1 << 22:  # past Linux's PID_MAX_LIMIT (and os.kill's range): no such process
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except PermissionError:
        pass  # another user's: it exists; its start time, where it can be read, tells more
    try:
        return _started(pid) != theirs.get("pid_started")
    except (OSError, ValueError, IndexError):
        return False


@contextlib.contextmanager
def holding(
    fs: FileSystem, root: str, run_id: str | None, command: str, config: LockConfig
) -> Iterator[Lock]:
    """Hold ``root``'s lock for the block (released on error too), as run ``run_id`` (None:
    a new id)."""
    run_id = run_id or new_run_id(datetime.now(timezone.utc))
    lock = Lock(fs, root.rstrip("/"), run_id, command, config)
    lock.acquire()
    try:
        yield lock
    except BaseException:
        # What failed is the error to report: a release that fails with it (the filesystem
        # down, full or read-only) is logged; the lock is then taken over as a dead one's
        try:
            lock.release()
        except Exception as exc:  # noqa: BLE001
            log.warning("run %s could not release its lock on %s: %s", lock.run_id, root, exc)
        raise
    lock.release()
