"""The executors' Python workers start in a job of their own, while the caller goes on."""

from __future__ import annotations

import contextlib
import time

from dicomlake.spark import workers
from dicomlake.spark.workers import JOB_GROUP, finish_starting, start_python_workers


def _group_jobs(sc, group: str, count: int) -> list:
    """The jobs of `group`, once the status store has `count` of them finished (its listener
    hears of a job's end a little after the job's caller does)."""
    tracker = sc.statusTracker()
    deadline = time.monotonic() + 30
    while True:
        jobs = [tracker.getJobInfo(j) for j in tracker.getJobIdsForGroup(group)]
        if sum(j.status != "RUNNING" for j in jobs) >= count or time.monotonic() > deadline:
            return jobs
        time.sleep(0.05)


def test_python_workers_start_in_a_job_of_one_empty_task_per_core(sc) -> None:
    before = len(sc.statusTracker().getJobIdsForGroup(JOB_GROUP))
    thread = start_python_workers(sc)
    thread.join(timeout=120)
    assert not thread.is_alive()
    jobs = _group_jobs(sc, JOB_GROUP, before + 1)
    assert len(jobs) == before + 1
    job = max(jobs, key=lambda j: j.jobId)
    assert job.status == "SUCCEEDED"
    (stage,) = [sc.statusTracker().getStageInfo(s) for s in job.stageIds]
    assert stage.numTasks == sc.defaultParallelism == 2

    # The group is the thread's alone: a job of the caller's is not in it
    assert sc.parallelize(range(4), 2).map(lambda x: x + 1).sum() == 10
    assert len(_group_jobs(sc, JOB_GROUP, before + 1)) == before + 1


def test_a_command_done_first_waits_for_the_start_to_end(sc) -> None:
    before = len(sc.statusTracker().getJobIdsForGroup(JOB_GROUP))
    thread = start_python_workers(sc)
    finish_starting(sc, thread)  # at once: the job has only begun
    assert not thread.is_alive()  # its tasks' results came back before the context may stop
    jobs = _group_jobs(sc, JOB_GROUP, before + 1)
    assert max(jobs, key=lambda j: j.jobId).status == "SUCCEEDED"


def test_a_start_that_outlasts_the_wait_is_cancelled(sc, monkeypatch) -> None:
    def slow(sc) -> None:  # a start that would go on far longer than the wait
        sc.setJobGroup(JOB_GROUP, "slow start")
        with contextlib.suppress(Exception):  # cancelled, as expected
            sc.parallelize(range(2), 2).foreach(lambda _: time.sleep(60))

    monkeypatch.setattr(workers, "_run", slow)
    monkeypatch.setattr(workers, "START_SECONDS", 2.0)
    thread = start_python_workers(sc)
    t = time.monotonic()
    finish_starting(sc, thread)
    assert not thread.is_alive()
    assert time.monotonic() - t < 30  # cancelled after the wait, not run to its end
    # The context is still usable after the cancelled job
    assert sc.parallelize(range(4), 2).map(lambda x: x + 1).sum() == 10
