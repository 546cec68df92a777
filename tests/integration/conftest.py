"""Fixtures for the real services: single-node HDFS clusters and a Spark standalone cluster on
loopback.

Each is started once per test session by the dev scripts (``dev/hdfs.py``,
``dev/spark_cluster.py``) in a throwaway directory on free ports, and stopped at the end, so a
developer's own dev cluster on the default ports is never touched. ``hdfs_cluster`` is the one
most tests use; ``hdfs_cluster_b`` is a second, separate HDFS, for tests that span two clusters;
``standby_namenode`` a NameNode that is standby, for failover tests.

- ``DICOMLAKE_TEST_HDFS_URI`` (``hdfs://127.0.0.1:18020``) with ``DICOMLAKE_TEST_WEBHDFS_URL``
  (``http://127.0.0.1:19870``) use a running HDFS instead, e.g. one from ``dev/hdfs.py start``;
  ``stop_datanode``/``start_datanode`` then call ``dev/hdfs.py`` with the current environment.
"""

from __future__ import annotations

import dataclasses
import importlib.util
import os
import socket
import subprocess
import sys
import uuid
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path

import pytest

from dicomlake.config import HdfsConfig
from dicomlake.storage.hdfs import WebHdfsFileSystem

REPO = Path(__file__).resolve().parents[2]
DEV = REPO / "dev"
APPS = Path(__file__).resolve().parent / "apps"
# pyspark's package dir is its SPARK_HOME (bin/spark-submit, jars/); found without importing it.
SPARK_HOME = Path(importlib.util.find_spec("pyspark").origin).parent  # type: ignore[union-attr,arg-type]


def _free_ports(n: int) -> list[int]:
    """``n`` distinct ports free on 127.0.0.1 right now (bound together so they differ)."""
    socks = []
    try:
        for _ in range(n):
            s = socket.socket()
            s.bind(("127.0.0.1", 0))
            socks.append(s)
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


def _run_dev(script: str, *args: str, env: Mapping[str, str] | None = None) -> str:
    """Run a dev script and return its stdout; fail the test with its output if it fails."""
    proc = subprocess.run(
        [sys.executable, str(DEV / script), *args],
        env=None if env is None else dict(env),
        capture_output=True,
        text=True,
        timeout=300,
    )
    if proc.returncode != 0:
        pytest.fail(
            f"dev/{script} {' '.join(args)} failed (exit {proc.returncode}):\n"
            f"{proc.stdout}\n{proc.stderr}",
            pytrace=False,
        )
    return proc.stdout


@dataclasses.dataclass(frozen=True)
class HdfsCluster:
    """A running HDFS: its ``hdfs://`` URI, WebHDFS URL and a matching :class:`HdfsConfig`."""

    uri: str
    webhdfs_url: str
    env: Mapping[str, str] = dataclasses.field(repr=False)

    @property
    def authority(self) -> str:
        """The ``host:port`` of its ``hdfs://`` URIs."""
        return self.uri.split("://", 1)[1]

    @property
    def hdfs_config(self) -> HdfsConfig:
        return self.hdfs_config_with()

    def hdfs_config_with(self, *others: HdfsCluster) -> HdfsConfig:
        """A config that reaches this cluster and ``others``, each at its own WebHDFS address."""
        namenodes = {c.authority: c.webhdfs_url for c in (self, *others)}
        return HdfsConfig(namenodes=namenodes, timeout_seconds=30.0)

    def stop_datanode(self) -> None:
        """Stop the only DataNode (SIGTERM, waits for exit): reads and writes of blocks fail."""
        _run_dev("hdfs.py", "stop-datanode", env=self.env)

    def start_datanode(self) -> None:
        """Start the DataNode again; returns once a WebHDFS write and read work."""
        _run_dev("hdfs.py", "start-datanode", env=self.env)


@pytest.fixture(scope="session")
def hdfs_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[HdfsCluster]:
    """One HDFS for the session: started here unless ``DICOMLAKE_TEST_HDFS_URI`` names one."""
    external = os.environ.get("DICOMLAKE_TEST_HDFS_URI")
    if external:
        webhdfs = os.environ.get("DICOMLAKE_TEST_WEBHDFS_URL")
        if not webhdfs:
            pytest.fail(
                "DICOMLAKE_TEST_HDFS_URI is set: set DICOMLAKE_TEST_WEBHDFS_URL too", pytrace=False
            )
        yield HdfsCluster(external.rstrip("/"), webhdfs.rstrip("/"), dict(os.environ))
        return
    with _started_hdfs(tmp_path_factory, "hdfs") as cluster:
        yield cluster


@pytest.fixture(scope="session")
def hdfs_cluster_b(tmp_path_factory: pytest.TempPathFactory) -> Iterator[HdfsCluster]:
    """A second HDFS for the session, always started here: its own ports, run dir, metadata."""
    with _started_hdfs(tmp_path_factory, "hdfs-b") as cluster:
        yield cluster


@pytest.fixture(scope="session")
def standby_namenode(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """The WebHDFS URL of a real NameNode that stays standby (``dev/hdfs.py start-standby``):
    every call to it fails with StandbyException."""
    with _started_hdfs(tmp_path_factory, "hdfs-standby", "start-standby") as cluster:
        yield cluster.webhdfs_url


@contextmanager
def _started_hdfs(
    tmp_path_factory: pytest.TempPathFactory, name: str, command: str = "start"
) -> Iterator[HdfsCluster]:
    rpc, http, dn, dn_http, dn_ipc = _free_ports(5)
    env = dict(os.environ)
    env.update(
        {
            "DICOMLAKE_DEV_HDFS_DIR": str(tmp_path_factory.mktemp(name)),
            "DICOMLAKE_DEV_HDFS_RPC_PORT": str(rpc),
            "DICOMLAKE_DEV_HDFS_HTTP_PORT": str(http),
            "DICOMLAKE_DEV_HDFS_DN_PORT": str(dn),
            "DICOMLAKE_DEV_HDFS_DN_HTTP_PORT": str(dn_http),
            "DICOMLAKE_DEV_HDFS_DN_IPC_PORT": str(dn_ipc),
        }
    )
    try:
        _run_dev("hdfs.py", command, env=env)
        yield HdfsCluster(f"hdfs://127.0.0.1:{rpc}", f"http://127.0.0.1:{http}", env)
    finally:
        _run_dev("hdfs.py", "stop", env=env)


@pytest.fixture
def hdfs_root(hdfs_cluster: HdfsCluster) -> Iterator[str]:
    """A fresh, empty directory on the HDFS (a full ``hdfs://`` URI), deleted afterwards."""
    fs = WebHdfsFileSystem(hdfs_cluster.hdfs_config)
    root = f"{hdfs_cluster.uri}/tests/{uuid.uuid4().hex}"
    fs.makedirs(root)
    yield root
    fs.delete(root, recursive=True)


@dataclasses.dataclass(frozen=True)
class SparkCluster:
    """A running standalone cluster and the packaged project to ship to it."""

    master_url: str
    ui_url: str
    executor_python: str
    py_files: Path  # dicomlake.zip, for --py-files
    wheel: Path
    spark_home: Path
    workdir: Path

    def submit_command(
        self, app: str | os.PathLike[str], *args: str, conf: Mapping[str, str] | None = None
    ) -> tuple[list[str], dict[str, str]]:
        """The ``spark-submit`` command line (client mode, packaged project) and its environment.

        The driver runs this venv's Python; executors run the cluster's Python, which sees the
        venv's packages but not ``lib/``: they import dicomlake from ``--py-files`` only.
        """
        cmd = [
            str(self.spark_home / "bin" / "spark-submit"),
            "--master",
            self.master_url,
            "--deploy-mode",
            "client",
            "--py-files",
            str(self.py_files),
            "--conf",
            f"spark.pyspark.python={self.executor_python}",
            "--conf",
            f"spark.pyspark.driver.python={sys.executable}",
            "--conf",
            "spark.ui.enabled=false",
            "--conf",
            "spark.ui.showConsoleProgress=false",
            "--conf",
            "spark.executor.memory=1g",
        ]
        for key, value in (conf or {}).items():
            cmd += ["--conf", f"{key}={value}"]
        cmd += [str(app), *args]
        env = dict(os.environ)
        env.update(
            {
                "SPARK_HOME": str(self.spark_home),
                "SPARK_LOCAL_IP": "127.0.0.1",
                "PYSPARK_PYTHON": self.executor_python,
                "PYSPARK_DRIVER_PYTHON": sys.executable,
            }
        )
        env.pop("SPARK_CONF_DIR", None)
        return cmd, env

    def spark_submit(
        self,
        app: str | os.PathLike[str],
        *args: str,
        conf: Mapping[str, str] | None = None,
        timeout: float = 600,
    ) -> subprocess.CompletedProcess[str]:
        """Run ``spark-submit`` ``app`` to the end; output captured."""
        cmd, env = self.submit_command(app, *args, conf=conf)
        # Not the repo as cwd: nothing of the source tree should be found by accident.
        return subprocess.run(
            cmd, env=env, cwd=self.workdir, capture_output=True, text=True, timeout=timeout
        )


@pytest.fixture(scope="session")
def spark_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SparkCluster]:
    """One Spark standalone master + worker (2 cores) for the session, and the packaged project."""
    dist = tmp_path_factory.mktemp("dist")
    wheel, py_files, *_ = _run_dev("package.py", "--dist", str(dist)).split()
    run = tmp_path_factory.mktemp("spark")
    master, ui, worker, worker_ui = _free_ports(4)
    env = dict(os.environ)
    env.update(
        {
            "DICOMLAKE_DEV_SPARK_DIR": str(run),
            "DICOMLAKE_DEV_SPARK_MASTER_PORT": str(master),
            "DICOMLAKE_DEV_SPARK_UI_PORT": str(ui),
            "DICOMLAKE_DEV_SPARK_WORKER_PORT": str(worker),
            "DICOMLAKE_DEV_SPARK_WORKER_UI_PORT": str(worker_ui),
            "DICOMLAKE_DEV_PYTHON": sys.executable,
        }
    )
    try:
        _run_dev("spark_cluster.py", "start", env=env)
        yield SparkCluster(
            master_url=f"spark://127.0.0.1:{master}",
            ui_url=f"http://127.0.0.1:{ui}",
            executor_python=str(run / "pyenv" / "bin" / "python"),
            py_files=Path(py_files),
            wheel=Path(wheel),
            spark_home=SPARK_HOME,
            workdir=tmp_path_factory.mktemp("submit"),
        )
    finally:
        _run_dev("spark_cluster.py", "stop", env=env)
