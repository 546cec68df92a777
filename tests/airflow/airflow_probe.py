"""Runs inside the Airflow virtualenv (``dev/airflow.sh``), never in the project's: loads the DAG
folder and reports on it, or runs one DAG run with ``dag.test()``. Prints one JSON line.

    python airflow_probe.py load DAG_FOLDER
    python airflow_probe.py run DAG_FOLDER DAG_ID LOGICAL_DATE [RUN_CONF_JSON]

Expects ``AIRFLOW_HOME`` set to a migrated metadata DB (``airflow db migrate``) for ``run``.
"""

from __future__ import annotations

import json
import sys
from datetime import datetime
from typing import Any


def _bag(folder: str):
    from airflow.dag_processing.dagbag import DagBag

    return DagBag(dag_folder=folder)


def load(folder: str) -> dict[str, Any]:
    """Import errors, and per DAG its schedule, limits and task graph as plain values."""
    bag = _bag(folder)
    dags: dict[str, Any] = {}
    for dag_id, dag in sorted(bag.dags.items()):
        tasks = {}
        for t in dag.tasks:
            timeout = t.execution_timeout.total_seconds() if t.execution_timeout else None
            tasks[t.task_id] = {
                "operator": type(t).__name__,
                "upstream": sorted(t.upstream_task_ids),
                "retries": t.retries,
                "execution_timeout_s": timeout,
                "conn_id": getattr(t, "_conn_id", None),
                "application": getattr(t, "application", None),
                "py_files": getattr(t, "py_files", None),
                "application_args": getattr(t, "application_args", None),
            }
        dags[dag_id] = {
            "timetable": type(dag.timetable).__name__,
            "schedule": getattr(dag.timetable, "expression", None),
            "timezone": str(getattr(dag.timetable, "timezone", "")),
            "catchup": dag.catchup,
            "max_active_runs": dag.max_active_runs,
            "dagrun_timeout_s": dag.dagrun_timeout.total_seconds() if dag.dagrun_timeout else None,
            "params": sorted(dag.params.keys()),
            "tasks": tasks,
        }
    return {"import_errors": {k: str(v) for k, v in bag.import_errors.items()}, "dags": dags}


def run(folder: str, dag_id: str, logical_date: str, conf: dict[str, Any]) -> dict[str, Any]:
    """One run of ``dag_id`` at ``logical_date``; the run's state, interval and task states."""
    bag = _bag(folder)
    if bag.import_errors:
        return {"import_errors": {k: str(v) for k, v in bag.import_errors.items()}}
    dag = bag.dags[dag_id]
    for t in dag.tasks:
        t.retries = 0  # a failure should fail the test now, not wait out the retry delay
    dr = dag.test(logical_date=datetime.fromisoformat(logical_date), run_conf=conf or None)
    return {
        "state": str(dr.state),
        "data_interval": [str(dr.data_interval_start), str(dr.data_interval_end)],
        "tasks": {ti.task_id: str(ti.state) for ti in dr.get_task_instances()},
    }


def main(argv: list[str]) -> int:
    if argv[0] == "load":
        out = load(argv[1])
    elif argv[0] == "run":
        out = run(argv[1], argv[2], argv[3], json.loads(argv[4]) if len(argv) > 4 else {})
    else:
        raise SystemExit(f"unknown command {argv[0]!r}: load | run")
    # Last line of stdout, after whatever Airflow logged there.
    print("\nPROBE " + json.dumps(out, sort_keys=True))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
