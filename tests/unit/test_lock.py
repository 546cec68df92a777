"""The lake lock on the local filesystem, taken by real concurrent processes."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

from dicomlake.cli import EXIT_BUSY
from dicomlake.config import LockConfig
from dicomlake.crypto.keyring import Keyring
from dicomlake.errors import ConfigError, LakeError, LockBusyError, LockLostError, StorageError
from dicomlake.lake.lock import _stale_seconds, holding
from dicomlake.storage.local import LocalFileSystem
from lock_helpers import first_line, kill, start_takers, start_together, wait_all


def test_takers_started_together_one_wins(tmp_path):
    lake, start = tmp_path / "lake", tmp_path / "go"
    procs = start_takers(str(lake), start, 6, hold=2.0)
    start_together(start, procs)
    codes = wait_all(procs)
    assert sorted(codes) == [0, 4, 4, 4, 4, 4], [p.stderr.read() for p in procs]
    winner = procs[codes.index(0)]
    held = first_line(winner)["held"]
    for proc, code in zip(procs, codes, strict=True):
        if code == 4:
            message = first_line(proc)["busy"]
            assert held in message or "changed hands" in message
    assert not (lake / "_lock").exists()  # released
    assert list((lake / "_locks").iterdir()) == []


def test_busy_names_the_holder_and_release_frees_it(tmp_path):
    fs, root = LocalFileSystem(), str(tmp_path)
    with holding(fs, root, "run-a", "ingest", LockConfig()) as lock:
        owner = json.loads((tmp_path / "_lock").read_text())
        assert owner["run_id"] == "run-a" and owner["command"] == "ingest"
        busy = pytest.raises(LockBusyError, match="locked by run run-a \\(ingest on .*pid")
        with busy, holding(fs, root, "run-b", "snapshot", LockConfig()):
            pass
        lock.check()
        assert json.loads((tmp_path / "_lock").read_text())["run_id"] == "run-a"
    with holding(fs, root, "run-b", "snapshot", LockConfig()) as lock:
        assert lock.run_id == "run-b"


def test_released_on_error(tmp_path):
    fs, root = LocalFileSystem(), str(tmp_path)
    with pytest.raises(RuntimeError), holding(fs, root, "run-a", "ingest", LockConfig()):
        raise RuntimeError("boom")
    assert not (tmp_path / "_lock").exists()


def test_heartbeat_keeps_a_live_holder(tmp_path):
    lake, start = tmp_path / "lake", tmp_path / "go"
    (holder,) = start_takers(str(lake), start, 1, hold=-1, stale=1.5, heartbeat=0.3)
    start.touch()
    first_line(holder)
    time.sleep(3)  # twice the stale time: only the heartbeat keeps the lock fresh
    (late,) = start_takers(str(lake), start, 1, hold=0, stale=1.5, heartbeat=0.3)
    assert late.wait(60) == 4
    holder.stdin.write("\n")
    holder.stdin.flush()
    assert holder.wait(60) == 0
    assert json.loads(holder.stdout.readline()) == {"lease": "ok"}


def test_a_killed_holder_here_is_taken_over_at_once_by_exactly_one(tmp_path):
    lake, start = tmp_path / "lake", tmp_path / "go"
    (holder,) = start_takers(str(lake), start, 1, hold=60)  # stale only after 600 s
    start.touch()
    dead = first_line(holder)["held"]
    kill(holder)
    again = tmp_path / "go-again"  # five at once
    takers = start_takers(str(lake), again, 5, hold=1.0)
    start_together(again, takers)
    codes = wait_all(takers)
    assert sorted(codes) == [0, 4, 4, 4, 4], [p.stderr.read() for p in takers]
    # The taker that removed the dead lock says whose it was (another may then have won it).
    logs = [p.stderr.read() for p in takers]
    gone = f"taking over the stale lock of run {dead} .*: its process is gone"
    assert sum(bool(re.search(gone, log)) for log in logs) == 1, logs
    assert not (lake / "_lock").exists()
    assert list((lake / "_locks").iterdir()) == []


def test_a_taker_with_a_shorter_stale_time_waits_as_long_as_the_holders_lease(tmp_path):
    lake, start = tmp_path / "lake", tmp_path / "go"
    # Beats every 2 s: its lease, 6 s, never lets its heartbeat age past 4 s
    (holder,) = start_takers(str(lake), start, 1, hold=-1, stale=6.0, heartbeat=2.0)
    start.touch()
    held = first_line(holder)["held"]
    assert json.loads((lake / "_lock").read_text())["stale_seconds"] == 6.0
    time.sleep(1.5)  # its heartbeat is older than the taker's own stale time
    (hasty,) = start_takers(str(lake), start, 1, hold=0, stale=0.6, heartbeat=0.2)
    assert wait_all([hasty]) == [4]
    busy = first_line(hasty)["busy"]
    assert "locked by run " + held in busy and "is 6 s old, the longer of" in busy
    holder.stdin.write("\n")
    holder.stdin.flush()
    assert holder.wait(60) == 0
    assert json.loads(holder.stdout.readline()) == {"lease": "ok"}


@pytest.mark.parametrize(
    ("recorded", "waited"),
    [
        (6.0, 60.0),  # the taker's own is longer
        (600.0, 600.0),  # the holder's lease runs by its own
        (1e12, 86400.0),  # a planted record: never longer than any config allows
        (float("inf"), 86400.0),
        (float("nan"), 60.0),
        ("600", 60.0),
        (True, 60.0),
        (None, 60.0),  # a record from before holders wrote theirs
    ],
)
def test_a_holders_recorded_stale_time_is_bounded(recorded, waited):
    assert _stale_seconds({"run_id": "r", "stale_seconds": recorded}, 60.0) == waited


def test_a_dead_holder_elsewhere_is_taken_over_once_its_heartbeat_is_stale(tmp_path):
    lake, start = tmp_path / "lake", tmp_path / "go"
    (holder,) = start_takers(str(lake), start, 1, hold=60, stale=1.0, heartbeat=0.2)
    start.touch()
    dead = first_line(holder)["held"]
    kill(holder)
    # As if it had run on another machine (or in another container): its pid says nothing here
    record = json.loads((lake / "_lock").read_text())
    record["process"]["boot_id"] = "another-machine"
    (lake / "_lock").write_text(json.dumps(record))
    (fresh,) = start_takers(str(lake), start, 1, hold=0, stale=1.0, heartbeat=0.2)
    assert wait_all([fresh]) == [4]  # not yet stale
    assert "locked by run " + dead in first_line(fresh)["busy"]
    time.sleep(1.5)
    (late,) = start_takers(str(lake), start, 1, hold=0, stale=1.0, heartbeat=0.2)
    assert wait_all([late]) == [0]
    assert re.search(f"stale lock of run {dead} .*: no heartbeat for \\d+ s", late.stderr.read())


def _record(run_id: str, pid: int, **process: object) -> str:
    """A lock record of ``pid``, as this process would write it but for ``process``."""
    me = json.loads(_held_record())["process"]
    return json.dumps({"run_id": run_id, "pid": pid, "process": {**me, **process}})


def _held_record() -> str:
    with (
        tempfile.TemporaryDirectory() as root,
        holding(LocalFileSystem(), root, "probe", "test", LockConfig()),
    ):
        return (Path(root) / "_lock").read_text()


@pytest.mark.parametrize(
    ("record", "taken"),
    [
        (lambda: _record("run-old", os.getpid()), False),  # this very process: alive
        # Its pid is this process's now, which started at another time: the pid was reused
        (lambda: _record("run-old", os.getpid(), pid_started=1), True),
        (lambda: _record("run-old", 2**22 + 1), True),  # above pid_max: no such process
        (lambda: _record("run-old", 10**20), True),  # past a C long too
        (lambda: _record("run-old", 2**22 + 1, pid_namespace=1), False),  # another namespace
        (lambda: _record("run-old", 2**22 + 1, boot_id="x"), False),  # another kernel
        # Written before records named their process, or by a machine without /proc
        (lambda: json.dumps({"run_id": "run-old", "pid": 2**22 + 1, "process": None}), False),
        (lambda: json.dumps({"run_id": "run-old", "pid": "1", "process": {}}), False),
    ],
)
def test_a_holder_is_taken_over_at_once_only_when_its_process_is_surely_gone(
    tmp_path, record, taken
):
    (tmp_path / "_locks").mkdir()
    (tmp_path / "_lock").write_text(record())
    (tmp_path / "_locks" / "run-old.heartbeat").write_text("{}")  # beating
    fs, root = LocalFileSystem(), str(tmp_path)
    if taken:
        with holding(fs, root, "run-new", "ingest", LockConfig()) as lock:
            lock.check()
    else:
        busy = pytest.raises(LockBusyError, match="locked by run run-old")
        with busy, holding(fs, root, "run-new", "ingest", LockConfig()):
            pass
        assert json.loads((tmp_path / "_lock").read_text())["run_id"] == "run-old"


def test_a_stalled_holder_loses_its_lease(tmp_path):
    lake, start = tmp_path / "lake", tmp_path / "go"
    (holder,) = start_takers(str(lake), start, 1, hold=-1, stale=1.0, heartbeat=0.2)
    start.touch()
    stalled = first_line(holder)["held"]
    holder.send_signal(signal.SIGSTOP)
    time.sleep(1.5)
    (taker,) = start_takers(str(lake), start, 1, hold=-1, stale=1.0, heartbeat=0.2)
    assert first_line(taker)["held"] != stalled
    holder.send_signal(signal.SIGCONT)
    holder.stdin.write("\n")
    holder.stdin.flush()
    assert holder.wait(60) == 5
    assert json.loads(holder.stdout.readline())["lease"] == "lost"
    # The stalled holder leaves the new holder's lock alone.
    assert json.loads((lake / "_lock").read_text())["run_id"] != stalled
    taker.stdin.write("\n")
    taker.stdin.flush()
    assert taker.wait(60) == 0


def test_stale_must_be_three_heartbeats():
    with pytest.raises(ConfigError, match="lock.stale_seconds"):
        LockConfig(stale_seconds=2.0, heartbeat_seconds=1.0)
    LockConfig(stale_seconds=0.6, heartbeat_seconds=0.2)  # three heartbeats, in decimal


def test_the_command_exits_4_naming_the_holder_and_changes_nothing(tmp_path):
    backup = tmp_path / "backup"
    (backup / "manifests").mkdir(parents=True)  # a backup: retention refuses other places
    keyring = tmp_path / "keyring.json"
    fd = os.open(keyring, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(Keyring.generate().to_bytes())
    with holding(LocalFileSystem(), str(backup), "run-a", "snapshot", LockConfig()):
        before = sorted(p.relative_to(backup) for p in backup.rglob("*"))
        proc = subprocess.run(
            [sys.executable, "-m", "dicomlake.cli", "retention", "--backup", str(backup)]
            + ["--keyring", str(keyring)],
            capture_output=True,
            text=True,
        )
        assert sorted(p.relative_to(backup) for p in backup.rglob("*")) == before
    assert proc.returncode == EXIT_BUSY == 4, proc.stderr
    assert "locked by run run-a (snapshot on" in proc.stderr
    summary = json.loads(proc.stdout.splitlines()[-1])
    assert (summary["command"], summary["exit_code"]) == ("retention", 4)
    assert "locked by run run-a (snapshot on" in summary["error"]


@pytest.mark.parametrize(
    "record",
    [
        b"\x00 not json",
        b"[1, 2]",
        b'"x"',
        b"null",
        b"{}",
        # A run id is a file name in _locks/: one that is a path is no run id
        b'{"run_id": "../../victim/data", "host": "h", "pid": 1}',
        b'{"run_id": "a/b"}',
        b'{"run_id": ".."}',
    ],
)
def test_a_lock_file_that_is_no_lock_record_is_named_and_left_alone(tmp_path, record):
    lake = tmp_path / "lake"
    (lake / "_locks").mkdir(parents=True)
    (tmp_path / "victim.heartbeat").write_bytes(b"keep")
    (lake / "_lock").write_bytes(record)
    os.utime(lake / "_lock", (1, 1))  # stale by any clock: judged, were it a record
    with (
        pytest.raises(LakeError, match="_lock is not a lock record"),
        holding(LocalFileSystem(), str(lake), "run-b", "ingest", LockConfig()),
    ):
        pass
    assert (lake / "_lock").read_bytes() == record
    assert (tmp_path / "victim.heartbeat").read_bytes() == b"keep"
    assert not list(tmp_path.glob("victim*.end"))


def test_a_dangling_link_at_the_lock_is_named_not_busy_forever(tmp_path):
    lake = tmp_path / "lake"
    lake.mkdir()
    (lake / "_lock").symlink_to(tmp_path / "nowhere")
    with (
        pytest.raises(LakeError, match="_lock is in the way but no lock .* delete it by hand"),
        holding(LocalFileSystem(), str(lake), "run-b", "ingest", LockConfig()),
    ):
        pass
    assert (lake / "_lock").is_symlink()
    assert list((lake / "_locks").iterdir()) == []  # its own heartbeat and record removed


def test_a_file_where_the_lock_folder_goes_is_named(tmp_path):
    lake = tmp_path / "lake"
    lake.mkdir()
    (lake / "_locks").write_bytes(b"not a folder")
    with (
        pytest.raises(StorageError, match="cannot write .*_locks/run-b.heartbeat: EEXIST"),
        holding(LocalFileSystem(), str(lake), "run-b", "ingest", LockConfig()),
    ):
        pass
    assert (lake / "_locks").read_bytes() == b"not a folder" and not (lake / "_lock").exists()


def test_a_lock_taken_at_once_beats_once_and_one_taken_over_beats_again(tmp_path, monkeypatch):
    # On HDFS each new file waits ~0.4 s to close: an uncontended lock writes no more than it
    # needs (its heartbeat, then its record), and a taken-over one renews its lease after
    fs, root = LocalFileSystem(), str(tmp_path)
    written: list[str] = []
    write_bytes = fs.write_bytes

    def recording(path: str, data: bytes) -> None:
        written.append(path.rsplit("/", 1)[-1])
        write_bytes(path, data)

    monkeypatch.setattr(fs, "write_bytes", recording)
    with holding(fs, root, "run-a", "ingest", LockConfig()):
        assert written == ["run-a.heartbeat", "run-a.new"]

    # A holder that died: its record and a heartbeat older than lock.stale_seconds
    (tmp_path / "_lock").write_text(json.dumps({"run_id": "run-dead", "command": "ingest"}))
    beat = tmp_path / "_locks" / "run-dead.heartbeat"
    beat.write_text("{}")
    long_ago = time.time() - 2 * LockConfig().stale_seconds
    os.utime(beat, (long_ago, long_ago))
    written.clear()
    with holding(fs, root, "run-b", "ingest", LockConfig()):
        assert written == [
            "run-b.heartbeat",
            "run-b.new",  # refused: run-dead holds the lock
            "run-dead.end.run-b.new",  # its end marker, then its lock removed
            "run-b.new",
            "run-b.heartbeat",  # the lease runs from the takeover
        ]


# Takes the lock, then is killed once its end marker is made, before it removes the lock
_DIES_RELEASING = """
import os, signal, sys
from dicomlake.config import LockConfig
from dicomlake.lake.lock import holding
from dicomlake.storage.local import LocalFileSystem

fs = LocalFileSystem()
delete = fs.delete
def dying(path, *args, **kwargs):
    if path.endswith("/_lock"):
        os.kill(os.getpid(), signal.SIGKILL)
    return delete(path, *args, **kwargs)
with holding(fs, sys.argv[1], "run-a", "ingest", LockConfig()):
    fs.delete = dying
"""


def test_a_lock_whose_remover_died_half_way_is_removed_by_the_next(tmp_path):
    lake = tmp_path / "lake"
    killed = subprocess.run([sys.executable, "-c", _DIES_RELEASING, str(lake)], check=False)
    assert killed.returncode == -signal.SIGKILL
    assert json.loads((lake / "_lock").read_text())["run_id"] == "run-a"
    assert (lake / "_locks" / "run-a.end").exists()  # made, the lock not yet removed
    # Its process is gone here: taken over at once, past the marker it left
    with holding(LocalFileSystem(), str(lake), "run-b", "ingest", LockConfig()):
        assert json.loads((lake / "_lock").read_text())["run_id"] == "run-b"
    assert not (lake / "_lock").exists()
    assert list((lake / "_locks").iterdir()) == []


def test_a_remover_elsewhere_is_waited_for_until_its_marker_is_stale(tmp_path):
    lake = tmp_path / "lake"
    (lake / "_locks").mkdir(parents=True)
    (lake / "_lock").write_text(json.dumps({"run_id": "run-dead", "host": "h1", "pid": 7}))
    long_ago = time.time() - 2 * LockConfig().stale_seconds
    os.utime(lake / "_lock", (long_ago, long_ago))  # no heartbeat: the lock's age tells
    end = lake / "_locks" / "run-dead.end"
    end.write_text(json.dumps({"run_id": "run-c", "host": "h2", "pid": 8}))  # removing it
    fs = LocalFileSystem()
    with (
        pytest.raises(LockBusyError, match="another command is taking over its lock"),
        holding(fs, str(lake), "run-b", "ingest", LockConfig()),
    ):
        pass
    os.utime(end, (long_ago, long_ago))  # its remover died on its way
    with holding(fs, str(lake), "run-b", "ingest", LockConfig()):
        assert json.loads((lake / "_lock").read_text())["run_id"] == "run-b"
    assert list((lake / "_locks").iterdir()) == []


def test_what_failed_is_reported_when_the_release_fails_too(tmp_path, monkeypatch, caplog):
    """The filesystem down, full or read-only fails the work and then the release: the error
    reported is the work's, the release's is logged."""
    fs = LocalFileSystem()

    def refused(path: str, data: bytes) -> None:
        raise StorageError(f"cannot write {path}: EROFS")

    with (
        pytest.raises(RuntimeError, match="the commit failed"),
        holding(fs, str(tmp_path), "run-a", "ingest", LockConfig()),
    ):
        monkeypatch.setattr(fs, "write_bytes", refused)  # the release writes its marker
        raise RuntimeError("the commit failed")
    assert "could not release its lock" in caplog.text and "EROFS" in caplog.text


def test_a_holder_that_lost_its_lock_leaves_no_heartbeat(tmp_path):
    fs, root = LocalFileSystem(), str(tmp_path)
    with (
        pytest.raises(LockLostError),
        holding(fs, root, "run-a", "ingest", LockConfig()) as lock,
    ):
        # Taken over while it stalled; its heartbeat thread had written once more
        (tmp_path / "_lock").write_text(json.dumps({"run_id": "run-b", "command": "ingest"}))
        (tmp_path / "_locks" / "run-a.heartbeat").write_text("{}")
        lock.check()
    assert json.loads((tmp_path / "_lock").read_text())["run_id"] == "run-b"
    assert list((tmp_path / "_locks").iterdir()) == []


def test_a_holder_forked_after_its_parent_held_a_lock_is_not_judged_gone(tmp_path):
    """The process record is the taker's own, not one read before it was forked."""
    fs = LocalFileSystem()
    with holding(fs, str(tmp_path / "parent"), "run-p", "test", LockConfig()):
        pass  # the parent has read its own process record
    child = os.fork()
    if child == 0:  # take a lock and hold it until killed
        with holding(fs, str(tmp_path / "lake"), "run-child", "test", LockConfig()):
            (tmp_path / "held").touch()
            time.sleep(60)
        os._exit(0)
    try:
        deadline = time.monotonic() + 30
        while not (tmp_path / "held").exists():
            assert time.monotonic() < deadline
            time.sleep(0.01)
        busy = pytest.raises(LockBusyError, match="locked by run run-child")
        with busy, holding(fs, str(tmp_path / "lake"), "run-new", "test", LockConfig()):
            pass
    finally:
        os.kill(child, signal.SIGKILL)
        os.waitpid(child, 0)
