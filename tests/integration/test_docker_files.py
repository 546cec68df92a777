"""docker/ cannot be built here (no container engine): check what can be checked without it.

Every file the Dockerfile copies and the compose file mounts exists, the stages compose builds
exist, and the versions agree with pyproject.toml and the dev scripts that the tests run.
"""

from __future__ import annotations

import re
import shlex
import tomllib
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
DOCKER = REPO / "docker"
DOCKERFILE = DOCKER / "Dockerfile"


def _instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) of the Dockerfile, continuation lines joined."""
    text = re.sub(r"\\\n", " ", DOCKERFILE.read_text())
    out = []
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            word, _, rest = line.partition(" ")
            out.append((word.upper(), rest.strip()))
    return out


def _args() -> dict[str, str]:
    return dict(
        rest.split("=", 1) for word, rest in _instructions() if word == "ARG" and "=" in rest
    )


def _compose() -> dict:
    return yaml.safe_load((DOCKER / "compose.yaml").read_text())


def _project() -> dict:
    """pyproject.toml's [project] table."""
    return tomllib.loads((REPO / "pyproject.toml").read_text())["project"]


def test_every_copied_file_exists() -> None:
    sources = []
    for word, rest in _instructions():
        if word in ("COPY", "ADD") and "--from=" not in rest:
            parts = shlex.split(rest)
            sources += [p for p in parts[:-1] if not p.startswith("--")]
    assert sources
    missing = [s for s in sources if not (REPO / s).exists()]
    assert not missing, missing


def test_the_dev_scripts_the_image_runs_exist() -> None:
    text = DOCKERFILE.read_text()
    for script in re.findall(r"\bdev/[\w.-]+", text):
        assert (REPO / script).is_file(), script
    assert "hdfs.sh" in text and (DOCKER / "hadoop" / "hdfs.sh").stat().st_mode & 0o111


def test_compose_builds_existing_stages_and_mounts_existing_paths() -> None:
    stages = {m for m in re.findall(r"^FROM \S+ AS (\S+)", DOCKERFILE.read_text(), re.M)}
    compose = _compose()
    for name, service in compose["services"].items():
        build = service.get("build")
        if build:
            assert (DOCKER / build["context"] / build["dockerfile"]).resolve() == DOCKERFILE
            assert build["target"] in stages, (name, build["target"])
        for volume in service.get("volumes", []):
            source = volume.split(":")[0]
            if source.startswith("."):
                path = (DOCKER / source).resolve()
                # data/ is made at run time (the keyring); everything else comes from git.
                if not path.is_relative_to(REPO / "data"):
                    assert path.exists(), (name, volume)
    assert {"namenode", "datanode", "spark-master", "spark-worker", "airflow"} <= set(
        compose["services"]
    )


def test_python_and_pyspark_agree_with_pyproject() -> None:
    minimum = _project()["requires-python"].removeprefix(">=")
    python = _args()["PYTHON_VERSION"]
    assert tuple(map(int, python.split("."))) >= tuple(map(int, minimum.split(".")))
    # The image installs the wheel with the spark extra, so pyspark is pyproject's pin itself;
    # the notes and the Hadoop version assume pyspark 4.2 (Delta Lake 4.4's Spark connector).
    assert "[spark]" in DOCKERFILE.read_text()
    assert "pyspark==4.2." in " ".join(_project()["optional-dependencies"]["spark"])
    assert "openjdk-17-jre-headless" in DOCKERFILE.read_text()


def test_hadoop_version_agrees_with_the_dev_scripts() -> None:
    hdfs_py = (REPO / "dev" / "hdfs.py").read_text()
    dev_default = re.search(r'DICOMLAKE_HADOOP_VERSION"\) or "([\d.]+)"', hdfs_py)
    pom = re.search(
        r"<hadoop.version>([\d.]+)</hadoop.version>", (REPO / "dev" / "hadoop-pom.xml").read_text()
    )
    assert dev_default and pom
    assert _args()["HADOOP_VERSION"] == dev_default.group(1) == pom.group(1)


def test_airflow_versions_agree_with_dev_airflow() -> None:
    script = (REPO / "dev" / "airflow.sh").read_text()
    dev = dict(re.findall(r"^(AIRFLOW_VERSION|SPARK_PROVIDER_VERSION)=(\S+)$", script, re.M))
    args = _args()
    assert dev and {k: args[k] for k in dev} == dev


@pytest.mark.parametrize(
    ("service", "script", "variable", "container_port"),
    [
        ("namenode", "hdfs.py", "DICOMLAKE_DEV_HDFS_RPC_PORT", 8020),
        ("namenode", "hdfs.py", "DICOMLAKE_DEV_HDFS_HTTP_PORT", 9870),
        ("datanode", "hdfs.py", "DICOMLAKE_DEV_HDFS_DN_PORT", 9866),
        ("datanode", "hdfs.py", "DICOMLAKE_DEV_HDFS_DN_HTTP_PORT", 9864),
        ("spark-master", "spark_cluster.py", "DICOMLAKE_DEV_SPARK_MASTER_PORT", 7077),
        ("spark-master", "spark_cluster.py", "DICOMLAKE_DEV_SPARK_UI_PORT", 8080),
        ("spark-worker", "spark_cluster.py", "DICOMLAKE_DEV_SPARK_WORKER_UI_PORT", 8081),
    ],
)
def test_host_ports_are_the_dev_scripts_defaults(
    service: str, script: str, variable: str, container_port: int
) -> None:
    source = (REPO / "dev" / script).read_text()
    default = re.search(rf'env_int\("{variable}", (\d+)\)', source)
    assert default, variable
    ports = _compose()["services"][service]["ports"]
    assert f"{default.group(1)}:{container_port}" in ports


def test_dag_defaults_match_the_compose_cluster() -> None:
    """The DAGs' default paths are the ones the images and compose file provide."""
    dags = (REPO / "jobs" / "dags" / "dicomlake_dags.py").read_text()
    dockerfile = DOCKERFILE.read_text()
    for path in (
        "/opt/dicomlake/jobs",
        "/opt/dicomlake/dist/dicomlake.zip",
        "/opt/dicomlake/conf/cluster.yaml",
        "/opt/dicomlake/secrets/keyring.json",
    ):
        assert f'"{path}"' in dags, path
    assert "/opt/dicomlake/dist/" in dockerfile and "dev/package.py" in dockerfile
    assert "COPY docker/conf/cluster.yaml /opt/dicomlake/conf/cluster.yaml" in dockerfile
    for job in ("ingest", "snapshot", "verify"):
        assert f"jobs/{job}.py" in dockerfile
    compose = _compose()
    assert "hdfs://namenode:8020/" in dags
    assert any("/opt/dicomlake/secrets" in v for v in compose["services"]["airflow"]["volumes"])
