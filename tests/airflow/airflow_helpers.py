"""Helpers of the Airflow tests: a throwaway Airflow's environment, the probe, an executor venv."""

from __future__ import annotations

import json
import os
import subprocess
from collections.abc import Mapping
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[2]
PROBE = Path(__file__).with_name("airflow_probe.py")
DAGS = REPO / "jobs" / "dags"


def airflow_env(home: Path, extra: Mapping[str, str] = ()) -> dict[str, str]:
    """A clean environment for one throwaway Airflow: its own home and SQLite DB, our DAGs."""
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("AIRFLOW", "DICOMLAKE_", "SPARK_", "PYSPARK_"))
    }
    env.update(
        {
            "AIRFLOW_HOME": str(home),
            "AIRFLOW__CORE__DAGS_FOLDER": str(DAGS),
            "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
            "AIRFLOW__LOGGING__LOGGING_LEVEL": "WARNING",
        }
    )
    env.update(extra)
    return env


def probe(python: Path, env: Mapping[str, str], *args: str, timeout: float = 600) -> dict[str, Any]:
    """Run ``airflow_probe.py`` in the Airflow venv and return its JSON report."""
    out = subprocess.run(
        [str(python), str(PROBE), *args],
        env=dict(env),
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=REPO,
    )
    lines = [ln for ln in out.stdout.splitlines() if ln.startswith("PROBE ")]
    assert out.returncode == 0 and lines, (
        f"probe {args} exited {out.returncode}\n--- stdout\n{out.stdout[-8000:]}"
        f"\n--- stderr\n{out.stderr[-8000:]}"
    )
    report = json.loads(lines[-1][len("PROBE ") :])
    if report.get("state", "success") != "success":
        # The tasks' logs (spark-submit's output included) go to stdout under dag.test().
        report["log_tail"] = out.stdout[-12000:]
    return report


def executor_python(base: Path, env_dir: Path) -> Path:
    """A venv that sees ``base``'s packages but not its editable install of ``lib/``.

    Spark runs the job with it, so ``dicomlake`` can only come from ``--py-files``, as on a real
    cluster (the same trick as dev/spark_cluster.py).
    """

    def purelib(python: Path) -> str:
        return subprocess.run(
            [str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()

    subprocess.run([str(base), "-m", "venv", "--without-pip", str(env_dir)], check=True)
    python = env_dir / "bin" / "python"
    # A plain directory line in a .pth is put on sys.path; the .pth files in it are not run.
    (Path(purelib(python)) / "dicomlake_base_venv.pth").write_text(purelib(base) + "\n")
    return python
