"""A hostile landing zone never stops, hangs or bloats a run (tests/integration/hostile_corpus.py).

`dicomlake ingest` runs in its own process, twice, on >= 1,000 hostile inputs mixed with good
files. What each landing entry must become is worked out here from the disk alone (os.lstat):
- hidden and temporary names are not recorded;
- every other entry has exactly one ``sources`` row, matched by its (size, mtime), which the
  corpus makes unique per entry;
- links, the FIFO, names that are not UTF-8 and over-long names are skips with their reason;
- every regular file is ingested, a duplicate or quarantined (never lost, never failed, never
  quarantined as an internal error);
- a Modality no directory can be named after is kept as null, the partition it names;
- the names in the files the mutations start from reach no analyst table, in no form (text,
  hex, base64), whatever element a bad length made swallow them;
- every ingested file rebuilds byte for byte; a second run adds nothing;
- no Python worker's peak resident memory (VmHWM, sampled from /proc while the run lasts)
  reaches 1 GiB.
"""

from __future__ import annotations

import base64
import collections
import dataclasses
import hashlib
import io
import json
import os
import stat
import subprocess
import threading
import time
from pathlib import Path

import psutil
import pyarrow.parquet as pq
import pytest
from hostile_corpus import hostile_count, make_hostile_landing
from ingest_helpers import ingest_command, table
from pydicom.data import get_testdata_file

from dicomlake.cli import print_ingest_report
from dicomlake.config import load_config
from dicomlake.crypto.keyring import Keyring
from dicomlake.errors import ConfigError
from dicomlake.ingest.job import run_ingest
from dicomlake.keyring_file import save_keyring
from dicomlake.lake.pixelstore import PixelStore

pytestmark = [pytest.mark.spark, pytest.mark.slow]

GiB = 1 << 30
RUN_TIMEOUT = 900  # seconds; a hang fails the test instead of stopping the suite
HIDDEN_SUFFIXES = ("._COPYING_", ".tmp", ".part", ".crdownload", "~")
MAX_NAME_BYTES = 200


def _forms(value: bytes) -> list[str]:
    """``value`` as a table could show it: text, hex, and base64 from each alignment (the
    characters that depend only on its own bytes)."""
    forms = [value.decode(), value.hex(), value.hex().upper()]
    for pad in range(3):
        encoded = base64.b64encode(bytes(pad) + value).decode()
        forms.append(encoded[(pad * 4 + 2) // 3 + 1 : -4])
    return forms


# In CT_small and MR_small, which the mutations start from (pydicom reads them)
IDENTIFYING_FORMS = [f for v in (b"CompressedSamples", b"JFK IMAGING") for f in _forms(v)]


def _expected(landing: Path) -> dict[tuple[int, int], str]:
    """(size, mtime in ms) -> what the entry must become, from an lstat walk of the disk:
    "hidden", "file", or the reason code of a skip."""
    out: dict[tuple[int, int], str] = {}
    for directory, dirnames, filenames in os.walk(os.fsencode(landing)):
        for name in dirnames + filenames:
            st = os.lstat(os.path.join(directory, name))
            if stat.S_ISDIR(st.st_mode):
                continue  # a directory is walked, not recorded (os.walk does not follow links)
            below = os.path.relpath(directory, os.fsencode(landing)).split(b"/")
            if any(n.startswith((b".", b"_")) and n != b"." for n in [*below, name]) or (
                name.endswith(tuple(s.encode() for s in HIDDEN_SUFFIXES))
            ):
                what = "hidden"
            elif not _is_utf8(name):
                what = "bad_name"
            elif stat.S_ISLNK(st.st_mode):
                what = "symlink"
            elif not stat.S_ISREG(st.st_mode):
                what = "not_regular_file"
            elif len(name) > MAX_NAME_BYTES:
                what = "name_too_long"
            else:
                what = "file"
            key = (st.st_size, st.st_mtime_ns // 1_000_000)
            assert key not in out, f"the corpus must give each entry its own mtime: {name!r}"
            out[key] = what
    return out


def _is_utf8(name: bytes) -> bool:
    try:
        name.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return True


class _PeakMemory:
    """The highest VmHWM (peak resident set) of any Python process below ``pid``, the ingest
    command, sampled every 50 ms: Spark's Python workers are children of its JVM, itself a
    child of the command. Unlike a sampled RSS, VmHWM keeps a peak for as long as the process
    lives, so a peak between two samples is still seen. (bench's MemoryPeak sums the PSS of
    all workers at each instant instead.)"""

    def __init__(self, pid: int) -> None:
        self.root = psutil.Process(pid)
        self.workers = 0  # bytes: the highest of any worker
        self.seen: set[int] = set()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> _PeakMemory:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()

    def _run(self) -> None:
        while not self._stop.wait(0.05):
            try:
                below = self.root.children(recursive=True)
            except psutil.Error:
                return
            for proc in below:
                peak = _python_vm_hwm(proc)
                if peak is not None:
                    self.seen.add(proc.pid)
                    self.workers = max(self.workers, peak)


def _python_vm_hwm(proc: psutil.Process) -> int | None:
    """VmHWM of a Python process in bytes; None for other processes and ended ones."""
    try:
        if "python" not in proc.name():
            return None
        for line in Path(f"/proc/{proc.pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    except (psutil.Error, OSError):
        return None
    return None


def _ingest(landing: Path, lake: Path, keyring: Path) -> tuple[dict, _PeakMemory]:
    """One ingest run in its own process; its JSON summary and its workers' peak memory."""
    env = {
        **os.environ,
        "DICOMLAKE_SPARK_MASTER": "local[2]",
        # Some hostile files are streamed, not held whole
        "DICOMLAKE_INGEST_STREAM_BYTES": str(4 << 20),
    }
    proc = subprocess.Popen(
        ingest_command(landing, lake, keyring),
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    with _PeakMemory(proc.pid) as memory:
        try:
            out, err = proc.communicate(timeout=RUN_TIMEOUT)
        except subprocess.TimeoutExpired:
            proc.kill()
            out, err = proc.communicate()
            pytest.fail(f"ingest hung for {RUN_TIMEOUT} s:\n{err[-3000:]}")
    assert proc.returncode in (0, 3), err[-5000:]
    return json.loads(out.strip().splitlines()[-1]), memory


def test_a_hostile_landing_zone_is_accounted_for_and_never_stops_a_run(tmp_path):
    landing, lake = tmp_path / "landing", tmp_path / "lake"
    count = hostile_count()
    make_hostile_landing(landing, tmp_path / "outside", count)
    expected = _expected(landing)
    assert sum(1 for what in expected.values() if what == "file") >= count
    keyring_path = tmp_path / "keyring.json"
    keyring = Keyring.generate()
    save_keyring(str(keyring_path), keyring, load_config(env={}))

    started = time.monotonic()
    summary, memory = _ingest(landing, lake, keyring_path)
    seconds = time.monotonic() - started
    assert memory.seen, "no Python worker was seen: the memory bound was not measured"
    print(f"{len(expected)} entries in {seconds:.0f} s, worker peak {memory.workers >> 20} MiB")

    sources = table(lake, "sources").to_pylist()
    errors = table(lake, "errors").to_pylist()
    recorded = collections.Counter(
        (r["source_size"], int(r["source_mtime"].timestamp() * 1000)) for r in sources
    )
    doubled = [key for key, n in recorded.items() if n > 1]
    assert not doubled, f"entries recorded more than once: {doubled[:5]}"
    wanted = {key for key, what in expected.items() if what != "hidden"}
    assert set(recorded) == wanted, (
        f"not recorded: {sorted(wanted - set(recorded))[:5]}, "
        f"recorded but not on disk: {sorted(set(recorded) - wanted)[:5]}"
    )
    reasons = {
        (r["source_size"], int(r["source_mtime"].timestamp() * 1000)): r["reason"] for r in errors
    }
    for row in sources:
        key = (row["source_size"], int(row["source_mtime"].timestamp() * 1000))
        what = expected[key]
        if what == "file":
            assert row["outcome"] in ("ingested", "duplicate", "quarantined"), (row, reasons[key])
            # Quarantined for what is wrong with the file, never for a failure of the code
            assert reasons.get(key) != "internal_error", (row, reasons[key])
        else:
            assert (row["outcome"], reasons.get(key)) == ("skipped", what), row
    assert summary["files_hidden"] == sum(1 for w in expected.values() if w == "hidden")
    assert summary["skipped"] == sum(1 for w in expected.values() if w not in ("file", "hidden"))
    assert summary["files_seen"] == len(wanted)
    # The runs table keeps the whole count, as the sources rows add it up
    (run,) = table(lake, "runs").to_pylist()
    outcomes = collections.Counter(r["outcome"] for r in sources)
    assert {k: run[k] for k in ("ingested", "duplicates", "quarantined", "failed", "skipped")} == {
        "ingested": outcomes["ingested"],
        "duplicates": outcomes["duplicate"],
        "quarantined": outcomes["quarantined"],
        "failed": outcomes["failed"],
        "skipped": outcomes["skipped"],
    }
    assert (run["files_seen"], run["files_hidden"]) == (len(wanted), summary["files_hidden"])

    # A Modality no directory can be named after partitions as null; the others are kept
    modality = {
        (r["source_size"], int(r["source_mtime"].timestamp() * 1000)): r["Modality"]
        for r in table(lake, "instances")
        .select(["Modality", "source_size", "source_mtime"])
        .to_pylist()
    }
    for name, kept in (("long", None), ("control", None), ("path", None)):
        st = (landing / f"modality-{name}.dcm").stat()
        assert modality[(st.st_size, st.st_mtime_ns // 1_000_000)] == kept, name

    # The names the mutated files hold (a swallowing length may hide them in any element)
    for path in sorted((lake / "tables").rglob("*")):
        if path.suffix in (".parquet", ".json"):
            text = str(pq.read_table(path).to_pylist()) if path.suffix == ".parquet" else ""
            text += path.read_text(errors="replace") if path.suffix == ".json" else ""
            found = [form for form in IDENTIFYING_FORMS if form in text]
            assert not found, (path, found)

    # Every ingested file rebuilds byte for byte (its instance_id is its SHA-256)
    on_disk = {
        (st.st_size, st.st_mtime_ns // 1_000_000): p
        for p in landing.rglob("*")
        if (st := p.lstat()) and stat.S_ISREG(st.st_mode)
    }
    store = PixelStore(str(lake), keyring, load_config(env={}))
    ingested = [r for r in sources if r["outcome"] == "ingested"]
    assert ingested, "the good files must be ingested"
    frames = collections.defaultdict(list)
    for row in store.frames_of(r["instance_id"] for r in ingested).to_pylist():
        frames[row["instance_id"]].append(row)
    for row in ingested:
        path = on_disk[(row["source_size"], int(row["source_mtime"].timestamp() * 1000))]
        rebuilt = b"".join(store.rebuild(row["instance_id"], frames[row["instance_id"]]))
        assert hashlib.sha256(rebuilt).hexdigest() == hashlib.sha256(path.read_bytes()).hexdigest()

    # A second run finds nothing new: nothing was left half-recorded
    again, _ = _ingest(landing, lake, keyring_path)  # no work: no Spark job, no workers
    assert again["files_seen"] == 0, again
    assert table(lake, "sources").num_rows == len(sources)

    assert memory.workers < GiB, f"a Python worker peaked at {memory.workers >> 20} MiB"


def test_settling_files_wait_and_skips_are_recorded_once(tmp_path, sc, config, keyring):
    landing, lake = tmp_path / "landing", tmp_path / "lake"
    landing.mkdir()
    old, fresh = landing / "old.dcm", landing / "fresh.dcm"
    old.write_bytes(Path(get_testdata_file("CT_small.dcm")).read_bytes())
    os.utime(old, (time.time() - 7200, time.time() - 7200))
    fresh.write_bytes(Path(get_testdata_file("MR_small.dcm")).read_bytes())  # just written
    os.symlink(old, landing / "link.dcm")
    os.mkfifo(landing / "fifo.dcm")
    (landing / ".partial.dcm").write_bytes(b"half")
    settle = dataclasses.replace(config.ingest, settle_seconds=3600.0, error_threshold=1.0)
    first = run_ingest(
        sc, str(landing), str(lake), dataclasses.replace(config, ingest=settle), keyring
    )
    assert (first.ingested, first.files_settling, first.files_hidden) == (1, 1, 1)
    assert (first.skipped, first.skipped_reasons) == (2, {"symlink": 1, "not_regular_file": 1})
    report = io.StringIO()
    print_ingest_report(first.as_dict(), report)
    assert "2 skipped (not_regular_file=1, symlink=1), 1 still settling" in report.getvalue()
    # Settled (no waiting asked for): only the fresh file is new; skips are not recorded again
    second = run_ingest(sc, str(landing), str(lake), config, keyring)
    assert (second.files_seen, second.ingested, second.skipped) == (1, 1, 0)
    # Matched by size, which differs between these four entries (lstat's: a link's own)
    named = {p.lstat().st_size: p.name for p in landing.iterdir() if p.name != ".partial.dcm"}
    assert len(named) == 4
    outcomes = sorted(
        (named[r["source_size"]], r["outcome"]) for r in table(lake, "sources").to_pylist()
    )
    assert outcomes == [
        ("fifo.dcm", "skipped"),
        ("fresh.dcm", "ingested"),
        ("link.dcm", "skipped"),
        ("old.dcm", "ingested"),
    ]


def test_a_landing_zone_that_does_not_exist_is_an_error_and_makes_no_lake(
    tmp_path, sc, config, keyring
):
    lake = tmp_path / "lake"
    with pytest.raises(ConfigError, match=r"landing zone .*mistyped does not exist"):
        run_ingest(sc, str(tmp_path / "mistyped"), str(lake), config, keyring)
    assert not lake.exists()
