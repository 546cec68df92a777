"""Airflow DAGs of dicomlake: ingest on a schedule with a nightly snapshot after it, and a weekly
deep verify of the backup. Every task submits a ``jobs/`` entry point with ``spark-submit``.

``dicomlake_ingest`` (every hour by default)
    ``ingest`` >> ``snapshot_due`` >> ``snapshot`` >> ``maintain``. All writes to the lake are in
    this one DAG with ``max_active_runs=1``: the lake's lock allows one writer at a time, and a
    live (non-HDFS-snapshot) copy must not overlap an ingest. A task that finds the lake or backup
    locked by a command run by hand exits 4 having changed nothing, and is retried later
    (``retries``, ``retry_delay``). ``snapshot_due`` lets the snapshot
    run only in the run whose data interval crosses midnight UTC, i.e. nightly, right after that
    night's ingest, or in a run triggered with ``params.snapshot_mode``. Its label is the data
    interval's end, so a retry or a re-run of the same interval is the same snapshot
    (``dicomlake snapshot`` is idempotent per label). The snapshot is full on the night into
    Monday and incremental on the others, unless ``params.snapshot_mode`` says otherwise.
    ``maintain`` (compaction, checkpoints, vacuum of the tables) follows the nightly snapshot,
    so the night's snapshot holds the run's files as written and the next one the compacted
    files; it is idempotent, a retry compacts what is left.
``dicomlake_verify`` (Sundays 04:00 UTC by default)
    ``verify --deep``: authenticates every manifest, reads every object of the backup back and
    decrypts the pixels (its keyring has the same secret as ingest's, and the private key). It only
    reads committed snapshots, so it may overlap a snapshot that is still running.

Settings (Airflow Variables; defaults fit ``docker/compose.yaml``):

=============================== ===================================================
``dicomlake_landing``           landing zone URI
``dicomlake_lake``              lake URI
``dicomlake_backup``            backup URI
``dicomlake_keyring``           keyring for ingest and snapshot (the public half is enough)
``dicomlake_verify_keyring``    keyring that can decrypt, for the deep verify
``dicomlake_conf``              dicomlake YAML config passed with ``--conf``
``dicomlake_jobs_dir``          folder with the ``jobs/*.py`` entry points
``dicomlake_py_files``          the packaged project for ``--py-files`` (``dev/package.py``)
``dicomlake_python``            Python of the driver and executors (``spark.pyspark.python``)
``dicomlake_ingest_schedule``   cron of the ingest DAG [``0 * * * *``]
``dicomlake_verify_schedule``   cron of the verify DAG [``0 4 * * 0``]
``dicomlake_spark_conn_id``     Spark connection [``spark_default``]
=============================== ===================================================

Paths are Jinja templates over Variables, resolved when a task runs, from any secrets backend.
The schedules and the connection id are needed when the file is parsed, where reading a
Variable would cost a metadata call on every parse: those three are read from the environment
variables ``AIRFLOW_VAR_<NAME>`` only, which Airflow also serves as the same Variables.

Nothing here does work at import time beyond building the operators; no task reads the clock.
"""

from __future__ import annotations

import os
from datetime import datetime, timedelta

from airflow.providers.apache.spark.operators.spark_submit import SparkSubmitOperator
from airflow.sdk import DAG, CronDataIntervalTimetable, Param, task

# Mounted by docker/compose.yaml; a real deployment sets the Variables instead.
DEFAULTS = {
    "dicomlake_landing": "hdfs://namenode:8020/dicomlake/landing",
    "dicomlake_lake": "hdfs://namenode:8020/dicomlake/lake",
    "dicomlake_backup": "hdfs://namenode:8020/dicomlake/backup",
    "dicomlake_keyring": "/opt/dicomlake/secrets/keyring.json",
    "dicomlake_verify_keyring": "/opt/dicomlake/secrets/keyring.json",
    "dicomlake_conf": "/opt/dicomlake/conf/cluster.yaml",
    "dicomlake_jobs_dir": "/opt/dicomlake/jobs",
    "dicomlake_py_files": "/opt/dicomlake/dist/dicomlake.zip",
    "dicomlake_python": "python3",
}
PARSE_TIME_DEFAULTS = {
    "dicomlake_ingest_schedule": "0 * * * *",
    "dicomlake_verify_schedule": "0 4 * * 0",
    "dicomlake_spark_conn_id": "spark_default",
}
# The end of the run's data interval (a manual run without one: when it was due to run), in
# the UTC form dicomlake's snapshot labels use.
INTERVAL_END = "(data_interval_end or dag_run.run_after).in_timezone('UTC')"
LABEL = "{{ " + INTERVAL_END + ".strftime('%Y%m%dT%H%M%SZ') }}"
START_DATE = datetime(2026, 1, 1)


def var(name: str) -> str:
    """A Jinja expression for Variable ``name``, falling back to its default."""
    return f"{{{{ var.value.get('{name}', '{DEFAULTS[name]}') }}}}"


def parse_time_setting(name: str) -> str:
    """A setting the DAG's shape needs at parse time: from ``AIRFLOW_VAR_<NAME>``, no DB call."""
    return os.environ.get(f"AIRFLOW_VAR_{name.upper()}") or PARSE_TIME_DEFAULTS[name]


def submit(task_id: str, job: str, args: list[str], timeout: timedelta) -> SparkSubmitOperator:
    """A task that spark-submits ``jobs/<job>.py`` with the packaged project."""
    return SparkSubmitOperator(
        task_id=task_id,
        conn_id=parse_time_setting("dicomlake_spark_conn_id"),
        application=f"{var('dicomlake_jobs_dir')}/{job}.py",
        py_files=var("dicomlake_py_files"),
        conf={"spark.pyspark.python": var("dicomlake_python"), "spark.sql.session.timeZone": "UTC"},
        name=f"dicomlake-{job}-{LABEL}",
        application_args=[*args, "--conf", var("dicomlake_conf")],
        execution_timeout=timeout,
    )


def snapshot_is_due(start: datetime | None, end: datetime | None, mode: str) -> bool:
    """True for the one run a night whose data interval (UTC) crosses or ends at midnight, and
    for a run that asks for a snapshot with ``params.snapshot_mode``."""
    if mode:
        return True
    return start is not None and end is not None and end.date() > start.date()


DEFAULT_ARGS = {
    "owner": "dicomlake",
    # Every job is safe to re-run: an ingest redoes or finishes an uncommitted run, a snapshot
    # with the same label returns the committed one, verify only reads; one that found the lake
    # or backup locked (exit 4) did nothing, and its retry waits for the holder.
    "retries": 2,
    "retry_delay": timedelta(minutes=5),
    "retry_exponential_backoff": True,
    "max_retry_delay": timedelta(minutes=30),
}

with DAG(
    dag_id="dicomlake_ingest",
    description="Ingest new DICOM files into the lake; a snapshot after the night's ingest",
    schedule=CronDataIntervalTimetable(
        parse_time_setting("dicomlake_ingest_schedule"), timezone="UTC"
    ),
    start_date=START_DATE,
    catchup=False,  # one ingest takes everything new; old intervals need no run of their own
    max_active_runs=1,  # one writer per lake at a time: a second would only exit 4 (busy)
    dagrun_timeout=timedelta(hours=12),
    default_args=DEFAULT_ARGS,
    params={
        "snapshot_mode": Param(
            "",
            type="string",
            enum=["", "full", "incremental", "differential"],
            description="empty: the nightly rule (full into Monday, "
            "else incremental); set: snapshot now, this mode",
        )
    },
    tags=["dicomlake"],
) as ingest_dag:
    ingest = submit(
        "ingest",
        "ingest",
        [
            "--landing",
            var("dicomlake_landing"),
            "--lake",
            var("dicomlake_lake"),
            "--keyring",
            var("dicomlake_keyring"),
        ],
        timeout=timedelta(hours=6),
    )

    @task.short_circuit(task_id="snapshot_due")
    def snapshot_due(
        data_interval_start: datetime | None = None,
        data_interval_end: datetime | None = None,
        params: dict[str, str] | None = None,
    ) -> bool:
        """Skip the snapshot unless it is the night's run or the run asks for one."""
        return snapshot_is_due(
            data_interval_start, data_interval_end, (params or {}).get("snapshot_mode", "")
        )

    snapshot = submit(
        "snapshot",
        "snapshot",
        [
            "--lake",
            var("dicomlake_lake"),
            "--backup",
            var("dicomlake_backup"),
            "--mode",
            "{{ params.snapshot_mode or ('full' if "
            + INTERVAL_END
            + ".isoweekday() == 1 else 'incremental') }}",
            "--label",
            LABEL,
            # Its secret authenticates the manifests (the public half has it)
            "--keyring",
            var("dicomlake_keyring"),
        ],
        timeout=timedelta(hours=6),
    )

    maintain = submit(
        "maintain", "maintain", ["--lake", var("dicomlake_lake")], timeout=timedelta(hours=3)
    )

    ingest >> snapshot_due() >> snapshot >> maintain

with DAG(
    dag_id="dicomlake_verify",
    description="Weekly deep verify of the lake's backup: read, hash and decrypt everything",
    schedule=CronDataIntervalTimetable(
        parse_time_setting("dicomlake_verify_schedule"), timezone="UTC"
    ),
    start_date=START_DATE,
    catchup=False,
    max_active_runs=1,
    dagrun_timeout=timedelta(hours=24),
    default_args=DEFAULT_ARGS,
    tags=["dicomlake"],
) as verify_dag:
    submit(
        "verify",
        "verify",
        [
            "--backup",
            var("dicomlake_backup"),
            "--deep",
            "--keyring",
            var("dicomlake_verify_keyring"),
        ],
        timeout=timedelta(hours=12),
    )
