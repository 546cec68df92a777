"""The real Airflow (its own venv) loads jobs/dags, and runs the ingest DAG end to end.

The runs use ``dag.test()`` against Spark ``local[2]``: the SparkSubmitOperator calls the project
venv's ``spark-submit`` with the zip that ``dev/package.py`` builds, and the executors' Python
cannot import ``dicomlake`` from the source tree, so the packaged project is what runs.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import duckdb
import pydicom
import pytest
from airflow_helpers import REPO, airflow_env, executor_python, probe
from deltalake import DeltaTable

pytestmark = [pytest.mark.airflow, pytest.mark.spark, pytest.mark.slow]

# Real files from pydicom's test data: three instances (CT, MR, RT plan without pixels) and one
# non-DICOM file the run must quarantine.
LANDING_FILES = ["CT_small.dcm", "MR_small.dcm", "rtplan.dcm", "README.txt"]


@pytest.fixture(scope="module")
def loaded(airflow_python: Path, tmp_path_factory: pytest.TempPathFactory) -> dict:
    """The DAG folder as Airflow loads it, in a home with no metadata DB at all.

    Any DB or Variable access at import time would show up as an import error here.
    """
    home = tmp_path_factory.mktemp("airflow-nodb")
    return probe(airflow_python, airflow_env(home), "load", str(REPO / "jobs" / "dags"))


def test_dag_folder_loads_without_import_errors(loaded: dict) -> None:
    assert loaded["import_errors"] == {}
    assert sorted(loaded["dags"]) == ["dicomlake_ingest", "dicomlake_verify"]


def _job_args(task: dict) -> dict[str, str]:
    args = task["application_args"]
    flags = {
        a: (args[i + 1] if i + 1 < len(args) and not args[i + 1].startswith("--") else "")
        for i, a in enumerate(args)
        if a.startswith("--")
    }
    return flags


def test_ingest_dag_graph_and_schedule(loaded: dict) -> None:
    dag = loaded["dags"]["dicomlake_ingest"]
    assert dag["timetable"] == "CronDataIntervalTimetable"  # real intervals, not trigger times
    assert (dag["schedule"], dag["timezone"]) == ("0 * * * *", "UTC")
    assert dag["max_active_runs"] == 1  # one ingest per lake at a time
    assert dag["catchup"] is False
    assert dag["dagrun_timeout_s"] and dag["params"] == ["snapshot_mode"]
    tasks = dag["tasks"]
    assert {t: tasks[t]["upstream"] for t in tasks} == {
        "ingest": [],
        "snapshot_due": ["ingest"],
        "snapshot": ["snapshot_due"],
        "maintain": ["snapshot"],
    }
    for name in ("ingest", "snapshot", "maintain"):
        task = tasks[name]
        assert task["operator"] == "SparkSubmitOperator"
        assert task["conn_id"] == "spark_default"
        assert task["application"].endswith(f"/{name}.py")
        assert (REPO / "jobs" / f"{name}.py").is_file()
        assert "dicomlake_py_files" in task["py_files"]
        assert task["retries"] >= 1 and task["execution_timeout_s"]
    assert set(_job_args(tasks["ingest"])) == {"--landing", "--lake", "--keyring", "--conf"}
    snapshot = _job_args(tasks["snapshot"])
    assert set(snapshot) == {"--lake", "--backup", "--mode", "--label", "--keyring", "--conf"}
    # Labelled by the data interval, never by the clock.
    assert "data_interval_end" in snapshot["--label"] and "now" not in snapshot["--label"]
    # The snapshot authenticates its manifests with the ingest's keyring (its secret)
    assert snapshot["--keyring"] == _job_args(tasks["ingest"])["--keyring"]
    assert set(_job_args(tasks["maintain"])) == {"--lake", "--conf"}


def test_verify_dag_graph_and_schedule(loaded: dict) -> None:
    dag = loaded["dags"]["dicomlake_verify"]
    assert (dag["timetable"], dag["schedule"], dag["timezone"]) == (
        "CronDataIntervalTimetable",
        "0 4 * * 0",
        "UTC",
    )
    assert dag["max_active_runs"] == 1
    ((name, task),) = dag["tasks"].items()
    assert name == "verify" and task["operator"] == "SparkSubmitOperator"
    assert task["application"].endswith("/verify.py") and (REPO / "jobs" / "verify.py").is_file()
    assert task["retries"] >= 1 and task["execution_timeout_s"]
    args = _job_args(task)
    assert set(args) == {"--backup", "--deep", "--keyring", "--conf"}


@pytest.fixture(scope="module")
def deployment(
    airflow_python: Path, project_python: Path, tmp_path_factory: pytest.TempPathFactory
) -> dict:
    """A migrated throwaway Airflow, a small landing zone, a keyring, the packaged project."""
    root = tmp_path_factory.mktemp("airflow-run")
    landing = root / "landing"
    landing.mkdir()
    test_files = Path(pydicom.__file__).parent / "data" / "test_files"
    for name in LANDING_FILES:
        shutil.copy2(test_files / name, landing / name)
    keyring = root / "keyring.json"
    subprocess.run(
        [str(project_python), "-m", "dicomlake.cli", "keys", "init", "--keyring", str(keyring)],
        check=True,
        capture_output=True,
    )
    dist = root / "dist"
    subprocess.run(
        [str(project_python), str(REPO / "dev" / "package.py"), "--dist", str(dist)],
        check=True,
        capture_output=True,
    )
    spark_home = subprocess.run(
        [str(project_python), "-c", "import os, pyspark; print(os.path.dirname(pyspark.__file__))"],
        check=True,
        capture_output=True,
        text=True,
    ).stdout.strip()
    home = root / "airflow-home"
    env = airflow_env(
        home,
        {
            # The project venv's spark-submit; Airflow's own venv never imports pyspark.
            "SPARK_HOME": spark_home,
            "PATH": f"{spark_home}/bin:" + airflow_env(home)["PATH"],
            "AIRFLOW_CONN_SPARK_DEFAULT": '{"conn_type": "spark", "host": "local[2]"}',
            "AIRFLOW_VAR_DICOMLAKE_LANDING": str(landing),
            "AIRFLOW_VAR_DICOMLAKE_LAKE": str(root / "lake"),
            "AIRFLOW_VAR_DICOMLAKE_BACKUP": str(root / "backup"),
            "AIRFLOW_VAR_DICOMLAKE_KEYRING": str(keyring),
            "AIRFLOW_VAR_DICOMLAKE_VERIFY_KEYRING": str(keyring),
            "AIRFLOW_VAR_DICOMLAKE_CONF": str(REPO / "conf" / "local.yaml"),
            "AIRFLOW_VAR_DICOMLAKE_JOBS_DIR": str(REPO / "jobs"),
            "AIRFLOW_VAR_DICOMLAKE_PY_FILES": str(dist / "dicomlake.zip"),
            "AIRFLOW_VAR_DICOMLAKE_PYTHON": str(executor_python(project_python, root / "pyenv")),
        },
    )
    subprocess.run(
        [str(airflow_python.parent / "airflow"), "db", "migrate"],
        env=env,
        check=True,
        capture_output=True,
        timeout=300,
    )
    return {
        "env": env,
        "root": root,
        "landing": landing,
        "lake": root / "lake",
        "backup": root / "backup",
    }


def test_hourly_ingest_run_builds_the_lake(airflow_python: Path, deployment: dict) -> None:
    """A mid-day run: ingest runs, the snapshot is skipped (not the night's run)."""
    run = probe(
        airflow_python,
        deployment["env"],
        "run",
        str(REPO / "jobs" / "dags"),
        "dicomlake_ingest",
        "2026-11-27T12:30:00+00:00",
    )
    assert run["state"] == "success", run.get("log_tail", run)
    assert run["data_interval"] == ["2026-11-27 11:00:00+00:00", "2026-11-27 12:00:00+00:00"]
    assert run["tasks"] == {
        "ingest": "success",
        "snapshot_due": "success",
        "snapshot": "skipped",
        "maintain": "skipped",
    }

    # What should be in the lake, from the landing files themselves. The lake de-identifies:
    # its UIDs are the keyring's pseudonyms of the originals (the algorithm is checked on its
    # own in tests/unit/test_dicom_deid.py; here only the wiring is).
    from dicomlake.crypto.keyring import Keyring
    from dicomlake.dicom.deid import uid_pseudonym
    from dicomlake.lake.paths import path_id

    keyring = Keyring.from_bytes((deployment["root"] / "keyring.json").read_bytes())
    secret = keyring.secret_for("pseudonym")
    expected = {}
    for path in sorted(deployment["landing"].iterdir()):
        try:
            ds = pydicom.dcmread(path, stop_before_pixels=True)
        except pydicom.errors.InvalidDicomError:
            continue
        expected[uid_pseudonym(secret, ds.SOPInstanceUID)] = ds.Modality
    assert len(expected) == 3

    tables = deployment["lake"] / "tables"
    # DuckDB over each table's current snapshot, read through its Delta log.
    instances, errors, runs = (  # noqa: F841 (DuckDB finds them by name)
        DeltaTable(str(tables / name)).to_pyarrow_dataset()
        for name in ("instances", "errors", "runs")
    )
    got = dict(duckdb.sql("select SOPInstanceUID, Modality from instances").fetchall())
    assert got == expected
    rejected = duckdb.sql("select source_path_id, reason from errors").fetchall()
    readme = str(deployment["landing"] / "README.txt")
    assert rejected == [(path_id(secret, readme), "not_dicom")]
    counts = duckdb.sql("select files_seen, ingested, quarantined from runs").fetchall()
    assert counts == [(4, 3, 1)]


def test_nightly_run_snapshots_after_ingest_and_weekly_verify(
    airflow_python: Path, deployment: dict
) -> None:
    """The run whose interval ends at midnight takes the snapshot, labelled by that midnight."""
    dags = str(REPO / "jobs" / "dags")
    run = probe(
        airflow_python,
        deployment["env"],
        "run",
        dags,
        "dicomlake_ingest",
        "2026-11-28T00:30:00+00:00",
    )
    assert run["state"] == "success", run.get("log_tail", run)
    assert run["data_interval"] == ["2026-11-27 23:00:00+00:00", "2026-11-28 00:00:00+00:00"]
    assert run["tasks"] == {
        "ingest": "success",
        "snapshot_due": "success",
        "snapshot": "success",
        "maintain": "success",
    }
    manifests = sorted(p.name for p in (deployment["backup"] / "manifests").glob("*.parquet"))
    # The first snapshot of a backup is a full one, whatever mode was asked for.
    assert manifests == ["20261128T000000Z-full.parquet"]

    verify = probe(
        airflow_python,
        deployment["env"],
        "run",
        dags,
        "dicomlake_verify",
        "2026-11-29T04:30:00+00:00",
    )
    assert verify["state"] == "success", verify.get("log_tail", verify)
    assert verify["tasks"] == {"verify": "success"}
