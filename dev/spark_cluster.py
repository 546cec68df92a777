#!/usr/bin/env python3
"""A real Spark standalone cluster (one master, one worker) on 127.0.0.1, from pyspark's own jars.

    dev/spark_cluster.py start    # start master + worker, wait until the worker registered
    dev/spark_cluster.py status
    dev/spark_cluster.py stop     # SIGTERM both (the worker takes its executors with it)

Environment (defaults in brackets; Spark's own ports plus 10000):

    DICOMLAKE_DEV_SPARK_DIR            run dir: logs, pid files, work dirs [<repo>/.cache/spark]
    DICOMLAKE_DEV_SPARK_MASTER_PORT    the spark:// port [17077]
    DICOMLAKE_DEV_SPARK_UI_PORT        master web UI, with /json [18080]
    DICOMLAKE_DEV_SPARK_WORKER_PORT    worker RPC [17078]
    DICOMLAKE_DEV_SPARK_WORKER_UI_PORT worker web UI [18081]
    DICOMLAKE_DEV_SPARK_WORKER_CORES   [2]
    DICOMLAKE_DEV_SPARK_WORKER_MEMORY  [4g]
    DICOMLAKE_DEV_PYTHON               the project's venv Python [<repo>/.venv/bin/python]

Executors run ``<run dir>/pyenv/bin/python``: a venv that sees the project venv's packages but
not its editable install of ``lib/``, so an application must ship dicomlake itself
(``spark-submit --py-files dist/dicomlake.zip``, made by ``dev/package.py``), as on a real
cluster. Stdlib only.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import _daemons as d

MASTER = "org.apache.spark.deploy.master.Master"
WORKER = "org.apache.spark.deploy.worker.Worker"


@dataclasses.dataclass(frozen=True)
class Settings:
    """Everything the commands need, read once from the environment."""

    run: Path
    master_port: int
    ui_port: int
    worker_port: int
    worker_ui_port: int
    cores: int
    memory: str
    python: Path

    @classmethod
    def from_env(cls) -> Settings:
        run = os.environ.get("DICOMLAKE_DEV_SPARK_DIR") or d.REPO / ".cache" / "spark"
        python = os.environ.get("DICOMLAKE_DEV_PYTHON") or d.REPO / ".venv" / "bin" / "python"
        return cls(
            run=Path(run).expanduser().resolve(),
            master_port=d.env_int("DICOMLAKE_DEV_SPARK_MASTER_PORT", 17077),
            ui_port=d.env_int("DICOMLAKE_DEV_SPARK_UI_PORT", 18080),
            worker_port=d.env_int("DICOMLAKE_DEV_SPARK_WORKER_PORT", 17078),
            worker_ui_port=d.env_int("DICOMLAKE_DEV_SPARK_WORKER_UI_PORT", 18081),
            cores=d.env_int("DICOMLAKE_DEV_SPARK_WORKER_CORES", 2),
            memory=os.environ.get("DICOMLAKE_DEV_SPARK_WORKER_MEMORY") or "4g",
            # Not resolved: a venv's python is a symlink, and resolving it leaves the venv.
            python=Path(python).expanduser().absolute(),
        )

    @property
    def master_url(self) -> str:
        return f"spark://127.0.0.1:{self.master_port}"

    @property
    def ui_url(self) -> str:
        return f"http://127.0.0.1:{self.ui_port}"

    @property
    def properties(self) -> Path:
        # On both daemons' command lines, so a pid is known to be ours.
        return self.run / "spark-defaults.conf"

    @property
    def executor_python(self) -> Path:
        return self.run / "pyenv" / "bin" / "python"

    def log(self, daemon: str) -> Path:
        return self.run / "logs" / f"{daemon}.log"

    def pidfile(self, daemon: str) -> Path:
        return self.run / f"{daemon}.pid"


def spark_home(python: Path) -> Path:
    """The pyspark package directory (it holds bin/spark-class and jars/)."""
    if not python.exists():
        d.fail(f"{python} does not exist: set DICOMLAKE_DEV_PYTHON to the venv with pyspark")
    out = subprocess.run(
        [str(python), "-c", "import pyspark, os; print(os.path.dirname(pyspark.__file__))"],
        capture_output=True,
        text=True,
    )
    if out.returncode != 0:
        d.fail(f"pyspark is not importable by {python}: {out.stderr.strip()}")
    return Path(out.stdout.strip())


def make_executor_python(s: Settings) -> None:
    """A venv whose site-packages points at the project venv's, without processing its .pth files.

    Its interpreter is the same Python, and every installed package is importable, but the
    editable install's ``__editable__*.pth`` (which puts ``lib/`` on sys.path) is not applied.
    """
    if s.executor_python.exists():
        return
    env_dir = s.executor_python.parent.parent
    purelib = subprocess.run(
        [str(s.python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    subprocess.run([str(s.python), "-m", "venv", "--without-pip", str(env_dir)], check=True)
    own = subprocess.run(
        [str(s.executor_python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    # A plain directory line in a .pth is added to sys.path; the .pth files inside it are not run.
    (Path(own) / "dicomlake_dev_base_venv.pth").write_text(purelib + "\n")


def write_properties(s: Settings) -> None:
    s.properties.write_text(
        "\n".join(
            [
                "spark.worker.cleanup.enabled true",
                f"spark.local.dir {s.run / 'local'}",
                f"spark.pyspark.python {s.executor_python}",
                "",
            ]
        )
    )


def daemon_env(s: Settings, home: Path) -> dict[str, str]:
    env = dict(os.environ)
    env.update(
        {
            "SPARK_HOME": str(home),
            "SPARK_LOCAL_IP": "127.0.0.1",
            "SPARK_DAEMON_MEMORY": "512m",
            "SPARK_LOG_DIR": str(s.run / "logs"),
            "PYSPARK_PYTHON": str(s.executor_python),
        }
    )
    env.pop("SPARK_CONF_DIR", None)  # a person's own Spark config must not leak in
    return env


def alive_workers(s: Settings) -> list[dict]:
    try:
        with urllib.request.urlopen(f"{s.ui_url}/json", timeout=5) as resp:
            state = json.load(resp)
    except (OSError, ValueError):
        return []
    return [w for w in state.get("workers", []) if w.get("state") == "ALIVE"]


def running(s: Settings, daemon: str, main: str) -> int | None:
    return d.live_pid(s.pidfile(daemon), str(s.properties), main)


def start(s: Settings) -> None:
    started = time.monotonic()
    home = spark_home(s.python)
    daemons = {"master": MASTER, "worker": WORKER}
    todo = {k: v for k, v in daemons.items() if running(s, k, v) is None}
    for daemon in daemons.keys() - todo.keys():
        print(f"{daemon}: already running (pid {running(s, daemon, daemons[daemon])})")
    v = "DICOMLAKE_DEV_SPARK_"
    ports = {
        "master": {
            "Spark master": (s.master_port, v + "MASTER_PORT"),
            "Spark master UI": (s.ui_port, v + "UI_PORT"),
        },
        "worker": {
            "Spark worker": (s.worker_port, v + "WORKER_PORT"),
            "Spark worker UI": (s.worker_ui_port, v + "WORKER_UI_PORT"),
        },
    }
    d.check_ports({label: p for daemon in todo for label, p in ports[daemon].items()})
    (s.run / "work").mkdir(parents=True, exist_ok=True)
    (s.run / "local").mkdir(parents=True, exist_ok=True)
    make_executor_python(s)
    write_properties(s)
    spark_class = str(home / "bin" / "spark-class")
    common = ["--host", "127.0.0.1", "--properties-file", str(s.properties)]
    cmds = {
        "master": [
            spark_class,
            MASTER,
            *common,
            "--port",
            str(s.master_port),
            "--webui-port",
            str(s.ui_port),
        ],
        "worker": [
            spark_class,
            WORKER,
            *common,
            "--port",
            str(s.worker_port),
            "--webui-port",
            str(s.worker_ui_port),
            "--cores",
            str(s.cores),
            "--memory",
            s.memory,
            "--work-dir",
            str(s.run / "work"),
            s.master_url,
        ],
    }
    env = daemon_env(s, home)
    for daemon, main in todo.items():
        pid = d.spawn(
            cmds[daemon],
            log=s.log(daemon),
            pidfile=s.pidfile(daemon),
            env=env,
            markers=(str(s.properties), main),
        )
        print(f"{daemon}: started (pid {pid}, log {s.log(daemon)})")

    def died() -> str | None:
        for daemon, main in daemons.items():
            if running(s, daemon, main) is None:
                return f"the {daemon} exited; end of {s.log(daemon)}:\n" + d.log_tail(s.log(daemon))
        return None

    d.wait_for(
        lambda: len(alive_workers(s)) >= 1,
        what="the worker to register with the master",
        timeout=90,
        alive=died,
        interval=0.5,
    )
    print(f"Spark cluster ready in {time.monotonic() - started:.1f}s")
    print_urls(s)


def print_urls(s: Settings) -> None:
    print(f"master:          {s.master_url}")
    print(f"web UI:          {s.ui_url}")
    print(f"executor python: {s.executor_python}")
    print(f"run dir:         {s.run}")


def stop(s: Settings) -> None:
    # The worker first, so the master does not log it as lost.
    d.terminate(s.pidfile("worker"), (str(s.properties), WORKER), "worker")
    d.terminate(s.pidfile("master"), (str(s.properties), MASTER), "master")


def status(s: Settings) -> int:
    up = 0
    for daemon, main in (("master", MASTER), ("worker", WORKER)):
        pid = running(s, daemon, main)
        print(f"{daemon}: " + (f"running (pid {pid})" if pid else "not running"))
        up += pid is not None
    if up:
        print(f"alive workers: {len(alive_workers(s))}")
        print_urls(s)
    return 0 if up == 2 else 3


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__.splitlines()[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="\n".join(__doc__.splitlines()[1:]),
    )
    parser.add_argument("command", choices=["start", "stop", "status"])
    args = parser.parse_args(argv)
    s = Settings.from_env()
    if args.command == "start":
        start(s)
    elif args.command == "stop":
        stop(s)
    else:
        return status(s)
    return 0


if __name__ == "__main__":
    sys.exit(main())
