"""Starting the executors' Python workers while the driver plans.

A job's first Python task waits for its executor's Python worker daemon to start (the
interpreter, pyspark and `dicomlake.spark.daemon`'s preload: about 0.6 s of a local run) and
for a worker to be forked. Until then the executors are idle while the driver takes the lake's
lock, reads its ledger and lists the landing zone. `start_python_workers` runs a job of empty
tasks, one per core, from a thread of its own during that time: Spark keeps the workers it
forks for the job's tasks (``spark.python.worker.reuse``), so those find them started.
"""

from __future__ import annotations

import logging
import threading

from pyspark import InheritableThread, SparkContext

log = logging.getLogger(__name__)

JOB_GROUP = "dicomlake-start-python-workers"


def start_python_workers(sc: SparkContext) -> threading.Thread:
    """Start a job of empty tasks, one per core, in a thread of its own; return the thread.

    A command done first waits for it (`finish_starting`) before it stops the context. A
    failure is only logged: the job's own tasks start the workers and report what stops them.
    """
    thread = InheritableThread(target=_run, args=(sc,), name="start-python-workers")
    thread.daemon = True  # never holds the driver's exit
    thread.start()
    return thread


START_SECONDS = 30.0
"""How long a command done first waits for the workers' start to end before cancelling it."""


def finish_starting(sc: SparkContext, thread: threading.Thread) -> None:
    """Let the job `start_python_workers` ran end (about a second; cancelled after
    `START_SECONDS`) before the context is stopped: stopped under a running job, Spark prints
    an error and a stack trace after a command that succeeded (a task's result reaching a
    scheduler already shut down)."""
    thread.join(START_SECONDS)
    if thread.is_alive():
        sc.cancelJobGroup(JOB_GROUP)
        thread.join(START_SECONDS)


def _run(sc: SparkContext) -> None:
    # Local properties are this thread's: the group names this job alone
    try:  # the context may be stopped already, by a command that failed at once
        sc.setJobGroup(JOB_GROUP, "dicomlake: start the executors' Python workers")
        cores = max(sc.defaultParallelism, 1)
        sc.parallelize(range(cores), cores).foreach(_nothing)
    except Exception as exc:  # noqa: BLE001 - the job's own tasks report what stops workers
        log.debug("starting the Python workers ahead stopped: %s", exc)


def _nothing(_: object) -> None:
    """An empty task: what it costs is the worker that runs it."""
