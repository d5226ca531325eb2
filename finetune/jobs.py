"""Training jobs: records on disk, run one at a time by a worker subprocess.

A job is ``<root>/<job_id>/`` with ``job.json`` (the record), ``metrics.jsonl``
(progress lines written by the trainer), ``train.log`` (the worker's output),
``checkpoints/`` and, while running, the worker's pid. The app only reads records, so
progress survives a page reload and an app restart. Statuses:

    queued -> running -> succeeded | failed | cancelled
                      -> interrupted   (the worker died: crash, kill -9, reboot)
    interrupted | failed | cancelled --resume--> queued (continues from the last checkpoint)
"""
from __future__ import annotations

import fcntl
import json
import logging
import os
import signal
import subprocess
import sys
import threading
import time
import uuid
from contextlib import contextmanager
from dataclasses import dataclass, field, fields
from pathlib import Path

from finetune.errors import FinetuneError

log = logging.getLogger(__name__)

FORMAT_VERSION = 1
ACTIVE = ("queued", "running")
RESUMABLE = ("interrupted", "failed", "cancelled")
POLL_SECONDS = 2.0


class JobError(FinetuneError):
    """A job that does not exist or cannot do what was asked; the message says why."""


@dataclass(frozen=True)
class JobRecord:
    id: str
    method: str
    spec: dict
    base_model: str
    dataset_id: str
    status: str = "queued"
    name: str = ""
    data_dir: str = ""
    models_dir: str = ""
    kb: str = ""
    created: float = 0.0
    started: float = 0.0
    ended: float = 0.0
    pid: int = 0
    error: str = ""
    adapter_id: str = ""
    resume: bool = False
    attempts: int = 0
    result: dict = field(default_factory=dict)
    estimate: dict = field(default_factory=dict)
    progress: dict = field(default_factory=dict, compare=False)  # last metrics line (read)
    path: Path = field(default=Path("."), compare=False)
    format_version: int = FORMAT_VERSION

    def to_json(self) -> dict:
        skip = {"progress", "path"}
        return {f.name: getattr(self, f.name) for f in fields(self) if f.name not in skip}

    def describe(self) -> str:
        p = self.progress
        if self.status == "running" and p:
            return (f"{self.id} running: step {p['step']}/{p['total']}, loss {p['loss']:.4f}, "
                    f"elapsed {p['elapsed']:.0f} s, ETA {p['eta']:.0f} s")
        extra = f" ({self.error.splitlines()[0]})" if self.error else ""
        adapter = f" -> adapter {self.adapter_id}" if self.adapter_id else ""
        return f"{self.id} {self.status}{adapter}{extra}"


# --- records ---------------------------------------------------------------------------
@contextmanager
def _locked(job_dir: Path):
    with (job_dir / ".lock").open("a") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def read_job(job_dir: Path) -> JobRecord:
    path = job_dir / "job.json"
    if not path.is_file():
        raise JobError(f"No training job {job_dir.name!r}.")
    data = json.loads(path.read_text(encoding="utf-8"))
    known = {f.name for f in fields(JobRecord)}
    record = JobRecord(**{k: v for k, v in data.items() if k in known})
    return _with(record, progress=last_metrics(job_dir), path=job_dir)


def _with(record: JobRecord, **changes) -> JobRecord:
    from dataclasses import replace

    return replace(record, **changes)


def write_job(job_dir: Path, record: JobRecord) -> None:
    tmp = job_dir / "job.json.tmp"
    tmp.write_text(json.dumps(record.to_json(), indent=2, ensure_ascii=False), encoding="utf-8")
    tmp.replace(job_dir / "job.json")


def update_job(job_dir: Path, **changes) -> JobRecord:
    """Read-modify-write ``job.json`` under a file lock (the app and the worker both write)."""
    with _locked(job_dir):
        record = _with(read_job(job_dir), **changes)
        write_job(job_dir, record)
    return record


def last_metrics(job_dir: Path) -> dict:
    path = job_dir / "metrics.jsonl"
    if not path.is_file():
        return {}
    lines = [x for x in path.read_text(encoding="utf-8").splitlines() if x.strip()]
    try:
        return json.loads(lines[-1]) if lines else {}
    except ValueError:  # a line cut by a kill
        return json.loads(lines[-2]) if len(lines) > 1 else {}


def metrics(job_dir: Path) -> list[dict]:
    """Every progress line (the loss curve)."""
    path = job_dir / "metrics.jsonl"
    out = []
    if path.is_file():
        for line in path.read_text(encoding="utf-8").splitlines():
            try:
                out.append(json.loads(line))
            except ValueError:
                continue
    return out


def pid_alive(pid: int) -> bool:
    """A live (not zombie) process whose command line runs our worker."""
    if pid <= 0:
        return False
    try:
        import psutil

        proc = psutil.Process(pid)
        return proc.status() != psutil.STATUS_ZOMBIE and "finetune.worker" in " ".join(proc.cmdline())
    except Exception:  # noqa: BLE001 - gone, or no access: not ours
        return False


# --- the queue -------------------------------------------------------------------------
class JobQueue:
    """Jobs under ``root``; one worker subprocess at a time (``python -m finetune.worker
    --job DIR``). ``poll()`` advances the queue; a watcher thread polls while jobs are
    active, and every read polls too."""

    def __init__(self, root: Path, python: str = sys.executable, env: dict | None = None):
        self.root = Path(root)
        self.python = python
        self.env = env
        self._procs: dict[str, subprocess.Popen] = {}
        self._lock = threading.RLock()
        self._watcher: threading.Thread | None = None
        self.recover()

    # --- reading ---
    def list(self) -> list[JobRecord]:
        self.poll()
        return self._records()

    def _records(self) -> list[JobRecord]:
        if not self.root.is_dir():
            return []
        out = [read_job(p) for p in self.root.iterdir() if (p / "job.json").is_file()]
        return sorted(out, key=lambda r: r.created, reverse=True)

    def get(self, job_id: str) -> JobRecord:
        self.poll()
        return read_job(self._dir(job_id))

    def log(self, job_id: str, tail: int = 20_000) -> str:
        path = self._dir(job_id) / "train.log"
        if not path.is_file():
            return ""
        with path.open("rb") as f:
            f.seek(max(0, path.stat().st_size - tail))
            return f.read().decode("utf-8", errors="replace")

    def _dir(self, job_id: str) -> Path:
        folder = self.root / job_id
        if "/" in job_id or ".." in job_id or not (folder / "job.json").is_file():
            raise JobError(f"No training job {job_id!r}.")
        return folder

    # --- changing ---
    def submit(self, method: str, spec: dict, base_model: str, dataset_id: str, *,
               name: str = "", data_dir: Path, models_dir: Path, kb: str = "",
               estimate: dict | None = None, files: dict[str, str] | None = None
               ) -> JobRecord:
        """Queue a job. ``files``: name -> text written into the job's folder before the
        record exists (inputs the worker reads, e.g. the RAG evaluation prompts)."""
        job_id = time.strftime("%Y%m%d-%H%M%S-") + uuid.uuid4().hex[:6]
        folder = self.root / job_id
        folder.mkdir(parents=True)
        for file_name, text in (files or {}).items():
            (folder / file_name).write_text(text, encoding="utf-8")
        record = JobRecord(job_id, method, dict(spec), base_model, dataset_id, "queued",
                           name, str(data_dir), str(models_dir), kb, time.time(),
                           estimate=dict(estimate or {}), path=folder)
        write_job(folder, record)
        self.poll()
        self._watch()
        return read_job(folder)

    def cancel(self, job_id: str) -> JobRecord:
        folder = self._dir(job_id)
        with self._lock:
            record = read_job(folder)
            if record.status not in ACTIVE:
                raise JobError(f"Job {job_id} is {record.status}; only queued or running jobs "
                               "can be cancelled.")
            update_job(folder, status="cancelled", ended=time.time(), error="cancelled by the user")
            if record.status == "running":
                self._stop(job_id, record.pid)
        self.poll()
        return read_job(folder)

    def resume(self, job_id: str) -> JobRecord:
        """Queue an interrupted, failed or cancelled job again; it continues from its last
        checkpoint (LoRA, CPT and DPO: the Trainer's; ReFT: its saved interventions)."""
        folder = self._dir(job_id)
        record = read_job(folder)
        if record.status not in RESUMABLE:
            raise JobError(f"Job {job_id} is {record.status}; only interrupted, failed or "
                           "cancelled jobs can be resumed.")
        update_job(folder, status="queued", resume=True, error="", ended=0.0, pid=0)
        self.poll()
        self._watch()
        return read_job(folder)

    def recover(self) -> list[str]:
        """On start: running jobs whose worker is gone become "interrupted" (resumable)."""
        changed = []
        for record in self._records():
            if record.status == "running" and record.id not in self._procs \
                    and not pid_alive(record.pid):
                update_job(record.path, status="interrupted", ended=time.time(),
                           error="the worker stopped unexpectedly (crash, kill or restart); "
                                 "resume it to continue from the last checkpoint")
                changed.append(record.id)
        return changed

    def poll(self) -> None:
        """Reap a finished worker; start the oldest queued job when none is running."""
        with self._lock:
            for job_id, proc in list(self._procs.items()):
                if proc.poll() is not None:
                    del self._procs[job_id]
                    self._reaped(job_id, proc.returncode)
            self.recover()
            records = self._records()
            if any(r.status == "running" for r in records):
                return
            queued = sorted((r for r in records if r.status == "queued"), key=lambda r: r.created)
            if queued:
                self._start(queued[0])

    def wait(self, job_id: str, timeout: float | None = None, interval: float = 1.0) -> JobRecord:
        deadline = None if timeout is None else time.time() + timeout
        while True:
            record = self.get(job_id)
            if record.status not in ACTIVE:
                return record
            if deadline is not None and time.time() > deadline:
                raise TimeoutError(f"Job {job_id} still {record.status} after {timeout} s.")
            time.sleep(interval)

    def close(self) -> None:
        """Forget the watcher (workers keep running; a new queue finds them by pid)."""
        self._watcher = None

    # --- internals ---
    def _start(self, record: JobRecord) -> None:
        folder = record.path
        logf = (folder / "train.log").open("ab")
        cmd = [self.python, "-m", "finetune.worker", "--job", str(folder)]
        env = {**os.environ, **(self.env or {})}
        root = str(Path(__file__).resolve().parent.parent)
        env["PYTHONPATH"] = os.pathsep.join(p for p in (root, env.get("PYTHONPATH", "")) if p)
        proc = subprocess.Popen(cmd, stdout=logf, stderr=subprocess.STDOUT, cwd=root, env=env,
                                start_new_session=True)
        logf.close()
        update_job(folder, status="running", pid=proc.pid, started=time.time(),
                   attempts=record.attempts + 1)
        self._procs[record.id] = proc
        log.info("Started training job %s (pid %d)", record.id, proc.pid)

    def _reaped(self, job_id: str, code: int) -> None:
        folder = self.root / job_id
        record = read_job(folder)
        if record.status == "running":  # the worker died without writing its end
            update_job(folder, status="interrupted", ended=time.time(),
                       error=f"the worker exited with code {code} without finishing; "
                             "see the log, then resume")

    def _stop(self, job_id: str, pid: int) -> None:
        for sig, wait in ((signal.SIGTERM, 10.0), (signal.SIGKILL, 5.0)):
            try:
                os.killpg(pid, sig)
            except (ProcessLookupError, PermissionError):
                return
            deadline = time.time() + wait
            while time.time() < deadline:
                proc = self._procs.get(job_id)
                if proc is not None and proc.poll() is not None:
                    del self._procs[job_id]
                    return
                if proc is None and not pid_alive(pid):
                    return
                time.sleep(0.1)

    def _watch(self) -> None:
        if self._watcher is not None and self._watcher.is_alive():
            return
        self._watcher = threading.Thread(target=self._watch_loop, name="finetune-jobs",
                                         daemon=True)
        self._watcher.start()

    def _watch_loop(self) -> None:
        me = threading.current_thread()
        while self._watcher is me:
            try:
                self.poll()
                if not any(r.status in ACTIVE for r in self._records()):
                    break
            except Exception:  # logged; the next poll retries
                log.exception("Polling training jobs failed")
            time.sleep(POLL_SECONDS)
