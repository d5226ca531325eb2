"""Long work as job records on disk, each run by a worker subprocess.

A job is ``<root>/<job_id>/`` with ``job.json`` (the record), ``metrics.jsonl`` (progress
lines the worker appends), ``train.log`` (the worker's output) and whatever the work
keeps there (inputs written at submission, checkpoints, results). The process that
submits only reads records and starts workers, so progress survives a page reload, an
app restart and a crash of the work itself. Statuses:

    queued -> running -> succeeded | failed | cancelled
                      -> interrupted   (the worker died: crash, kill -9, reboot)
    interrupted | failed | cancelled --resume--> queued (the worker continues from what
                                                        it kept)

Each record has a ``kind``; a ``JobKind`` names the worker module for it
(``python -m <worker> --job DIR``), the record class, and the ``lane``: one job per lane
runs at a time (fine-tuning and reranker training share the CPU-heavy lane), jobs of
other lanes run beside it. ``launch`` may put a launcher before the worker (torchrun:
``python -m torch.distributed.run ... -m <worker> --job DIR``); the record then keeps the
launcher's pid, and cancel stops it with every process it started. ``on_finished`` lets
the submitting process install a result that only it may write (it holds the knowledge
base); it runs once per job, from ``poll``.
"""
from __future__ import annotations

import fcntl
import json
import logging
import os
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable
from contextlib import contextmanager
from dataclasses import dataclass, field, fields, replace
from pathlib import Path

from common.errors import DocentError
from common.processes import launched_me, pid_alive, stop_tree

log = logging.getLogger(__name__)

FORMAT_VERSION = 1
ACTIVE = ("queued", "running")
RESUMABLE = ("interrupted", "failed", "cancelled")
POLL_SECONDS = 2.0
RECORD = "job.json"
METRICS = "metrics.jsonl"
LOG = "train.log"


class JobError(DocentError):
    """A job that does not exist or cannot do what was asked; the message says why."""


@dataclass(frozen=True)
class TaskRecord:
    """A job of any kind but fine-tuning: ``params`` are its inputs, ``result`` what it
    produced; ``progress`` is the worker's last metrics line (stage, done, total,
    message)."""

    id: str
    kind: str
    target: str  # what it works on, e.g. a knowledge base's name
    params: dict = field(default_factory=dict)
    status: str = "queued"
    created: float = 0.0
    started: float = 0.0
    ended: float = 0.0
    pid: int = 0
    error: str = ""
    resume: bool = False
    attempts: int = 0
    installed: bool = False  # ``on_finished`` ran
    result: dict = field(default_factory=dict)
    progress: dict = field(default_factory=dict, compare=False)
    path: Path = field(default=Path("."), compare=False)
    format_version: int = FORMAT_VERSION

    def to_json(self) -> dict:
        return {f.name: getattr(self, f.name) for f in fields(self)
                if f.name not in ("progress", "path")}

    @property
    def active(self) -> bool:
        return self.status in ACTIVE

    def describe(self) -> str:
        """One line for people: ``reranker training: training 12/150 (loss 0.41), 3 min``."""
        p = self.progress
        minutes = ((self.ended or time.time()) - (self.started or self.created or time.time())) / 60
        if self.status == "failed" or self.status == "interrupted":
            return f"{self.kind} {self.status}: {self.error}"
        if self.status == "succeeded":
            return f"{self.kind} finished in {minutes:.1f} min. {p.get('message', '')}".rstrip()
        if self.status == "cancelled":
            return f"{self.kind} cancelled."
        if self.status == "queued":
            return f"{self.kind}: queued."
        count = f" {p['done']}/{p['total']}" if p.get("total") else ""
        note = f" ({p['message']})" if p.get("message") else ""
        return f"{self.kind}: {p.get('stage', 'starting')}{count}{note}, {minutes:.1f} min so far"


@dataclass(frozen=True)
class JobKind:
    worker: str  # module run as ``python -m <worker> --job DIR``
    record: type = TaskRecord
    lane: str = "cpu"
    on_finished: Callable | None = None  # (record) -> None, in the submitting process
    # (record) -> the interpreter's arguments before ``-m <worker>`` (e.g. torchrun's)
    launch: Callable | None = None


# --- records ---------------------------------------------------------------------------
@contextmanager
def _locked(job_dir: Path):
    with (job_dir / ".lock").open("a") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def read_record(job_dir: Path, record_type: type = TaskRecord):
    path = job_dir / RECORD
    if not path.is_file():
        raise JobError(f"No job {job_dir.name!r}.")
    data = json.loads(path.read_text(encoding="utf-8"))
    known = {f.name for f in fields(record_type)}
    record = record_type(**{k: v for k, v in data.items() if k in known})
    return replace(record, progress=last_metrics(job_dir), path=job_dir)


def record_kind(job_dir: Path) -> str:
    """The kind written in a record; records from before kinds existed are fine-tuning."""
    data = json.loads((job_dir / RECORD).read_text(encoding="utf-8"))
    return data.get("kind") or "finetune"


def write_record(job_dir: Path, record) -> None:
    tmp = job_dir / (RECORD + ".tmp")
    tmp.write_text(json.dumps(record.to_json(), indent=2, ensure_ascii=False), encoding="utf-8")
    tmp.replace(job_dir / RECORD)


def update_record(job_dir: Path, record_type: type = TaskRecord, **changes):
    """Read-modify-write the record under a file lock (the app and the worker both write)."""
    with _locked(job_dir):
        record = replace(read_record(job_dir, record_type), **changes)
        write_record(job_dir, record)
    return record


def append_metrics(job_dir: Path, line: dict) -> None:
    """One progress line (the worker calls this; readers take the last whole line)."""
    with (job_dir / METRICS).open("a", encoding="utf-8") as f:
        f.write(json.dumps(line, ensure_ascii=False) + "\n")


def last_metrics(job_dir: Path) -> dict:
    path = job_dir / METRICS
    if not path.is_file():
        return {}
    lines = [x for x in path.read_text(encoding="utf-8").splitlines() if x.strip()]
    try:
        return json.loads(lines[-1]) if lines else {}
    except ValueError:  # a line cut by a kill
        return json.loads(lines[-2]) if len(lines) > 1 else {}


def metrics(job_dir: Path) -> list[dict]:
    """Every progress line (e.g. the loss curve)."""
    path = job_dir / METRICS
    out = []
    if path.is_file():
        for line in path.read_text(encoding="utf-8").splitlines():
            try:
                out.append(json.loads(line))
            except ValueError:
                continue
    return out


def finish(job_dir: Path, record_type: type = TaskRecord, **changes) -> None:
    """The worker writes the end of its job, unless the user cancelled it meanwhile."""
    ended = time.time()
    _unless_cancelled(job_dir, record_type, lambda record: {"ended": ended, **changes})


def start(job_dir: Path, record_type: type = TaskRecord, **changes) -> bool:
    """The worker marks its job running; False when it was cancelled meanwhile (the
    worker then stops without working). The pid stays the one the queue started when that
    is this process or the launcher above it (torchrun): cancel signals that one."""
    def running(record) -> dict:
        pid = record.pid if launched_me(record.pid) else os.getpid()
        return {"status": "running", "pid": pid, **changes}

    return _unless_cancelled(job_dir, record_type, running)


def _unless_cancelled(job_dir: Path, record_type: type, changes: Callable) -> bool:
    """Write ``changes(record)`` (a dict of fields) unless the job was cancelled."""
    with _locked(job_dir):
        record = read_record(job_dir, record_type)
        if record.status == "cancelled":
            return False
        write_record(job_dir, replace(record, **changes(record)))
    return True


# --- the queue -------------------------------------------------------------------------
class JobQueue:
    """Jobs under ``root``, of the ``kinds`` given; one running job per lane. ``poll()``
    advances the queue; a watcher thread polls while jobs are active, and every read
    polls too."""

    def __init__(self, root: Path, kinds: dict[str, JobKind], python: str = sys.executable,
                 env: dict | None = None):
        self.root = Path(root)
        self.kinds = dict(kinds)
        self.python = python
        self.env = env
        self._procs: dict[str, subprocess.Popen] = {}
        self._lock = threading.RLock()
        self._watcher: threading.Thread | None = None
        self._installing = threading.Lock()
        self.poll()
        if any(self._pending(r) for r in self._records()):
            self._watch()  # work left by an earlier run: follow it and install its results

    # --- reading ---
    def list(self, kind: str | None = None) -> list:
        self.poll()
        return [r for r in self._records() if kind is None or r.kind == kind]

    def latest(self, kind: str, target: str):
        """The newest job of ``kind`` on ``target``, or None."""
        return next((r for r in self.list(kind) if getattr(r, "target", "") == target), None)

    def get(self, job_id: str):
        self.poll()
        return self._read(self._dir(job_id))

    def log(self, job_id: str, tail: int = 20_000) -> str:
        path = self._dir(job_id) / LOG
        if not path.is_file():
            return ""
        with path.open("rb") as f:
            f.seek(max(0, path.stat().st_size - tail))
            return f.read().decode("utf-8", errors="replace")

    def wait(self, job_id: str, timeout: float | None = None, interval: float = 1.0):
        deadline = None if timeout is None else time.time() + timeout
        while True:
            record = self.get(job_id)
            if record.status not in ACTIVE:
                return record
            if deadline is not None and time.time() > deadline:
                raise TimeoutError(f"Job {job_id} still {record.status} after {timeout} s.")
            time.sleep(interval)

    def _records(self) -> list:
        if not self.root.is_dir():
            return []
        out = []
        for p in self.root.iterdir():
            if (p / RECORD).is_file() and record_kind(p) in self.kinds:
                out.append(self._read(p))
        return sorted(out, key=lambda r: r.created, reverse=True)

    def _read(self, folder: Path):
        return read_record(folder, self.kinds[record_kind(folder)].record)

    def _dir(self, job_id: str) -> Path:
        folder = self.root / job_id
        if "/" in job_id or ".." in job_id or not (folder / RECORD).is_file() \
                or record_kind(folder) not in self.kinds:
            raise JobError(f"No job {job_id!r}.")
        return folder

    # --- changing ---
    def new_folder(self, files: dict[str, str] | None = None) -> tuple[str, Path]:
        """A new job's id and folder, with ``files`` (name -> text: inputs the worker
        reads) written before the record exists."""
        job_id = time.strftime("%Y%m%d-%H%M%S-") + uuid.uuid4().hex[:6]
        folder = self.root / job_id
        folder.mkdir(parents=True)
        for name, text in (files or {}).items():
            (folder / name).write_text(text, encoding="utf-8")
        return job_id, folder

    def submit_record(self, record):
        """Queue ``record`` (its ``path`` made by ``new_folder``)."""
        if record.kind not in self.kinds:
            raise JobError(f"Unknown kind of job {record.kind!r}.")
        write_record(record.path, record)
        self.poll()
        self._watch()
        return self._read(record.path)

    def submit_task(self, kind: str, target: str, params: dict,
                    files: dict[str, str] | None = None) -> TaskRecord:
        """Queue a ``TaskRecord`` job."""
        job_id, folder = self.new_folder(files)
        return self.submit_record(TaskRecord(job_id, kind, target, dict(params),
                                             created=time.time(), path=folder))

    def cancel(self, job_id: str):
        folder = self._dir(job_id)
        with self._lock:
            record = self._read(folder)
            if record.status not in ACTIVE:
                raise JobError(f"Job {job_id} is {record.status}; only queued or running jobs "
                               "can be cancelled.")
            self._update(folder, status="cancelled", ended=time.time(),
                         error="cancelled by the user")
            if record.status == "running":
                self._stop(job_id, record.pid)
        self.poll()
        return self._read(folder)

    def resume(self, job_id: str):
        """Queue an interrupted, failed or cancelled job again; its worker continues from
        what it kept (checkpoints, questions already written)."""
        folder = self._dir(job_id)
        record = self._read(folder)
        if record.status not in RESUMABLE:
            raise JobError(f"Job {job_id} is {record.status}; only interrupted, failed or "
                           "cancelled jobs can be resumed.")
        again = {"installed": False} if hasattr(record, "installed") else {}
        self._update(folder, status="queued", resume=True, error="", ended=0.0, pid=0, **again)
        self.poll()
        self._watch()
        return self._read(folder)

    def recover(self) -> list[str]:
        """Running jobs whose worker is gone become "interrupted" (resumable)."""
        changed = []
        for record in self._records():
            worker = self.kinds[record.kind].worker
            if record.status == "running" and record.id not in self._procs \
                    and not pid_alive(record.pid, worker):
                self._update(record.path, status="interrupted", ended=time.time(),
                             error="the worker stopped unexpectedly (crash, kill or restart); "
                                   "resume it to continue")
                changed.append(record.id)
        return changed

    def poll(self) -> None:
        """Reap finished workers and start the oldest queued job of each lane that has
        none running."""
        with self._lock:
            for job_id, proc in list(self._procs.items()):
                if proc.poll() is not None:
                    del self._procs[job_id]
                    self._reaped(job_id, proc.returncode)
            self.recover()
            records = self._records()
            busy = {self.kinds[r.kind].lane for r in records if r.status == "running"}
            for record in sorted((r for r in records if r.status == "queued"),
                                 key=lambda r: r.created):
                lane = self.kinds[record.kind].lane
                if lane not in busy:
                    self._start(record)
                    busy.add(lane)

    def close(self) -> None:
        """Forget the watcher (workers keep running; a new queue finds them by pid)."""
        self._watcher = None

    # --- internals ---
    def _update(self, folder: Path, **changes):
        return update_record(folder, self.kinds[record_kind(folder)].record, **changes)

    def install_finished(self) -> list[str]:
        """Run ``on_finished`` for each succeeded job not yet installed, once each, outside
        the queue's lock (an install may wait for a knowledge base's writes). The watcher
        thread calls this; the ids installed."""
        done = []
        with self._installing:
            for record in self._records():
                if record.status != "succeeded" or getattr(record, "installed", True):
                    continue
                hook = self.kinds[record.kind].on_finished
                if hook is None:
                    continue
                try:
                    hook(record)
                except Exception as exc:  # noqa: BLE001 - the job fails with the reason
                    log.exception("Installing the result of job %s failed", record.id)
                    self._update(record.path, status="failed", installed=True,
                                 error=f"its result could not be installed: {exc}")
                else:
                    self._update(record.path, installed=True)
                    done.append(record.id)
        return done

    def _pending(self, record) -> bool:
        """Active, or succeeded with a result still to install."""
        return record.status in ACTIVE or (
            record.status == "succeeded" and not getattr(record, "installed", True)
            and self.kinds[record.kind].on_finished is not None)

    def _start(self, record) -> None:
        folder = record.path
        kind = self.kinds[record.kind]
        logf = (folder / LOG).open("ab")
        launch = kind.launch(record) if kind.launch else []
        cmd = [self.python, *launch, "-m", kind.worker, "--job", str(folder)]
        env = {**os.environ, **(self.env or {})}
        root = str(Path(__file__).resolve().parent.parent)
        env["PYTHONPATH"] = os.pathsep.join(p for p in (root, env.get("PYTHONPATH", "")) if p)
        proc = subprocess.Popen(cmd, stdout=logf, stderr=subprocess.STDOUT, cwd=root, env=env,
                                start_new_session=True)
        logf.close()
        self._update(folder, status="running", pid=proc.pid, started=time.time(),
                     attempts=record.attempts + 1)
        self._procs[record.id] = proc
        log.info("Started %s job %s (pid %d)", record.kind, record.id, proc.pid)

    def _reaped(self, job_id: str, code: int) -> None:
        folder = self.root / job_id
        if self._read(folder).status == "running":  # the worker died without writing its end
            self._update(folder, status="interrupted", ended=time.time(),
                         error=f"the worker exited with code {code} without finishing; "
                               "see the log, then resume")

    def _stop(self, job_id: str, pid: int) -> None:
        """Stop a worker and whatever it started (torchrun's ranks)."""
        def ended() -> bool:
            proc = self._procs.get(job_id)
            if proc is None:
                return not pid_alive(pid)
            if proc.poll() is None:
                return False
            del self._procs[job_id]
            return True

        stop_tree(pid, ended)

    def _watch(self) -> None:
        if self._watcher is not None and self._watcher.is_alive():
            return
        self._watcher = threading.Thread(target=self._watch_loop, name="jobs", daemon=True)
        self._watcher.start()

    def _watch_loop(self) -> None:
        me = threading.current_thread()
        while self._watcher is me:
            try:
                self.poll()
                self.install_finished()
                if not any(self._pending(r) for r in self._records()):
                    break
            except Exception:  # logged; the next poll retries
                log.exception("Polling jobs failed")
            time.sleep(POLL_SECONDS)


def worker_main(run: Callable[[Path], int], prog: str, argv: list[str] | None = None) -> int:
    """The entry point each worker module shares: offline, logging to the job's log, then
    ``run(job_dir)``'s exit code."""
    import argparse

    from common.offline import go_offline

    go_offline()
    p = argparse.ArgumentParser(prog=prog)
    p.add_argument("--job", required=True, type=Path, help="the job's folder (job.json)")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    return run(args.job.resolve())
