"""The one job system (``common.jobs``): records on disk, a worker process per job, one
running job per lane, progress, cancel, resume, recovery after a crash, and results
installed by the submitting process."""
from __future__ import annotations

import json
import time

import pytest

from common.jobs import JobError, JobKind, JobQueue, TaskRecord

ECHO = "tests.helpers.echo_worker"


def _queue(tmp_path, installed=None, lanes=("a", "a")):
    kinds = {
        "one": JobKind(ECHO, TaskRecord, lane=lanes[0]),
        "two": JobKind(ECHO, TaskRecord, lane=lanes[1],
                       on_finished=None if installed is None else installed.append),
    }
    return JobQueue(tmp_path / "jobs", kinds)


def test_a_job_runs_in_a_worker_process_and_reports_progress(tmp_path):
    q = _queue(tmp_path)
    job = q.submit_task("one", "clinic", {"steps": 3})
    done = q.wait(job.id, timeout=60, interval=0.2)
    assert done.status == "succeeded", q.log(job.id)
    assert done.result == {"first": 1, "target": "clinic"}
    assert done.progress["done"] == 3 and done.pid not in (0, None)
    assert done.describe().startswith("one finished in")
    assert q.latest("one", "clinic").id == job.id and q.latest("one", "other") is None
    # the record is on disk: a new queue (an app restart) reads the same
    again = _queue(tmp_path)
    assert again.get(job.id).status == "succeeded"


def test_one_job_per_lane_runs_at_a_time_and_other_lanes_run_beside(tmp_path):
    q = _queue(tmp_path, lanes=("a", "a"))
    first = q.submit_task("one", "x", {"steps": 3, "sleep": 0.5})
    second = q.submit_task("two", "x", {"steps": 1})
    assert q.get(second.id).status == "queued"
    assert q.wait(second.id, timeout=60, interval=0.2).status == "succeeded"
    assert q.get(second.id).started >= q.get(first.id).ended
    q2 = _queue(tmp_path / "b", lanes=("a", "b"))
    slow = q2.submit_task("one", "x", {"steps": 4, "sleep": 0.5})
    fast = q2.submit_task("two", "x", {"steps": 1})
    assert q2.wait(fast.id, timeout=60, interval=0.2).status == "succeeded"
    assert q2.get(slow.id).status == "running"
    q2.wait(slow.id, timeout=60, interval=0.2)


def test_cancel_stops_the_worker_and_resume_continues_where_it_stopped(tmp_path):
    q = _queue(tmp_path)
    job = q.submit_task("one", "x", {"steps": 50, "sleep": 0.2})
    while q.get(job.id).progress.get("done", 0) < 2:
        time.sleep(0.1)
    cancelled = q.cancel(job.id)
    assert cancelled.status == "cancelled"
    with pytest.raises(JobError, match="only queued or running"):
        q.cancel(job.id)
    stopped_at = q.get(job.id).progress["done"]
    resumed = q.wait(q.resume(job.id).id, timeout=120, interval=0.2)
    assert resumed.status == "succeeded" and resumed.result["first"] == stopped_at + 1
    with pytest.raises(JobError, match="only interrupted"):
        q.resume(job.id)


def test_a_worker_that_dies_leaves_an_interrupted_job_that_resumes(tmp_path):
    q = _queue(tmp_path)
    job = q.submit_task("one", "x", {"steps": 3, "die": 2})
    died = q.wait(job.id, timeout=60, interval=0.2)
    assert died.status == "interrupted" and "code 3" in died.error
    assert q.wait(q.resume(job.id).id, timeout=60, interval=0.2).status == "succeeded"


def test_a_failed_job_says_why_and_results_are_installed_once(tmp_path):
    installed: list = []
    q = _queue(tmp_path, installed)
    bad = q.submit_task("one", "x", {"fail": True})
    assert q.wait(bad.id, timeout=60, interval=0.2).error == "asked to fail"
    good = q.submit_task("two", "kb", {"steps": 1})
    q.wait(good.id, timeout=60, interval=0.2)
    q.install_finished()
    q.install_finished()
    assert [r.id for r in installed] == [good.id]
    assert json.loads((good.path / "job.json").read_text())["installed"] is True


def test_a_result_that_cannot_be_installed_fails_the_job_and_a_resume_installs_it(tmp_path):
    calls: list = []

    def install(record):
        calls.append(record.id)
        if len(calls) == 1:
            raise RuntimeError("the knowledge base is gone")

    q = JobQueue(tmp_path / "jobs", {"two": JobKind(ECHO, TaskRecord, on_finished=install)})
    job = q.submit_task("two", "kb", {"steps": 1})
    q.wait(job.id, timeout=60, interval=0.2)
    q.install_finished()
    failed = q.get(job.id)
    assert failed.status == "failed" and "could not be installed: the knowledge base is gone" \
        in failed.error
    assert q.wait(q.resume(job.id).id, timeout=60, interval=0.2).status == "succeeded"
    q.install_finished()
    assert calls == [job.id, job.id] and q.get(job.id).installed


def test_a_queue_opened_later_follows_and_installs_what_an_earlier_run_left(tmp_path):
    first = _queue(tmp_path)
    job = first.submit_task("two", "kb", {"steps": 2, "sleep": 0.3})
    first.close()  # the app stops; the worker goes on
    installed: list = []
    again = _queue(tmp_path, installed)
    again.wait(job.id, timeout=60, interval=0.2)
    deadline = time.time() + 30
    while not installed and time.time() < deadline:
        time.sleep(0.2)  # the watcher started by the new queue installs it
    assert [r.id for r in installed] == [job.id]


def test_unknown_jobs_and_kinds_are_clear_errors(tmp_path):
    q = _queue(tmp_path)
    with pytest.raises(JobError, match="No job"):
        q.get("../etc")
    with pytest.raises(JobError, match="Unknown kind"):
        q.submit_task("three", "x", {})


def test_fine_tuning_jobs_kept_by_an_earlier_docent_join_the_one_queue(tmp_path):
    from assistant.background import job_queue
    from finetune.jobs import JobRecord, write_job
    from knowledge.library import Library
    from tests.conftest import make_settings
    from tests.fakes import HashEmbedder

    settings = make_settings(tmp_path)
    earlier = settings.paths.data_dir / "finetune" / "jobs" / "20250101-120000-aaaaaa"
    earlier.mkdir(parents=True)
    write_job(earlier, JobRecord("20250101-120000-aaaaaa", "lora", {"r": 8}, "qwen2.5-coder-0.5b",
                                 "faq-1", status="succeeded", created=1.0))
    library = Library(settings.paths.kb_dir, HashEmbedder(), 220, 40)
    queue = job_queue(settings, library)
    assert [r.id for r in queue.list()] == ["20250101-120000-aaaaaa"]
    assert queue.list()[0].kind == "finetune" and queue.latest("re-embedding", "x") is None
    library.close()


def test_a_launched_worker_keeps_the_launchers_pid_and_cancel_stops_what_it_started(tmp_path):
    """A launcher (as torchrun) starts the worker in its own session: the record keeps the
    launcher's pid, and cancel stops the worker too, not only the launcher's group."""
    from common.processes import pid_alive

    launcher = ["-m", "tests.helpers.session_launcher"]
    q = JobQueue(tmp_path / "jobs", {"one": JobKind(ECHO, TaskRecord,
                                                    launch=lambda record: launcher)})
    job = q.submit_task("one", "x", {"steps": 200, "sleep": 0.1})
    while q.get(job.id).progress.get("done", 0) < 2:
        time.sleep(0.1)
    child = int((job.path / "child.pid").read_text())
    running = q.get(job.id)
    assert running.pid != child and pid_alive(running.pid, "session_launcher")
    assert q.cancel(job.id).status == "cancelled"
    deadline = time.time() + 10
    while pid_alive(child) and time.time() < deadline:
        time.sleep(0.1)
    assert not pid_alive(child) and not pid_alive(running.pid)
