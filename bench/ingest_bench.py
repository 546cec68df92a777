"""Ingest benchmark: dicomlake versus a naive Spark job, on a synthetic landing zone of real images.

    .venv/bin/python bench/ingest_bench.py          # 0.5 and 1 GB, 3,000 small files, a 2 GB file
    .venv/bin/python bench/ingest_bench.py --quick  # smoke run: 0.1, 0.2 GB, 500 small, 0.5 GB file
    .venv/bin/python bench/ingest_bench.py --sizes 1,2 --small-files 5000 --seed 7 --repeat 2
    .venv/bin/python bench/ingest_bench.py --hdfs   # and the largest size again, on HDFS

Steps, all in this one invocation:

1. Builds (or reuses, from ``.cache/bench/``) deterministic synthetic landing zones made of the
   real images of pydicom, pydicom-data and deid-data with new UIDs (see synth_landing.py): one
   per size, a small-file case of ~100 KB files, and a huge-file case: one multi-frame CT of
   ``--huge-gb`` GB, which dicomlake streams (it is over ``ingest.stream_bytes``).
2. Runs each contender in its own process (bench/ingest_runs.py: a fresh JVM each, Spark
   ``local[2]``, the same Spark settings), after reading the landing zone once so both start
   from a warm page cache (the benchmark cannot drop the OS cache without privileges). The
   process tree's RSS (driver Python, JVM, Python workers) is sampled every 0.2 s.
   - dicomlake: ``run_ingest`` into an empty lake, at every size, on the small files and on
     the huge file;
   - baseline: ``binaryFile`` source, pydicom in ``mapInPandas``, DICOM JSON without pixels,
     zlib level 6 then AES-256-GCM, written as Parquet; at the largest size and on the small files;
   - dicomlake again at the largest size and on the small files with ``pixels.verify: false``:
     what the decode that checks every compressed chunk costs (the baseline checks nothing);
   - profile: dicomlake's ``process_task`` on a sample of the largest landing zone, outside
     Spark, under cProfile (splits encode from encrypt, and parse into its parts), after a
     first task on a few files so that imports and first calls are not counted;
   - with ``--hdfs``, both contenders again on the largest landing zone (and dicomlake on the
     huge file), copied once into the dev HDFS (``dev/hdfs.py``: a NameNode and a DataNode on
     this machine, started for the benchmark unless they run already), writing their output
     there too.
3. Prints the side-by-side table, where dicomlake's time goes, the small-file case, scaling and
   the targets, and, as its last line, one JSON object with all the figures.

Throughput is input bytes (or files) over the timed part: for dicomlake ``run_ingest`` from
listing to commit, for the baseline from ``spark.read`` to the end of the Parquet write. JVM
start-up is not in it (it is in ``wall_seconds``). Other load on the machine lowers every
figure: each run reports the share of the CPUs other processes used meanwhile, and input MB per
CPU second of its own process tree, which contention changes much less; ``--repeat N`` keeps
the fastest of N runs.
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import importlib.util
import json
import os
import platform
import shutil
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psutil

from dicomlake.storage import FileSystem
from dicomlake.storage.local import LocalFileSystem

sys.path.insert(0, str(Path(__file__).resolve().parent))
from synth_landing import GENERATOR_VERSION, cached_landing  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
RUNNER = Path(__file__).resolve().parent / "ingest_runs.py"
MiB = 1 << 20
COPY_BLOCK = 8 * MiB
"""Bytes per read when the benchmark reads or copies a landing file."""

STARTUP_FILES = 8
"""Files in the run that measures the start-up every run pays."""

TARGETS = {
    "mb_per_s": 150.0,  # input MB/s end to end, largest size
    "small_files_per_s": 800.0,
    "pixel_ratio": 3.5,  # on the native (not already-compressed) pixel data of the mix
    "peak_executor_mib": 2048.0,  # JVM + Python workers
}


def log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


# --- memory of a process tree -----------------------------------------------------------------


@dataclass
class MemoryPeak:
    """Peak RSS of a process tree, sampled: total, the JVM, Python workers (not the driver)."""

    tree: int = 0
    jvm: int = 0
    workers: int = 0
    executor: int = 0  # JVM + Python workers at the same instant: local mode's one executor
    samples: int = 0
    cpu: dict[int, float] = field(default_factory=dict)  # pid -> user+system seconds seen last
    _stop: threading.Event = field(default_factory=threading.Event)

    def watch(self, pid: int, interval: float = 0.2) -> threading.Thread:
        def loop() -> None:
            try:
                root = psutil.Process(pid)
            except psutil.NoSuchProcess:
                return
            while not self._stop.is_set():
                tree = jvm = workers = 0
                try:
                    procs = [root, *root.children(recursive=True)]
                except psutil.NoSuchProcess:
                    return
                for proc in procs:
                    try:
                        rss = proc.memory_info().rss
                        name = proc.name()
                        times = proc.cpu_times()
                    except psutil.Error:
                        continue
                    self.cpu[proc.pid] = times.user + times.system
                    tree += rss
                    if name == "java":
                        jvm += rss
                    elif proc.pid != pid:
                        workers += rss
                self.tree = max(self.tree, tree)
                self.jvm = max(self.jvm, jvm)
                self.workers = max(self.workers, workers)
                self.executor = max(self.executor, jvm + workers)
                self.samples += 1
                self._stop.wait(interval)

        thread = threading.Thread(target=loop, daemon=True)
        thread.start()
        return thread

    def stop(self) -> None:
        self._stop.set()

    def as_dict(self) -> dict[str, float]:
        return {
            "peak_rss_mib": round(self.tree / MiB, 1),
            "peak_executor_mib": round(self.executor / MiB, 1),
            "peak_jvm_mib": round(self.jvm / MiB, 1),
            "peak_python_workers_mib": round(self.workers / MiB, 1),
            "memory_samples": self.samples,
            "cpu_seconds": round(sum(self.cpu.values()), 1),
        }


# --- running one contender --------------------------------------------------------------------


def warm(fs: FileSystem, landing: str) -> float:
    """Read every file once, so each run starts from the same (warm) page cache; on the dev
    HDFS this also warms the DataNode's read path (a DataNode just started serves reads
    slower). Several files at once there, as `FileSystem.run_all` makes calls."""
    t = time.perf_counter()
    fs.run_all(functools.partial(_drain, fs, f.path) for f in fs.list_files(landing))
    return time.perf_counter() - t


def _drain(fs: FileSystem, path: str) -> None:
    with fs.open_read(path) as src:
        while src.read(COPY_BLOCK):
            pass


class DevHdfs:
    """The dev HDFS of ``dev/hdfs.py`` (its settings: ports, run directory) for the HDFS case."""

    ROOT = "/bench"

    def __init__(self) -> None:
        from dicomlake.config import HdfsConfig
        from dicomlake.storage.hdfs import WebHdfsFileSystem  # before dev/ shadows "hdfs"

        spec = importlib.util.spec_from_file_location("dev_hdfs", ROOT / "dev" / "hdfs.py")
        assert spec is not None and spec.loader is not None
        module = importlib.util.module_from_spec(spec)
        sys.modules[spec.name] = module  # its dataclasses look their module up
        sys.path.insert(0, str(ROOT / "dev"))  # for its helper module, _daemons
        try:
            spec.loader.exec_module(module)
        finally:
            sys.path.remove(str(ROOT / "dev"))
        self.settings = module.Settings.from_env()
        authority = self.settings.uri.split("://", 1)[1]
        self.fs = WebHdfsFileSystem(HdfsConfig(namenodes={authority: self.settings.webhdfs_url}))

    @classmethod
    @contextlib.contextmanager
    def running(cls) -> Iterator[DevHdfs]:
        """The dev HDFS, started for the benchmark (and stopped after) unless it runs already."""
        script = [sys.executable, str(ROOT / "dev" / "hdfs.py")]
        up = subprocess.run([*script, "status"], stdout=subprocess.DEVNULL).returncode == 0
        if not up:
            log("starting the dev HDFS (dev/hdfs.py start)")
            subprocess.run([*script, "start"], stdout=sys.stderr, check=True)
        try:
            yield cls()
        finally:
            if not up:
                subprocess.run([*script, "stop"], stdout=sys.stderr, check=False)

    def output(self, name: str) -> str:
        """An empty place for a run's output."""
        out = f"{self.settings.uri}{self.ROOT}/runs/{name}"
        self.fs.delete(out, recursive=True)
        return out

    def landing(self, local: Path) -> str:
        """``local``'s files on the HDFS, copied unless the same names and sizes are there."""
        target = f"{self.settings.uri}{self.ROOT}/landing/{local.parent.name}"
        want = {
            p.relative_to(local).as_posix(): p.stat().st_size
            for p in local.rglob("*")
            if p.is_file()
        }
        have = {f.path[len(target) + 1 :]: f.size for f in self.fs.list_files(target)}
        if have != want:
            log(f"copying {len(want):,} files into {target}")
            self.fs.delete(target, recursive=True)
            t = time.perf_counter()

            def copy(relative: str) -> None:
                with (
                    open(local / relative, "rb") as src,
                    self.fs.open_write(f"{target}/{relative}") as out,
                ):
                    shutil.copyfileobj(src, out, COPY_BLOCK)  # the huge file is never held

            # Each create waits on the NameNode (~0.25 s): many at once
            with ThreadPoolExecutor(8) as pool:
                for i, _ in enumerate(pool.map(copy, sorted(want)), 1):
                    if i % 200 == 0:
                        log(f"  {i:,} / {len(want):,} files")
            log(f"copied in {time.perf_counter() - t:.1f}s")
        return target

    def clean(self) -> None:
        self.fs.delete(f"{self.settings.uri}{self.ROOT}/runs", recursive=True)


def run_contender(
    contender: str,
    landing: Path | str,
    work: Path,
    name: str,
    master: str,
    extra: list[str] = (),
    hdfs: DevHdfs | None = None,
) -> dict[str, Any]:
    """Run bench/ingest_runs.py in a child process; its result plus peak memory and wall time.

    With ``hdfs``, ``landing`` is an ``hdfs://`` URI and the output goes to the HDFS too.
    """
    result_file = work / f"{name}.json"
    log_file = work / f"{name}.log"
    result_file.unlink(missing_ok=True)
    if hdfs is None:
        out: str = str(work / name)
        shutil.rmtree(out, ignore_errors=True)
        warmed = warm(LocalFileSystem(), str(landing))
    else:
        out = hdfs.output(name)
        extra = [*extra, "--webhdfs", hdfs.settings.webhdfs_url]
        warmed = warm(hdfs.fs, str(landing))
    log(f"{name}: {contender} on {landing} (warmed in {warmed:.1f}s), log {log_file}")
    command = [
        sys.executable,
        str(RUNNER),
        contender,
        "--landing",
        str(landing),
        "--out",
        out,
        "--result",
        str(result_file),
        "--master",
        master,
        *extra,
    ]
    memory = MemoryPeak()
    busy0 = _busy_cpu_seconds()
    t0 = time.perf_counter()
    with open(log_file, "w") as logf:
        child = subprocess.Popen(command, cwd=ROOT, stdout=logf, stderr=subprocess.STDOUT)
        watcher = memory.watch(child.pid)
        code = child.wait()
    wall = time.perf_counter() - t0
    busy = _busy_cpu_seconds() - busy0
    memory.stop()
    watcher.join()
    if code != 0 or not result_file.exists():
        tail = log_file.read_text(errors="replace").splitlines()[-30:]
        raise RuntimeError(
            f"{name} failed (exit {code}); last lines of {log_file}:\n" + "\n".join(tail)
        )
    result = json.loads(result_file.read_text())
    result.update(memory.as_dict(), wall_seconds=round(wall, 2))
    # CPU used by other processes on the machine while this ran: contention makes figures low.
    others = max(0.0, busy - result["cpu_seconds"])
    result["other_cpu_share"] = round(others / (wall * (os.cpu_count() or 1)), 3)
    result["mb_per_s"] = result["bytes_read"] / 1e6 / result["seconds"]
    result["files_per_s"] = result["files"] / result["seconds"]
    log(
        f"{name}: {result['seconds']:.1f}s timed, {wall:.1f}s wall, "
        f"{result['mb_per_s']:.1f} MB/s, {result['files_per_s']:.0f} files/s, "
        f"peak {memory.tree / MiB:.0f} MiB, other processes used "
        f"{100 * result['other_cpu_share']:.0f}% of the CPUs"
    )
    return result


def _busy_cpu_seconds() -> float:
    t = psutil.cpu_times()
    return t.user + t.nice + t.system + t.irq + t.softirq + getattr(t, "steal", 0.0)


def best_of(repeat: int, *variants: Callable[[], dict[str, Any]]) -> list[dict[str, Any]]:
    """Each variant's fastest of ``repeat`` runs (least disturbed by other load); peaks are the
    max. The variants take turns, so a slow spell of the machine does not favour one of them."""
    rounds = [[variant() for variant in variants] for _ in range(max(1, repeat))]
    bests = []
    for runs in zip(*rounds, strict=True):
        best = min(runs, key=lambda r: r["seconds"])
        for key in ("peak_rss_mib", "peak_executor_mib", "peak_jvm_mib", "peak_python_workers_mib"):
            best[key] = max(r[key] for r in runs)
        best["all_seconds"] = [round(r["seconds"], 2) for r in runs]
        bests.append(best)
    return bests


# --- report -----------------------------------------------------------------------------------


def _fmt(value: Any, digits: int = 1) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:,.{digits}f}"
    return f"{value:,}" if isinstance(value, int) else str(value)


def table(headers: list[str], rows: list[list[Any]], digits: int = 1) -> str:
    cells = [[_fmt(c, digits) for c in row] for row in rows]
    widths = [max(len(h), *(len(r[i]) for r in cells)) for i, h in enumerate(headers)]
    lines = [
        "  ".join(
            h.ljust(w) if i == 0 else h.rjust(w)
            for i, (h, w) in enumerate(zip(headers, widths, strict=True))
        ),
        "  ".join("-" * w for w in widths),
    ]
    for row in cells:
        lines.append(
            "  ".join(
                c.ljust(w) if i == 0 else c.rjust(w)
                for i, (c, w) in enumerate(zip(row, widths, strict=True))
            )
        )
    return "\n".join(lines)


def figures(result: dict[str, Any]) -> dict[str, Any]:
    """The comparable figures of one run."""
    return {
        "files": result["files"],
        "input_mb": round(result["bytes_read"] / 1e6, 1),
        "seconds": round(result["seconds"], 2),
        "wall_seconds": result["wall_seconds"],
        "mb_per_s": round(result["mb_per_s"], 2),
        "files_per_s": round(result["files_per_s"], 1),
        "pixel_ratio": round(result["pixels"]["all"]["ratio"] or 0, 3),
        "pixel_ratio_native": round(result["pixels"]["native"]["ratio"] or 0, 3),
        "peak_rss_mib": result["peak_rss_mib"],
        "peak_executor_mib": result["peak_executor_mib"],
        "peak_jvm_mib": result["peak_jvm_mib"],
        "peak_python_workers_mib": result["peak_python_workers_mib"],
        "other_cpu_share": result["other_cpu_share"],
        "cpu_seconds": round(result.get("cpu_seconds_timed", 0.0), 1),
        # Contention-robust: input MB per CPU-second of the whole process tree (timed part).
        "mb_per_cpu_s": round(result["bytes_read"] / 1e6 / result["cpu_seconds_timed"], 2)
        if result.get("cpu_seconds_timed")
        else None,
        "all_seconds": result.get("all_seconds"),
    }


def huge_figures(result: dict[str, Any], file_bytes: int) -> dict[str, Any]:
    """The huge-file run's time and memory, next to the file's size."""
    return {
        "file_mb": round(file_bytes / 1e6, 1),
        "seconds": round(result["seconds"], 2),
        "mb_per_s": round(result["mb_per_s"], 2),
        "peak_rss_mib": result["peak_rss_mib"],
        "peak_executor_mib": result["peak_executor_mib"],
        "peak_python_workers_mib": result["peak_python_workers_mib"],
        "peak_executor_over_file": round(result["peak_executor_mib"] * MiB / file_bytes, 3),
        "packs": result["summary"]["packs_written"],
        "all_seconds": result.get("all_seconds"),
    }


def side_by_side(title: str, ours: dict[str, Any], base: dict[str, Any] | None) -> str:
    rows = []
    keys = [
        ("input MB/s", "mb_per_s", True),
        ("files/s", "files_per_s", True),
        ("pixel ratio, all pixel data", "pixel_ratio", True),
        ("pixel ratio, native pixel data", "pixel_ratio_native", True),
        ("peak RSS, process tree (MiB)", "peak_rss_mib", False),
        ("peak RSS, JVM + Python workers (MiB)", "peak_executor_mib", False),
        ("timed seconds", "seconds", False),
        ("wall seconds, with JVM start", "wall_seconds", False),
        ("CPU share used by other processes", "other_cpu_share", False),
        ("CPU seconds, timed part (process tree)", "cpu_seconds", False),
        ("input MB per CPU second", "mb_per_cpu_s", True),
    ]
    for label, key, _higher in keys:
        b = base[key] if base else None
        ratio = ours[key] / b if b and ours[key] is not None and key != "other_cpu_share" else None
        rows.append([label, ours[key], b, ratio])
    head = f"{title}: {ours['files']:,} files, {ours['input_mb']:,.0f} MB"
    return head + "\n" + table(["", "dicomlake", "baseline", "dicomlake/baseline"], rows, 2)


def stage_rows(
    summary: dict[str, Any], profile: dict[str, Any] | None, cores: int
) -> tuple[list[list[Any]], dict[str, float]]:
    """dicomlake's time per stage; encode and encrypt split by the profile's proportions."""
    st = summary["stage_seconds"]
    mb = summary["bytes_read"] / 1e6
    enc = st.get("task.encode+encrypt", 0.0)
    share = None
    if profile:
        p = profile["profiled_seconds"]
        seal = p.get("encrypt (AES-GCM seal)", 0.0)
        encode = p.get("encode (incl. verify)", 0.0)
        if seal + encode > 0:
            share = seal / (seal + encode)
    stages: dict[str, float] = {"list (driver)": st.get("list", 0.0)}
    names = {
        "task.read": "read",
        "task.hash": "hash (SHA-256)",
        "task.parse": "parse (split, promote, JSON, elements)",
        "task.write": "write (table fragments, closing the last pack)",
    }
    for key in ("task.read", "task.hash", "task.parse"):
        stages[names[key]] = st.get(key, 0.0)
    if share is None:
        stages["encode+encrypt"] = enc
    else:
        stages["encode (codec + verify)"] = enc * (1 - share)
        stages["encrypt (AES-GCM)"] = enc * share
    stages[names["task.write"]] = st.get("task.write", 0.0)
    for key, value in st.items():  # stages this script does not know yet (e.g. task.deid)
        if key.startswith("task.") and key not in names and key != "task.encode+encrypt":
            stages[key[len("task.") :]] = value
    task_sum = sum(v for k, v in st.items() if k.startswith("task."))
    core_seconds = st.get("tasks", 0.0) * cores
    # Python worker start and imports, scheduling, result transfer, cores idle at the end of
    # an unbalanced job, and CPU taken by other processes.
    stages["outside the worker's stages (Spark, idle cores)"] = max(0.0, core_seconds - task_sum)
    for key in ("dedupe", "commit"):
        stages[f"{key} (driver)"] = st.get(key, 0.0)
    for key, value in st.items():
        if not key.startswith("task.") and key not in ("list", "tasks", "dedupe", "commit"):
            stages[f"{key} (driver)"] = value
    total = sum(stages.values())
    rows = [
        [name, secs, 100 * secs / total if total else 0.0, mb / secs if secs > 0.001 else None]
        for name, secs in stages.items()
    ]
    return rows, {k: round(v, 3) for k, v in stages.items()}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--sizes", default="0.5,1", help="landing sizes in GB (default 0.5,1)")
    parser.add_argument(
        "--size-gb", type=float, help="shorthand for --sizes SIZE/2,SIZE (default 1)"
    )
    parser.add_argument("--small-files", type=int, default=3000, help="~100 KB files (3000)")
    parser.add_argument(
        "--huge-gb", type=float, default=2.0, help="one file of this many GB (2; 0 skips it)"
    )
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--master", default="local[2]")
    parser.add_argument("--profile-mb", type=float, default=64.0, help="input MB to profile")
    parser.add_argument(
        "--quick", action="store_true", help="0.1,0.2 GB, 500 small files, a 0.5 GB file"
    )
    parser.add_argument(
        "--repeat", type=int, default=1, help="runs per contender, the fastest kept (1)"
    )
    parser.add_argument("--no-baseline", action="store_true", help="skip the baseline runs")
    parser.add_argument("--cache", type=Path, default=ROOT / ".cache" / "bench")
    parser.add_argument("--keep", action="store_true", help="keep the lakes and outputs")
    parser.add_argument(
        "--hdfs", action="store_true", help="also run the largest size on the dev HDFS"
    )
    args = parser.parse_args(argv)
    if args.quick:
        args.sizes, args.small_files, args.profile_mb = "0.1,0.2", 500, 32.0
        args.huge_gb = min(args.huge_gb, 0.5)
    sizes = sorted(float(s) for s in args.sizes.split(","))
    if args.size_gb:
        sizes = [args.size_gb / 2, args.size_gb]
    cores = int(args.master[len("local[") : -1]) if args.master.startswith("local[") else 0
    cores = cores or os.cpu_count() or 1
    work = args.cache / "runs"
    work.mkdir(parents=True, exist_ok=True)

    t = time.perf_counter()
    landings = {}
    for size in sizes:
        landings[size] = cached_landing(args.cache, size_bytes=int(size * 1e9), seed=args.seed)
        log(f"landing {size} GB: {landings[size][1].files} files at {landings[size][0]}")
    small = cached_landing(args.cache, small_files=args.small_files, seed=args.seed)
    log(f"small-file landing: {small[1].files} files, {small[1].bytes / 1e6:.0f} MB")
    # A run of a few files measures what every run costs whatever its size (Spark's first
    # job, Python workers starting, imports), so scaling is judged on the rest
    startup = cached_landing(args.cache, small_files=STARTUP_FILES, seed=args.seed)
    huge = None
    if args.huge_gb:
        huge = cached_landing(args.cache, huge_bytes=int(args.huge_gb * 1e9), seed=args.seed)
        log(f"huge-file landing: one file, {huge[1].bytes / 1e6:.0f} MB")
    build_seconds = time.perf_counter() - t

    largest = sizes[-1]
    runs: dict[str, dict[str, Any]] = {}

    def run(name: str, contender: str, landing: Path | str, extra: list[str] = (), **kw: Any):
        return functools.partial(
            run_contender, contender, landing, work, name, args.master, extra, **kw
        )

    no_verify = ["--set", "pixels.verify=false"]
    try:
        (runs["dicomlake-startup"],) = best_of(
            args.repeat, run("dicomlake-startup", "dicomlake", startup[0])
        )
        for size in sizes[:-1]:
            (runs[f"dicomlake-{size}"],) = best_of(
                args.repeat, run(f"dicomlake-{size}gb", "dicomlake", landings[size][0])
            )
        # The largest size and the small files also without the verify decode, in turns
        for key, name, landing in (
            (f"dicomlake-{largest}", f"dicomlake-{largest}gb", landings[largest][0]),
            ("dicomlake-small", "dicomlake-small", small[0]),
        ):
            runs[key], runs[f"{key}-noverify"] = best_of(
                args.repeat,
                run(name, "dicomlake", landing),
                run(f"{name}-noverify", "dicomlake", landing, no_verify),
            )
        if not args.no_baseline:
            (runs["baseline"],) = best_of(
                args.repeat, run(f"baseline-{largest}gb", "baseline", landings[largest][0])
            )
            (runs["baseline-small"],) = best_of(
                args.repeat, run("baseline-small", "baseline", small[0])
            )
        if huge is not None:
            (runs["dicomlake-huge"],) = best_of(
                args.repeat, run("dicomlake-huge", "dicomlake", huge[0])
            )
        if args.hdfs:
            with DevHdfs.running() as hdfs:
                try:
                    target = hdfs.landing(landings[largest][0])
                    for contender in ("dicomlake",) + (() if args.no_baseline else ("baseline",)):
                        (runs[f"{contender}-hdfs"],) = best_of(
                            args.repeat,
                            run(f"{contender}-hdfs-{largest}gb", contender, target, hdfs=hdfs),
                        )
                    if huge is not None:
                        (runs["dicomlake-hdfs-huge"],) = best_of(
                            args.repeat,
                            run(
                                "dicomlake-hdfs-huge", "dicomlake", hdfs.landing(huge[0]), hdfs=hdfs
                            ),
                        )
                finally:
                    if not args.keep:
                        hdfs.clean()
        profile = run_contender(
            "profile",
            landings[largest][0],
            work,
            "profile",
            args.master,
            ["--mb", str(args.profile_mb)],
        )
    finally:
        if not args.keep:
            for name in ("dicomlake", "baseline", "profile"):
                for path in work.glob(f"{name}-*"):
                    if path.is_dir():
                        shutil.rmtree(path, ignore_errors=True)
            shutil.rmtree(work / "profile", ignore_errors=True)

    main_run = runs[f"dicomlake-{largest}"]
    ours = figures(main_run)
    base = figures(runs["baseline"]) if "baseline" in runs else None
    small_ours = figures(runs["dicomlake-small"])
    small_base = figures(runs["baseline-small"]) if "baseline-small" in runs else None
    rows, stages = stage_rows(main_run["summary"], profile, cores)

    out: list[str] = []
    out.append(
        f"dicomlake ingest benchmark: Spark {args.master}, {os.cpu_count()} CPUs, "
        f"{psutil.virtual_memory().total / 2**30:.0f} GiB, local filesystem, warm page cache "
        f"(each landing zone read once before each run)"
    )
    out.append("")
    out.append(side_by_side(f"Mixed landing zone, {largest} GB", ours, base))
    out.append("")
    mix = landings[largest][1].by_kind
    out.append(
        "Mix: "
        + ", ".join(f"{k} {v['files']:,} files {v['bytes'] / 1e6:,.0f} MB" for k, v in mix.items())
    )
    codecs = main_run.get("raw_pixel_bytes_by_codec", {})
    raw_total = sum(codecs.values()) or 1
    out.append(
        "dicomlake pixel codecs (share of raw pixel bytes): "
        + ", ".join(f"{k} {100 * v / raw_total:.0f}%" for k, v in sorted(codecs.items()))
    )
    out.append("")
    out.append(
        f"Where dicomlake's time goes ({largest} GB; task stages are summed over {cores} cores; "
        "encode/encrypt split by the profile's proportions)"
    )
    out.append(table(["stage", "seconds", "% of total", "MB/s per core"], rows, 2))
    spark_tasks = (main_run.get("spark_tasks") or {}).get("stages") or []
    for stage in spark_tasks:
        durations = stage["durations"]
        out.append(
            f"Spark stage {stage['stage']}: {len(durations)} tasks, durations (s) "
            + ", ".join(f"{d:.1f}" for d in durations)
        )
    out.append("")
    out.append(
        f"Profile: process_task on {profile['files']} files, {profile['bytes_read'] / 1e6:.0f} MB, "
        f"one core, no Spark: {profile['seconds']:.2f}s "
        f"({profile['bytes_read'] / 1e6 / profile['seconds']:.1f} MB/s per core, "
        "cProfile adds overhead)"
    )
    prow = sorted(profile["profiled_seconds"].items(), key=lambda kv: -kv[1])
    out.append(
        table(
            ["function (cumulative)", "seconds", "% of task"],
            [[k, v, 100 * v / profile["seconds"]] for k, v in prow],
            3,
        )
    )
    out.append("Top functions by own time in the profile:")
    out.append(
        table(
            ["function", "own s", "cumulative s", "calls"],
            [
                [f["function"], f["self"], f["cumulative"], f["calls"]]
                for f in profile["top_self_seconds"][:10]
            ],
            3,
        )
    )
    if base:
        b = runs["baseline"]["stage_seconds"]
        out.append("")
        out.append(
            "Baseline time per stage (summed over tasks): "
            + ", ".join(f"{k} {v:.1f}s" for k, v in b.items())
        )
    out.append("")
    out.append(side_by_side("Small-file case", small_ours, small_base))
    unverified = figures(runs[f"dicomlake-{largest}-noverify"])
    small_unverified = figures(runs["dicomlake-small-noverify"])
    out.append("")
    out.append(
        "What the verify decode costs: dicomlake with pixels.verify false (each compressed chunk "
        "is then written without being decoded and compared; the baseline checks nothing)"
    )
    out.append(
        table(
            ["", "verify (default)", "no verify", "no verify / verify"],
            [
                [label, a[key], b[key], b[key] / a[key] if a[key] else None]
                for label, key, a, b in (
                    (f"{largest} GB: input MB/s", "mb_per_s", ours, unverified),
                    (f"{largest} GB: CPU seconds", "cpu_seconds", ours, unverified),
                    ("small files: files/s", "files_per_s", small_ours, small_unverified),
                    ("small files: CPU seconds", "cpu_seconds", small_ours, small_unverified),
                )
            ],
            2,
        )
    )
    huge_file = huge_figures(runs["dicomlake-huge"], huge[1].bytes) if huge else None
    if huge_file is not None:
        out.append("")
        out.append(
            f"Huge-file case: one {huge_file['file_mb']:,.0f} MB multi-frame CT, streamed "
            "(one Spark task; memory against the file's size)"
        )
        out.append(
            table(
                ["", "dicomlake"],
                [
                    ["file MB", huge_file["file_mb"]],
                    ["timed seconds", huge_file["seconds"]],
                    ["input MB/s", huge_file["mb_per_s"]],
                    ["peak RSS, process tree (MiB)", huge_file["peak_rss_mib"]],
                    ["peak RSS, JVM + Python workers (MiB)", huge_file["peak_executor_mib"]],
                    ["peak RSS, Python workers (MiB)", huge_file["peak_python_workers_mib"]],
                    ["peak executor RSS / file size", huge_file["peak_executor_over_file"]],
                ],
                2,
            )
        )
    hdfs_ours = figures(runs["dicomlake-hdfs"]) if "dicomlake-hdfs" in runs else None
    hdfs_base = figures(runs["baseline-hdfs"]) if "baseline-hdfs" in runs else None
    if hdfs_ours is not None:
        out.append("")
        out.append(
            side_by_side(
                f"HDFS case: the {largest} GB landing zone and the output on the dev HDFS, on this "
                "machine (its NameNode and DataNode share the CPUs, their memory is not counted)",
                hdfs_ours,
                hdfs_base,
            )
        )
    hdfs_huge = (
        huge_figures(runs["dicomlake-hdfs-huge"], huge[1].bytes)
        if huge and "dicomlake-hdfs-huge" in runs
        else None
    )
    if hdfs_huge is not None:
        out.append(
            f"Huge file on the dev HDFS: {hdfs_huge['mb_per_s']:.1f} MB/s "
            f"({hdfs_huge['seconds']:.1f} s), peak RSS of JVM + Python workers "
            f"{hdfs_huge['peak_executor_mib']:.0f} MiB"
        )
    out.append("")
    scale_rows = []
    for size in sizes:
        r = runs[f"dicomlake-{size}"]
        gb = r["bytes_read"] / 1e9
        scale_rows.append(
            [f"{size} GB", r["files"], gb, r["seconds"], r["seconds"] / gb, r["mb_per_s"]]
        )
    startup_seconds = runs["dicomlake-startup"]["seconds"]
    # Seconds per GB beyond the start-up a run of a few files takes: equal at both sizes when
    # the time grows linearly with the input
    spg = [(row[3] - startup_seconds) / row[2] for row in scale_rows]
    growth = spg[-1] / spg[0] if len(spg) > 1 and spg[0] > 0 else None
    linear = growth is not None and 0.8 <= growth <= 1.2
    out.append("Scaling (dicomlake)")
    out.append(table(["size", "files", "GB", "seconds", "s/GB", "MB/s"], scale_rows, 2))
    out.append(
        f"Start-up, a run of {STARTUP_FILES} small files: {startup_seconds:.1f} s. "
        f"Seconds per GB beyond it: {', '.join(f'{v:.1f}' for v in spg)}; "
        f"at {sizes[-1]} GB / at {sizes[0]} GB = {_fmt(growth, 2)}: "
        + ("linear (within ±20%)" if linear else "NOT linear (outside ±20%)")
    )
    # Every case counts, the huge file too: streaming keeps it within the same memory
    peak_executor = max(
        r["peak_executor_mib"] for r in (ours, small_ours, huge_file) if r is not None
    )
    checks = {
        "mb_per_s": ours["mb_per_s"] >= TARGETS["mb_per_s"],
        "small_files_per_s": small_ours["files_per_s"] >= TARGETS["small_files_per_s"],
        "pixel_ratio": ours["pixel_ratio_native"] >= TARGETS["pixel_ratio"],
        "peak_executor_mib": peak_executor < TARGETS["peak_executor_mib"],
        "linear_scaling": linear,
    }
    out.append("")
    out.append("Targets")
    out.append(
        table(
            ["target", "wanted", "measured", "met"],
            [
                [
                    "input MB/s",
                    f">= {TARGETS['mb_per_s']:.0f}",
                    ours["mb_per_s"],
                    checks["mb_per_s"],
                ],
                [
                    "small files/s",
                    f">= {TARGETS['small_files_per_s']:.0f}",
                    small_ours["files_per_s"],
                    checks["small_files_per_s"],
                ],
                ["input MB/s, pixels.verify false", "(info)", unverified["mb_per_s"], "-"],
                [
                    "small files/s, pixels.verify false",
                    "(info)",
                    small_unverified["files_per_s"],
                    "-",
                ],
                [
                    "pixel ratio (native)",
                    f">= {TARGETS['pixel_ratio']}",
                    ours["pixel_ratio_native"],
                    checks["pixel_ratio"],
                ],
                [
                    "pixel ratio (all)",
                    "(info)",
                    ours["pixel_ratio"],
                    "-",
                ],
                [
                    "peak MiB per executor",
                    f"< {TARGETS['peak_executor_mib']:.0f}",
                    peak_executor,
                    checks["peak_executor_mib"],
                ],
                ["linear scaling", "s/GB beyond start-up ±20%", growth, checks["linear_scaling"]],
            ],
            2,
        )
    )
    print("\n".join(out), flush=True)

    def ratio(key: str, a: dict[str, Any], b: dict[str, Any] | None) -> float | None:
        return round(a[key] / b[key], 3) if b and b[key] else None

    record = {
        "bench": "ingest",
        "schema": 1,
        "at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "git": _git_commit(),
        "machine": {
            "cpus": os.cpu_count(),
            "mem_gib": round(psutil.virtual_memory().total / 2**30, 1),
            "python": platform.python_version(),
            "master": args.master,
        },
        "params": {
            "sizes_gb": sizes,
            "small_files": args.small_files,
            "huge_gb": args.huge_gb,
            "seed": args.seed,
            "generator_version": GENERATOR_VERSION,
            "landing_build_seconds": round(build_seconds, 1),
        },
        "dicomlake": ours,
        "baseline": base,
        "dicomlake_over_baseline": {
            k: ratio(k, ours, base)
            for k in ("mb_per_s", "files_per_s", "pixel_ratio", "peak_rss_mib")
        },
        "small_files": {
            "dicomlake": small_ours,
            "baseline": small_base,
            "dicomlake_over_baseline_files_per_s": ratio("files_per_s", small_ours, small_base),
        },
        "without_verify": {"dicomlake": unverified, "small_files": small_unverified},
        "huge_file": huge_file,
        "hdfs": None
        if hdfs_ours is None
        else {
            "dicomlake": hdfs_ours,
            "baseline": hdfs_base,
            "dicomlake_over_baseline_mb_per_s": ratio("mb_per_s", hdfs_ours, hdfs_base),
            "huge_file": hdfs_huge,
        },
        "stages_seconds": stages,
        "spark_task_seconds": [st["durations"] for st in spark_tasks],
        "profile_seconds": {k: round(v, 3) for k, v in profile["profiled_seconds"].items()},
        "baseline_stage_seconds": runs["baseline"]["stage_seconds"] if base else None,
        "scaling": {
            "runs": [
                {
                    "size_gb": float(row[0].split()[0]),
                    "files": row[1],
                    "seconds": round(row[3], 2),
                    "s_per_gb": round(row[4], 2),
                }
                for row in scale_rows
            ],
            "startup_seconds": round(startup_seconds, 2),
            "s_per_gb_beyond_startup": [round(v, 2) for v in spg],
            "growth": round(growth, 3) if growth else None,
            "linear": linear,
        },
        "targets": TARGETS,
        "targets_met": checks,
    }
    print(json.dumps(record, separators=(",", ":")), flush=True)
    return 0


def _git_commit() -> str | None:
    try:
        return subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"],
            cwd=ROOT,
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return None


if __name__ == "__main__":
    sys.exit(main())
