"""Ingest benchmark: dicomlake versus a naive Spark job, dcm2json and Orthanc, on real images.

    .venv/bin/python bench/ingest_bench.py          # 0.5 and 1 GB, 3,000 small files, a 2 GB file
    .venv/bin/python bench/ingest_bench.py --quick  # smoke: 0.1, 0.2 GB, 500 small, 0.5 GB, 2 heavy
    .venv/bin/python bench/ingest_bench.py --sizes 1,2 --small-files 5000 --seed 7 --repeat 2
    .venv/bin/python bench/ingest_bench.py --hdfs   # and the largest size again, on HDFS

Three phases, all in this one invocation (``build_landings``, ``run_contenders``, ``report``):

1. Builds (or reuses, from ``.cache/bench/``) deterministic synthetic landing zones made of the
   real images of pydicom, pydicom-data and deid-data with new UIDs (see synth_landing.py): one
   per size, a small-file case of ~100 KB files, and a huge-file case: one multi-frame CT of
   ``--huge-gb`` GB, which dicomlake streams (it is over ``ingest.stream_bytes``); and the
   element-heavy sets of ``--heavy-files`` files each (heavy_sets.py: an SR of 150,000
   elements, an RT structure set of 200 ROIs x 100 contours, an enhanced CT of 1,000 frames,
   and the SR again with half its elements, for linearity in the element count).
2. Runs each contender in its own process (bench/ingest_runs.py: a fresh JVM each, Spark
   ``local[2]``, the same Spark settings), after reading the landing zone once so both start
   from a warm page cache (the benchmark cannot drop the OS cache without privileges). The
   process tree's memory (PSS: driver Python, JVM, Python workers) is sampled every 0.5 s. The
   contenders of one case (the largest size, the small files, each element-heavy set) take
   turns, so that a slow spell of the machine weighs on them alike.
   - dicomlake: ``run_ingest`` into an empty lake, at every size, on the small files and on
     the huge file, and on each element-heavy set;
   - dcm2json (DCMTK) on each element-heavy set, file after file on one core: elements/s;
   - Orthanc (orthanc_peer.py), started on a free port and fed by two client threads over its
     REST API, without then with ``StorageCompression``, on the largest size, the small files
     and each element-heavy set (``--no-orthanc`` skips it); bench/setup.sh installs DCMTK and
     Orthanc when they are missing;
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
3. Prints the side-by-side table, where dicomlake's time goes, the small-file case, scaling, the
   element-heavy sets against dcm2json, Orthanc beside dicomlake (MB/s, files/s, stored size)
   and the targets, and, as its last line, one JSON object with all the figures.

Throughput is input bytes (or files) over the timed part: for dicomlake ``run_ingest`` from
listing to commit, for the baseline from ``spark.read`` to the end of the Parquet write. The
runtime's start is not in it, as Orthanc's is not: the JVM's (it is in ``wall_seconds``) and
the executors' Python workers' (``python_workers_seconds``, started before the clock). Other
load on the machine lowers every figure: each run reports the share of the CPUs other processes
used meanwhile, and input MB per CPU second of its own process tree, which contention changes
much less; ``--repeat N`` keeps the fastest of N runs. Before each run the same single-core
work is timed (machine_speed.py), and the report says how much the machine's own speed moved
over the runs.
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
import statistics
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
import machine_speed  # noqa: E402
import orthanc_peer  # noqa: E402
from cpu_share import busy_cpu_seconds, other_cpu_share  # noqa: E402
from heavy_sets import HEAVY, HEAVY_VERSION, cached_heavy  # noqa: E402
from synth_landing import GENERATOR_VERSION, Built, cached_landing  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
RUNNER = Path(__file__).resolve().parent / "ingest_runs.py"
SETUP = Path(__file__).resolve().parent / "setup.sh"
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
    "over_baseline": 5.0,  # input MB/s of dicomlake / the naive baseline's, largest size
    "header_elements_per_s": 150_000.0,  # per core, element-heavy sets, and dcm2json's
}


MACHINE_SPREAD = 0.1
"""A change of the machine's own speed between runs beyond which the report warns."""

# The task stages that make up the header path (split, then the header's records)
HEADER_STAGES = ("parse", "header")


def log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


# --- memory of a process tree -----------------------------------------------------------------


@dataclass
class MemoryPeak:
    """Peak memory of a process tree, sampled: total, the JVM, Python workers (not the driver).

    Each process counts its proportional set size (PSS): a page that several processes share,
    as the Python worker daemon's preloaded heap is shared with the workers it forks, counts
    once in their sum, where their RSS would count it in each.
    """

    tree: int = 0
    jvm: int = 0
    workers: int = 0
    executor: int = 0  # JVM + Python workers at the same instant: local mode's one executor
    samples: int = 0
    cpu: dict[int, float] = field(default_factory=dict)  # pid -> user+system seconds seen last
    _stop: threading.Event = field(default_factory=threading.Event)

    def watch(self, pid: int, interval: float = 0.5) -> threading.Thread:
        """Sample every ``interval`` seconds: a PSS sample costs about 2 ms a process (the
        kernel walks its page tables), 10 ms for a run's tree, which every 0.2 s took 3-5%
        of a core from the run it measured."""

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
                        held = proc.memory_full_info().pss
                        name = proc.name()
                        times = proc.cpu_times()
                    except psutil.Error:
                        continue
                    self.cpu[proc.pid] = times.user + times.system
                    tree += held
                    if name == "java":
                        jvm += held
                    elif proc.pid != pid:
                        workers += held
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
            "peak_tree_mib": round(self.tree / MiB, 1),
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
    busy0 = busy_cpu_seconds()
    t0 = time.perf_counter()
    with open(log_file, "w") as logf:
        child = subprocess.Popen(command, cwd=ROOT, stdout=logf, stderr=subprocess.STDOUT)
        watcher = memory.watch(child.pid)
        code = child.wait()
    wall = time.perf_counter() - t0
    busy = busy_cpu_seconds() - busy0
    memory.stop()
    watcher.join()
    if code != 0 or not result_file.exists():
        tail = log_file.read_text(errors="replace").splitlines()[-30:]
        raise RuntimeError(
            f"{name} failed (exit {code}); last lines of {log_file}:\n" + "\n".join(tail)
        )
    result = json.loads(result_file.read_text())
    result.update(memory.as_dict(), wall_seconds=round(wall, 2))
    result["other_cpu_share"] = other_cpu_share(busy, result["cpu_seconds"], wall)
    result["mb_per_s"] = result["bytes_read"] / 1e6 / result["seconds"]
    result["files_per_s"] = result["files"] / result["seconds"]
    log(
        f"{name}: {result['seconds']:.1f}s timed, {wall:.1f}s wall, "
        f"{result['mb_per_s']:.1f} MB/s, {result['files_per_s']:.0f} files/s, "
        f"peak {memory.tree / MiB:.0f} MiB, other processes used "
        f"{100 * result['other_cpu_share']:.0f}% of the CPUs"
    )
    return result


PEAKS = ("peak_tree_mib", "peak_executor_mib", "peak_jvm_mib", "peak_python_workers_mib")
"""A Spark run's peak memory figures, MiB."""


def best_of(repeat: int, *variants: Callable[[], dict[str, Any]]) -> list[dict[str, Any]]:
    """Each variant's fastest of ``repeat`` runs (least disturbed by other load); peaks are the
    max. The variants take turns, so a slow spell of the machine does not favour one of them."""
    rounds = [[_probed(variant) for variant in variants] for _ in range(max(1, repeat))]
    bests = []
    for runs in zip(*rounds, strict=True):
        best = min(runs, key=lambda r: r["seconds"])
        for key in PEAKS:
            if key in best:  # a Spark run's; dcm2json and Orthanc are not sampled
                best[key] = max(r[key] for r in runs)
        best["all_seconds"] = [round(r["seconds"], 2) for r in runs]
        best["all_probe_seconds"] = [r["probe_seconds"] for r in runs]
        bests.append(best)
    return bests


def _probed(variant: Callable[[], dict[str, Any]]) -> dict[str, Any]:
    """``variant``'s result, with the machine's speed just before it (`machine_speed.probe`)."""
    speed = machine_speed.probe()
    result = variant()
    result["probe_seconds"] = round(speed, 4)
    return result


# --- report -----------------------------------------------------------------------------------


def _fmt(value: Any, digits: int = 1) -> str:
    if value is None:
        return "-"
    if isinstance(value, bool):  # a target met or not
        return "yes" if value else "NO"
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
        "python_workers_seconds": round(result["python_workers_seconds"], 2),
        "mb_per_s": round(result["mb_per_s"], 2),
        "files_per_s": round(result["files_per_s"], 1),
        "pixel_ratio": round(result["pixels"]["all"]["ratio"] or 0, 3),
        "pixel_ratio_native": round(result["pixels"]["native"]["ratio"] or 0, 3),
        "stored_mb": round(result["stored_bytes"] / 1e6, 1) if "stored_bytes" in result else None,
        "peak_tree_mib": result["peak_tree_mib"],
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
        "peak_tree_mib": result["peak_tree_mib"],
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
        ("peak memory (PSS), process tree (MiB)", "peak_tree_mib", False),
        ("peak memory (PSS), JVM + Python workers (MiB)", "peak_executor_mib", False),
        ("timed seconds", "seconds", False),
        ("Python workers' start, before the clock (s)", "python_workers_seconds", False),
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


def stage_rows(summary: dict[str, Any], cores: int) -> tuple[list[list[Any]], dict[str, float]]:
    """dicomlake's time per stage (a task's stages are its own thread's wall time)."""
    st = summary["stage_seconds"]
    mb = summary["bytes_read"] / 1e6
    stages: dict[str, float] = {"list (driver)": st.get("list", 0.0)}
    names = {
        "task.start": "start (a worker's first conversions)",
        "task.read": "read",
        "task.hash": "hash (SHA-256)",
        "task.parse": "parse (split: walk, frames)",
        "task.header": "header (JSON, element rows, de-id, promoted values)",
        "task.encode": "encode (codec + verify)",
        "task.encrypt": "encrypt (SHA-256, AES-GCM, pack writes)",
        "task.rows": "rows",
        "task.write": "write (table fragments, closing the last pack)",
    }
    for key, name in names.items():
        stages[name] = st.get(key, 0.0)
    for key, value in st.items():  # stages this script does not know yet
        if key.startswith("task.") and key not in names:
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


def parse_args(argv: list[str] | None) -> argparse.Namespace:
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
    parser.add_argument(
        "--heavy-files", type=int, default=4, help="files per element-heavy set (4; 0 skips them)"
    )
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--master", default="local[2]")
    parser.add_argument("--profile-mb", type=float, default=64.0, help="input MB to profile")
    parser.add_argument(
        "--quick",
        action="store_true",
        help="0.1,0.2 GB, 500 small files, a 0.5 GB file, 2 files per element-heavy set",
    )
    parser.add_argument(
        "--repeat", type=int, default=1, help="runs per contender, the fastest kept (1)"
    )
    parser.add_argument("--no-baseline", action="store_true", help="skip the baseline runs")
    parser.add_argument("--no-orthanc", action="store_true", help="skip the Orthanc runs")
    parser.add_argument("--cache", type=Path, default=ROOT / ".cache" / "bench")
    parser.add_argument("--keep", action="store_true", help="keep the lakes and outputs")
    parser.add_argument(
        "--hdfs", action="store_true", help="also run the largest size on the dev HDFS"
    )
    args = parser.parse_args(argv)
    if args.quick:
        args.sizes, args.small_files, args.profile_mb = "0.1,0.2", 500, 32.0
        args.huge_gb = min(args.huge_gb, 0.5)
        args.heavy_files = min(args.heavy_files, 2)
    args.size_list = sorted(float(s) for s in args.sizes.split(","))
    if args.size_gb:
        args.size_list = [args.size_gb / 2, args.size_gb]
    cores = int(args.master[len("local[") : -1]) if args.master.startswith("local[") else 0
    args.cores = cores or os.cpu_count() or 1
    args.work = args.cache / "runs"
    return args


Landing = tuple[Path, Built]


@dataclass(frozen=True)
class Landings:
    """Every landing zone of one benchmark run, built or taken from the cache."""

    mix: dict[float, Landing]  # size in GB -> landing zone
    small: Landing
    startup: Landing
    huge: Landing | None
    heavy: dict[str, Landing]  # element-heavy set name -> landing zone
    build_seconds: float

    @property
    def largest(self) -> float:
        return max(self.mix)


def build_landings(args: argparse.Namespace) -> Landings:
    """Phase 1: the landing zones, from the cache or built deterministically."""
    t = time.perf_counter()
    mix = {}
    for size in args.size_list:
        mix[size] = cached_landing(args.cache, size_bytes=int(size * 1e9), seed=args.seed)
        log(f"landing {size} GB: {mix[size][1].files} files at {mix[size][0]}")
    small = cached_landing(args.cache, small_files=args.small_files, seed=args.seed)
    log(f"small-file landing: {small[1].files} files, {small[1].bytes / 1e6:.0f} MB")
    # A run of a few files measures what every run costs whatever its size (Spark's first
    # job, Python workers starting, imports), so scaling is judged on the rest
    startup = cached_landing(args.cache, small_files=STARTUP_FILES, seed=args.seed)
    huge = None
    if args.huge_gb:
        huge = cached_landing(args.cache, huge_bytes=int(args.huge_gb * 1e9), seed=args.seed)
        log(f"huge-file landing: one file, {huge[1].bytes / 1e6:.0f} MB")
    heavy = {}
    if args.heavy_files:
        for kind in HEAVY:
            heavy[kind] = cached_heavy(args.cache, kind, args.heavy_files, args.seed)
            log(
                f"element-heavy {kind}: {args.heavy_files} files, "
                f"{heavy[kind][1].by_kind[kind]['elements']:,} elements"
            )
    return Landings(mix, small, startup, huge, heavy, time.perf_counter() - t)


def run_contenders(args: argparse.Namespace, landings: Landings) -> dict[str, dict[str, Any]]:
    """Phase 2: every run, each contender in its own process; results by run name."""
    work: Path = args.work
    work.mkdir(parents=True, exist_ok=True)
    largest = landings.largest
    runs: dict[str, dict[str, Any]] = {}

    def run(name: str, contender: str, landing: Path | str, extra: list[str] = (), **kw: Any):
        return functools.partial(
            run_contender, contender, landing, work, name, args.master, extra, **kw
        )

    no_verify = ["--set", "pixels.verify=false"]
    mix, small, huge = landings.mix, landings.small, landings.huge

    def orthanc(case: str, landing: Path) -> dict[str, Callable[[], dict[str, Any]]]:
        if args.no_orthanc:
            return {}
        return {
            f"orthanc-{kind}-{case}": functools.partial(
                run_orthanc, landing, compression, work / f"orthanc-{kind}-{case}.log"
            )
            for kind, compression in (("raw", False), ("zlib", True))
        }

    def turns(variants: dict[str, Callable[[], dict[str, Any]]]) -> None:
        runs.update(zip(variants, best_of(args.repeat, *variants.values()), strict=True))

    try:
        turns({"dicomlake-startup": run("dicomlake-startup", "dicomlake", landings.startup[0])})
        for size in args.size_list[:-1]:
            turns({f"dicomlake-{size}": run(f"dicomlake-{size}gb", "dicomlake", mix[size][0])})
        # Every contender of a case in turns, so that a slow spell of the machine does not
        # favour one of them; the largest size and the small files also without the verify
        # decode
        for case, key, label, base_key, landing in (
            ("mix", f"dicomlake-{largest}", f"{largest}gb", "baseline", mix[largest][0]),
            ("small", "dicomlake-small", "small", "baseline-small", small[0]),
        ):
            name = f"dicomlake-{label}"
            variants = {
                key: run(name, "dicomlake", landing),
                f"{key}-noverify": run(f"{name}-noverify", "dicomlake", landing, no_verify),
            }
            if not args.no_baseline:
                variants[base_key] = run(f"baseline-{label}", "baseline", landing)
            turns({**variants, **orthanc(case, landing)})
        if huge is not None:
            turns({"dicomlake-huge": run("dicomlake-huge", "dicomlake", huge[0])})
        for kind, (landing, _) in landings.heavy.items():
            turns(
                {
                    f"dicomlake-heavy-{kind}": run(f"dicomlake-heavy-{kind}", "dicomlake", landing),
                    f"dcm2json-{kind}": functools.partial(run_dcm2json, landing),
                    **orthanc(f"heavy-{kind}", landing),
                }
            )
        if args.hdfs:
            run_on_hdfs(args, landings, run, runs)
        runs["profile"] = run_contender(
            "profile",
            mix[largest][0],
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
    return runs


def run_on_hdfs(
    args: argparse.Namespace,
    landings: Landings,
    run: Callable[..., Callable[[], dict[str, Any]]],
    runs: dict[str, dict[str, Any]],
) -> None:
    """Both contenders on the largest landing zone (and dicomlake on the huge file), on HDFS."""
    largest = landings.largest
    with DevHdfs.running() as hdfs:
        try:
            target = hdfs.landing(landings.mix[largest][0])
            for contender in ("dicomlake",) + (() if args.no_baseline else ("baseline",)):
                (runs[f"{contender}-hdfs"],) = best_of(
                    args.repeat,
                    run(f"{contender}-hdfs-{largest}gb", contender, target, hdfs=hdfs),
                )
            if landings.huge is not None:
                huge = hdfs.landing(landings.huge[0])
                (runs["dicomlake-hdfs-huge"],) = best_of(
                    args.repeat, run("dicomlake-hdfs-huge", "dicomlake", huge, hdfs=hdfs)
                )
        finally:
            if not args.keep:
                hdfs.clean()


def run_dcm2json(landing: Path) -> dict[str, Any]:
    """DCMTK's dcm2json on every file, one after the other (one core), output discarded."""
    binary = shutil.which("dcm2json")
    if binary is None:
        subprocess.run(["bash", str(SETUP)], stdout=sys.stderr, check=True)
        binary = shutil.which("dcm2json")
        assert binary is not None, "bench/setup.sh installs dcmtk"
    files = sorted(p for p in landing.rglob("*") if p.is_file())
    warmed = warm(LocalFileSystem(), str(landing))
    log(f"dcm2json on {landing} (warmed in {warmed:.1f}s)")
    before, busy0 = os.times(), busy_cpu_seconds()
    t0 = time.perf_counter()
    for path in files:
        subprocess.run(
            [binary, "--compact-code", str(path), os.devnull],
            check=True,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
    seconds = time.perf_counter() - t0
    after, busy = os.times(), busy_cpu_seconds() - busy0
    cpu = (after.children_user - before.children_user) + (
        after.children_system - before.children_system
    )
    log(f"dcm2json: {len(files)} files in {seconds:.2f}s ({cpu:.2f} CPU s)")
    return {
        "contender": "dcm2json",
        "seconds": seconds,
        "cpu_seconds": cpu,
        "other_cpu_share": other_cpu_share(busy, cpu, seconds),
        "files": len(files),
        "bytes_read": sum(p.stat().st_size for p in files),
    }


def run_orthanc(landing: Path, compression: bool, log_file: Path) -> dict[str, Any]:
    """Orthanc storing the landing zone (bench/orthanc_peer.py), from a warm page cache."""
    warmed = warm(LocalFileSystem(), str(landing))
    what = "with" if compression else "without"
    log(f"Orthanc {what} compression on {landing} (warmed in {warmed:.1f}s), log {log_file}")
    result = orthanc_peer.measure(landing, compression, log_file)
    log(
        f"Orthanc {what} compression: {result['seconds']:.1f}s, {result['mb_per_s']:.1f} MB/s, "
        f"{result['files_per_s']:.0f} files/s, stored {result['stored_bytes'] / 1e6:.0f} MB, "
        f"other processes used {100 * result['other_cpu_share']:.0f}% of the CPUs"
    )
    return result


def report(args: argparse.Namespace, landings: Landings, runs: dict[str, dict[str, Any]]):
    """Phase 3: the printed tables and the JSON record of every figure."""
    largest = landings.largest
    ours = figures(runs[f"dicomlake-{largest}"])
    small_ours = figures(runs["dicomlake-small"])
    out = [
        f"dicomlake ingest benchmark: Spark {args.master}, {os.cpu_count()} CPUs, "
        f"{psutil.virtual_memory().total / 2**30:.0f} GiB, local filesystem, warm page cache "
        f"(each landing zone read once before each run)",
        "",
    ]
    record: dict[str, Any] = {
        "bench": "ingest",
        "schema": 2,
        "at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "git": _git_commit(),
        "machine": {
            "cpus": os.cpu_count(),
            "mem_gib": round(psutil.virtual_memory().total / 2**30, 1),
            "python": platform.python_version(),
            "master": args.master,
        },
        "params": {
            "sizes_gb": args.size_list,
            "small_files": args.small_files,
            "huge_gb": args.huge_gb,
            "heavy_files": args.heavy_files,
            "seed": args.seed,
            "generator_version": GENERATOR_VERSION,
            "heavy_version": HEAVY_VERSION,
            "landing_build_seconds": round(landings.build_seconds, 1),
        },
    }
    for section in (
        report_mix,
        report_small,
        report_huge,
        report_hdfs,
        report_scaling,
        report_heavy,
        report_orthanc,
        report_machine,
    ):
        lines, figures_ = section(args, landings, runs)
        if lines:
            out += [*lines, ""]
        record.update(figures_)
    lines, figures_ = report_targets(record, ours, small_ours)
    out += lines
    record.update(figures_)
    return "\n".join(out), record


def _ratio(key: str, a: dict[str, Any], b: dict[str, Any] | None) -> float | None:
    return round(a[key] / b[key], 3) if b and b[key] else None


def report_mix(args: argparse.Namespace, landings: Landings, runs: dict[str, dict[str, Any]]):
    """The mixed landing zone against the baseline, where dicomlake's time goes, the profile."""
    largest = landings.largest
    main_run, profile = runs[f"dicomlake-{largest}"], runs["profile"]
    ours = figures(main_run)
    base = figures(runs["baseline"]) if "baseline" in runs else None
    rows, stages = stage_rows(main_run["summary"], args.cores)
    out = [side_by_side(f"Mixed landing zone, {largest} GB", ours, base), ""]
    mix = landings.mix[largest][1].by_kind
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
        f"Where dicomlake's time goes ({largest} GB; task stages are summed over {args.cores} "
        "cores)"
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
    return out, {
        "dicomlake": ours,
        "baseline": base,
        "dicomlake_over_baseline": {
            k: _ratio(k, ours, base)
            for k in ("mb_per_s", "files_per_s", "pixel_ratio", "peak_tree_mib")
        },
        "stages_seconds": stages,
        "spark_task_seconds": [st["durations"] for st in spark_tasks],
        "profile_seconds": {k: round(v, 3) for k, v in profile["profiled_seconds"].items()},
        "baseline_stage_seconds": runs["baseline"]["stage_seconds"] if base else None,
    }


def report_small(args: argparse.Namespace, landings: Landings, runs: dict[str, dict[str, Any]]):
    """The small-file case, and what the verify decode costs there and on the mix."""
    largest = landings.largest
    ours = figures(runs[f"dicomlake-{largest}"])
    small_ours = figures(runs["dicomlake-small"])
    small_base = figures(runs["baseline-small"]) if "baseline-small" in runs else None
    unverified = figures(runs[f"dicomlake-{largest}-noverify"])
    small_unverified = figures(runs["dicomlake-small-noverify"])
    out = [side_by_side("Small-file case", small_ours, small_base), ""]
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
    return out, {
        "small_files": {
            "dicomlake": small_ours,
            "baseline": small_base,
            "dicomlake_over_baseline_files_per_s": _ratio("files_per_s", small_ours, small_base),
        },
        "without_verify": {"dicomlake": unverified, "small_files": small_unverified},
    }


def report_huge(args: argparse.Namespace, landings: Landings, runs: dict[str, dict[str, Any]]):
    """The huge file: time and memory next to its size."""
    if landings.huge is None:
        return [], {"huge_file": None}
    huge_file = huge_figures(runs["dicomlake-huge"], landings.huge[1].bytes)
    out = [
        f"Huge-file case: one {huge_file['file_mb']:,.0f} MB multi-frame CT, streamed "
        "(one Spark task; memory against the file's size)",
        table(
            ["", "dicomlake"],
            [
                ["file MB", huge_file["file_mb"]],
                ["timed seconds", huge_file["seconds"]],
                ["input MB/s", huge_file["mb_per_s"]],
                ["peak memory (PSS), process tree (MiB)", huge_file["peak_tree_mib"]],
                ["peak memory (PSS), JVM + Python workers (MiB)", huge_file["peak_executor_mib"]],
                ["peak memory (PSS), Python workers (MiB)", huge_file["peak_python_workers_mib"]],
                ["peak executor memory / file size", huge_file["peak_executor_over_file"]],
            ],
            2,
        ),
    ]
    return out, {"huge_file": huge_file}


def report_hdfs(args: argparse.Namespace, landings: Landings, runs: dict[str, dict[str, Any]]):
    """Both contenders with input and output on the dev HDFS."""
    if "dicomlake-hdfs" not in runs:
        return [], {"hdfs": None}
    hdfs_ours = figures(runs["dicomlake-hdfs"])
    hdfs_base = figures(runs["baseline-hdfs"]) if "baseline-hdfs" in runs else None
    out = [
        side_by_side(
            f"HDFS case: the {landings.largest} GB landing zone and the output on the dev HDFS, "
            "on this machine (its NameNode and DataNode share the CPUs, their memory is not "
            "counted)",
            hdfs_ours,
            hdfs_base,
        )
    ]
    hdfs_huge = None
    if landings.huge is not None and "dicomlake-hdfs-huge" in runs:
        hdfs_huge = huge_figures(runs["dicomlake-hdfs-huge"], landings.huge[1].bytes)
        out.append(
            f"Huge file on the dev HDFS: {hdfs_huge['mb_per_s']:.1f} MB/s "
            f"({hdfs_huge['seconds']:.1f} s), peak memory (PSS) of JVM + Python workers "
            f"{hdfs_huge['peak_executor_mib']:.0f} MiB"
        )
    return out, {
        "hdfs": {
            "dicomlake": hdfs_ours,
            "baseline": hdfs_base,
            "dicomlake_over_baseline_mb_per_s": _ratio("mb_per_s", hdfs_ours, hdfs_base),
            "huge_file": hdfs_huge,
        }
    }


def _within(growth: float | None) -> bool | None:
    """Whether time per unit grows by at most ±20%; None when there was nothing to compare."""
    return None if growth is None else 0.8 <= growth <= 1.2


def _linearity(linear: bool | None, needs: str) -> str:
    if linear is None:
        return f"not measured: it needs {needs}"
    return "linear (within ±20%)" if linear else "NOT linear (outside ±20%)"


def report_scaling(args: argparse.Namespace, landings: Landings, runs: dict[str, dict[str, Any]]):
    """Seconds per GB beyond the start-up, at each size: equal when time is linear in size."""
    scale_rows = []
    for size in args.size_list:
        r = runs[f"dicomlake-{size}"]
        gb = r["bytes_read"] / 1e9
        scale_rows.append(
            [f"{size} GB", r["files"], gb, r["seconds"], r["seconds"] / gb, r["mb_per_s"]]
        )
    startup_seconds = runs["dicomlake-startup"]["seconds"]
    spg = [(row[3] - startup_seconds) / row[2] for row in scale_rows]
    growth = spg[-1] / spg[0] if len(spg) > 1 and spg[0] > 0 else None
    linear = _within(growth)
    out = [
        "Scaling (dicomlake)",
        table(["size", "files", "GB", "seconds", "s/GB", "MB/s"], scale_rows, 2),
        f"Start-up, a run of {STARTUP_FILES} small files: {startup_seconds:.1f} s. "
        f"Seconds per GB beyond it: {', '.join(f'{v:.1f}' for v in spg)}; "
        f"at {args.size_list[-1]} GB / at {args.size_list[0]} GB = {_fmt(growth, 2)}: "
        + _linearity(linear, "two sizes or more (--sizes)"),
    ]
    return out, {
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
        }
    }


def heavy_figures(
    run: dict[str, Any], dcm2json: dict[str, Any], elements: int, cores: int
) -> dict[str, Any]:
    """One element-heavy set: dicomlake's elements/s (end to end, per core, header path per
    core: the core-seconds of the parse and header stages, which split the file and write its
    JSON, element rows, de-identification and promoted values) next to dcm2json's on one core."""
    ours = figures(run)
    stages = run["summary"]["stage_seconds"]
    parse = sum(stages.get(f"task.{stage}", 0.0) for stage in HEADER_STAGES)
    header = elements / parse if parse else None
    end_to_end = elements / (run["seconds"] * cores)
    dcmtk = elements / dcm2json["seconds"]
    return {
        "files": ours["files"],
        "input_mb": ours["input_mb"],
        "elements": elements,
        "seconds": ours["seconds"],
        "files_per_s": round(run["files_per_s"], 3),
        "mb_per_s": ours["mb_per_s"],
        "stored_mb": ours["stored_mb"],
        "other_cpu_share": ours["other_cpu_share"],
        "peak_executor_mib": ours["peak_executor_mib"],
        "elements_per_s": round(elements / run["seconds"], 1),
        "elements_per_s_per_core": round(end_to_end, 1),
        "header_elements_per_s_per_core": round(header, 1) if header else None,
        "dcm2json_seconds": round(dcm2json["seconds"], 3),
        "dcm2json_elements_per_s": round(dcmtk, 1),
        "dcm2json_other_cpu_share": dcm2json["other_cpu_share"],
        "header_over_target": round(header / TARGETS["header_elements_per_s"], 3)
        if header
        else None,
        "header_over_dcm2json": round(header / dcmtk, 3) if header else None,
        "per_core_over_dcm2json": round(end_to_end / dcmtk, 3),
        "stages_seconds": stage_rows(run["summary"], cores)[1],
    }


def report_heavy(args: argparse.Namespace, landings: Landings, runs: dict[str, dict[str, Any]]):
    """The element-heavy sets: dicomlake's elements/s against dcm2json's and the target."""
    if not landings.heavy:
        return [], {"element_heavy": None, "element_scaling": None}
    sets = {
        kind: heavy_figures(
            runs[f"dicomlake-heavy-{kind}"],
            runs[f"dcm2json-{kind}"],
            built.by_kind[kind]["elements"],
            args.cores,
        )
        for kind, (_, built) in landings.heavy.items()
    }
    kinds = list(sets)
    target = TARGETS["header_elements_per_s"]
    rows = [
        [label, *(sets[k][key] for k in kinds)]
        for label, key in (
            ("files", "files"),
            ("input MB", "input_mb"),
            ("elements (pydicom walk)", "elements"),
            ("dicomlake timed seconds", "seconds"),
            ("dicomlake files/s", "files_per_s"),
            ("dicomlake input MB/s", "mb_per_s"),
            ("dicomlake elements/s", "elements_per_s"),
            (f"dicomlake elements/s per core (timed x {args.cores})", "elements_per_s_per_core"),
            ("header path elements/s per core (parse + header)", "header_elements_per_s_per_core"),
            ("dcm2json seconds (sequential)", "dcm2json_seconds"),
            ("dcm2json elements/s (one core)", "dcm2json_elements_per_s"),
            (f"header path / target {target:,.0f}", "header_over_target"),
            ("header path / dcm2json", "header_over_dcm2json"),
            ("per core end to end / dcm2json", "per_core_over_dcm2json"),
            ("dicomlake stored MB (whole lake)", "stored_mb"),
            ("peak memory (PSS), JVM + Python workers (MiB)", "peak_executor_mib"),
            ("CPU share used by other processes, dicomlake", "other_cpu_share"),
            ("CPU share used by other processes, dcm2json", "dcm2json_other_cpu_share"),
        )
    ]
    # The header path's core-seconds per element, at 150,000 and at 75,000 elements a file
    full, half = (sets.get(k, {}).get("header_elements_per_s_per_core") for k in ("SR", "SR-half"))
    growth = half / full if full and half else None
    linear = _within(growth)
    stage_names = list(dict.fromkeys(n for k in kinds for n in sets[k]["stages_seconds"]))
    stage_table = [
        [name, *(sets[k]["stages_seconds"].get(name) for k in kinds)] for name in stage_names
    ]
    out = [
        "Element-heavy sets: dicomlake against DCMTK's dcm2json (each file converted to JSON, "
        "one after the other, output discarded) on the same files in this run",
        table(["", *kinds], rows, 2),
        "",
        f"Where dicomlake's time goes on them (seconds, task stages summed over {args.cores} "
        "cores)",
        table(["stage", *kinds], stage_table, 2),
        "",
        "Header path seconds per element, SR (150,000 a file) / SR-half (75,000 a file): "
        f"{_fmt(growth, 2)}: " + _linearity(linear, "the SR and SR-half sets"),
    ]
    return out, {
        "element_heavy": sets,
        "element_scaling": {"growth": round(growth, 3) if growth else None, "linear": linear},
    }


def report_orthanc(args: argparse.Namespace, landings: Landings, runs: dict[str, dict[str, Any]]):
    """Orthanc storing each landing zone, raw and zlib, beside dicomlake's figures."""
    cases = {"mix": f"dicomlake-{landings.largest}", "small": "dicomlake-small"}
    cases.update({f"heavy-{kind}": f"dicomlake-heavy-{kind}" for kind in landings.heavy})
    if args.no_orthanc:
        return [], {"orthanc": None}
    rows = []
    figures_: dict[str, Any] = {}
    for case, ours_name in cases.items():
        ours = runs[ours_name]
        ours = {  # unrounded: a few files a second on the element-heavy sets
            "mb_per_s": round(ours["mb_per_s"], 3),
            "files_per_s": round(ours["files_per_s"], 3),
            "stored_mb": round(ours["stored_bytes"] / 1e6, 1),
        }
        raw = runs[f"orthanc-raw-{case}"]
        zlib = runs[f"orthanc-zlib-{case}"]
        figures_[case] = {
            "dicomlake": ours,
            **{
                name: {
                    "mb_per_s": round(r["mb_per_s"], 3),
                    "files_per_s": round(r["files_per_s"], 3),
                    "stored_mb": round(r["stored_bytes"] / 1e6, 1),
                    "seconds": round(r["seconds"], 2),
                    "other_cpu_share": r["other_cpu_share"],
                }
                for name, r in (("orthanc_raw", raw), ("orthanc_zlib", zlib))
            },
        }
        f = figures_[case]
        for label, key in (
            ("MB/s", "mb_per_s"),
            ("files/s", "files_per_s"),
            ("stored MB", "stored_mb"),
        ):
            a, r, z = f["dicomlake"][key], f["orthanc_raw"][key], f["orthanc_zlib"][key]
            rows.append([f"{case}: {label}", a, r, z, a / r if r else None, a / z if z else None])
    out = [
        "Orthanc (Debian's, REST API, 2 client threads, 127.0.0.1) storing the same landing zones: "
        "dicomlake's lake holds the pixels compressed and encrypted, Orthanc's storage holds "
        "whole files, zlib-compressed with StorageCompression",
        table(["", "dicomlake", "Orthanc raw", "Orthanc zlib", "dl/raw", "dl/zlib"], rows, 2),
        "CPU share used by other processes during the Orthanc runs: "
        + ", ".join(
            f"{case} {f[raw]['other_cpu_share']:.2f} (raw), {f[zlib]['other_cpu_share']:.2f} (zlib)"
            for case, f in figures_.items()
            for raw, zlib in [("orthanc_raw", "orthanc_zlib")]
        ),
    ]
    return out, {"orthanc": figures_}


def report_machine(args: argparse.Namespace, landings: Landings, runs: dict[str, dict[str, Any]]):
    """How much the machine's own speed moved between the runs (bench/machine_speed.py)."""
    probes = {name: r["all_probe_seconds"] for name, r in runs.items() if "all_probe_seconds" in r}
    seconds = [p for each in probes.values() for p in each]
    if not seconds:
        return [], {"machine_speed": None}
    moved = machine_speed.spread(seconds)
    lines = [
        f"Machine speed: the same single-core work took {min(seconds):.3f} to "
        f"{max(seconds):.3f} s (median {statistics.median(seconds):.3f}) just before each of "
        f"the {len(seconds)} runs: the machine was {100 * moved:.0f}% slower at its slowest"
    ]
    if moved > MACHINE_SPREAD:
        lines.append(
            "  so a ratio between two runs far apart in time carries up to that much noise; "
            "--repeat N alternates the runs and keeps each one's fastest"
        )
    return lines, {"machine_speed": {"spread": round(moved, 3), "probe_seconds": probes}}


def report_targets(record: dict[str, Any], ours: dict[str, Any], small_ours: dict[str, Any]):
    """Each target, wanted and measured; every case counts for peak memory."""
    huge_file = record["huge_file"]
    heavy = record["element_heavy"] or {}
    orthanc = record["orthanc"] or {}
    peak_executor = max(
        r["peak_executor_mib"]
        for r in (ours, small_ours, huge_file, *heavy.values())
        if r is not None
    )
    unverified = record["without_verify"]
    checks = {
        "mb_per_s": ours["mb_per_s"] >= TARGETS["mb_per_s"],
        "small_files_per_s": small_ours["files_per_s"] >= TARGETS["small_files_per_s"],
        "pixel_ratio": ours["pixel_ratio_native"] >= TARGETS["pixel_ratio"],
        "peak_executor_mib": peak_executor < TARGETS["peak_executor_mib"],
    }
    rows = [
        ["input MB/s", f">= {TARGETS['mb_per_s']:.0f}", ours["mb_per_s"], checks["mb_per_s"]],
        [
            "small files/s",
            f">= {TARGETS['small_files_per_s']:.0f}",
            small_ours["files_per_s"],
            checks["small_files_per_s"],
        ],
        ["input MB/s, pixels.verify false", "(info)", unverified["dicomlake"]["mb_per_s"], "-"],
        [
            "small files/s, pixels.verify false",
            "(info)",
            unverified["small_files"]["files_per_s"],
            "-",
        ],
        [
            "pixel ratio (native)",
            f">= {TARGETS['pixel_ratio']}",
            ours["pixel_ratio_native"],
            checks["pixel_ratio"],
        ],
        ["pixel ratio (all)", "(info)", ours["pixel_ratio"], "-"],
        [
            "peak MiB per executor",
            f"< {TARGETS['peak_executor_mib']:.0f}",
            peak_executor,
            checks["peak_executor_mib"],
        ],
    ]
    # Linearity is a target only where it was measured: two sizes, both SR sets
    for key, name, wanted, scaling in (
        ("linear_scaling", "linear scaling", "s/GB beyond start-up ±20%", record["scaling"]),
        (
            "linear_in_elements",
            "linear in elements (SR / SR-half)",
            "s/element ±20%",
            record["element_scaling"],
        ),
    ):
        if scaling is not None and scaling["linear"] is not None:
            checks[key] = scaling["linear"]
            rows.append([name, wanted, scaling["growth"], checks[key]])
    baseline_ratio = record["dicomlake_over_baseline"]["mb_per_s"]
    if baseline_ratio is not None:
        checks["over_baseline"] = baseline_ratio >= TARGETS["over_baseline"]
        rows.append(
            [
                "input MB/s / baseline",
                f">= {TARGETS['over_baseline']:.0f}",
                baseline_ratio,
                checks["over_baseline"],
            ]
        )
    for kind, f in heavy.items():
        header = f["header_elements_per_s_per_core"] or 0.0
        checks[f"header_{kind}"] = header >= max(
            TARGETS["header_elements_per_s"], f["dcm2json_elements_per_s"]
        )
        rows.append(
            [
                f"{kind}: header elements/s per core",
                f">= {TARGETS['header_elements_per_s']:,.0f} and dcm2json "
                f"{f['dcm2json_elements_per_s']:,.0f}",
                header,
                checks[f"header_{kind}"],
            ]
        )
    for case, f in orthanc.items():
        # The same files, so MB/s and files/s give the same ratio
        over_zlib = f["dicomlake"]["files_per_s"] / f["orthanc_zlib"]["files_per_s"]
        checks[f"orthanc_zlib_{case}"] = over_zlib > 1
        rows.append([f"{case}: files/s / Orthanc zlib", "> 1", over_zlib, over_zlib > 1])
        if case != "mix":
            over_raw = f["dicomlake"]["files_per_s"] / f["orthanc_raw"]["files_per_s"]
            checks[f"orthanc_raw_{case}"] = over_raw > 1
            rows.append([f"{case}: files/s / Orthanc raw", "> 1", over_raw, over_raw > 1])
    out = ["Targets", table(["target", "wanted", "measured", "met"], rows, 2)]
    return out, {"targets": TARGETS, "targets_met": checks}


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    landings = build_landings(args)
    runs = run_contenders(args, landings)
    text, record = report(args, landings, runs)
    print(text, flush=True)
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
