"""Background jobs: long work (training a reranker, fine-tuning) run in a thread.

A job runs a generator of progress events (anything with ``stage``, ``done``, ``total``
and ``message``) and returns a result. Its state is a frozen ``JobStatus`` that the UI
polls and the CLI prints; it is also written to ``record`` (JSON) after every event, so
what happened survives the process.
"""
from __future__ import annotations

import json
import logging
import threading
import time
import uuid
from collections.abc import Callable, Generator
from dataclasses import asdict, dataclass, is_dataclass, replace
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Progress:
    """A progress event for work that has no event type of its own."""

    stage: str
    done: int
    total: int
    message: str = ""


@dataclass(frozen=True)
class JobStatus:
    job_id: str
    kind: str
    target: str  # what it works on (a knowledge base name)
    state: str = "running"  # running | done | failed
    stage: str = "starting"
    done: int = 0
    total: int = 0
    message: str = ""
    started_at: str = ""
    seconds: float = 0.0
    error: str = ""
    result: dict | None = None

    @property
    def running(self) -> bool:
        return self.state == "running"

    def describe(self) -> str:
        """One line for people: ``training 12/150 (loss 0.41), 3 min``."""
        if self.state == "failed":
            return f"{self.kind} failed: {self.error}"
        if self.state == "done":
            return f"{self.kind} finished in {self.seconds / 60:.1f} min. {self.message}"
        count = f" {self.done}/{self.total}" if self.total else ""
        note = f" ({self.message})" if self.message else ""
        return f"{self.kind}: {self.stage}{count}{note}, {self.seconds / 60:.1f} min so far"


class Jobs:
    """Runs one job per (kind, target) at a time."""

    def __init__(self):
        self._jobs: dict[str, JobStatus] = {}
        self._lock = threading.Lock()

    def start(self, kind: str, target: str, work: Callable[[], Generator[Any, None, Any]],
              record: Path | None = None) -> JobStatus:
        with self._lock:
            for job in self._jobs.values():
                if job.kind == kind and job.target == target and job.running:
                    raise RuntimeError(f"{kind} is already running for {target!r} "
                                       f"(job {job.job_id}).")
            status = JobStatus(uuid.uuid4().hex[:12], kind, target,
                               started_at=datetime.now(timezone.utc).isoformat(timespec="seconds"))
            self._jobs[status.job_id] = status
        threading.Thread(target=self._run, args=(status.job_id, work, record),
                         name=f"job-{kind}", daemon=True).start()
        return status

    def get(self, job_id: str) -> JobStatus:
        with self._lock:
            return self._jobs[job_id]

    def latest(self, kind: str, target: str) -> JobStatus | None:
        with self._lock:
            found = [j for j in self._jobs.values() if j.kind == kind and j.target == target]
        return found[-1] if found else None

    def wait(self, job_id: str, poll: float = 0.5) -> JobStatus:
        while (job := self.get(job_id)).running:
            time.sleep(poll)
        return job

    def _update(self, job_id: str, record: Path | None, **changes) -> None:
        with self._lock:
            job = self._jobs[job_id]
            job = replace(job, seconds=round(_elapsed(job.started_at), 1), **changes)
            self._jobs[job_id] = job
        if record is not None:
            try:
                record.parent.mkdir(parents=True, exist_ok=True)
                tmp = record.with_suffix(".tmp")
                tmp.write_text(json.dumps(asdict(job), indent=2, default=str), encoding="utf-8")
                tmp.replace(record)
            except OSError:
                log.warning("Could not write job record %s", record, exc_info=True)

    def _run(self, job_id: str, work, record: Path | None) -> None:
        try:
            gen = work()
            while True:
                try:
                    ev = next(gen)
                except StopIteration as stop:
                    result = asdict(stop.value) if is_dataclass(stop.value) else stop.value
                    self._update(job_id, record, state="done", stage="done",
                                 result=result if isinstance(result, dict) else None)
                    return
                self._update(job_id, record, stage=ev.stage, done=ev.done, total=ev.total,
                             message=ev.message)
        except Exception as exc:  # a job's failure is reported, never raised into the app
            log.exception("Job %s failed", job_id)
            self._update(job_id, record, state="failed", error=str(exc) or type(exc).__name__)


def _elapsed(started_at: str) -> float:
    return (datetime.now(timezone.utc) - datetime.fromisoformat(started_at)).total_seconds()
