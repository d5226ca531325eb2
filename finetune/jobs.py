"""Fine-tuning jobs in the job system (``common.jobs``): the record of a training run
and the queue call that submits one.

A fine-tuning job's folder also holds ``checkpoints/``; ``metrics.jsonl`` has one line
per optimiser step (step, total, loss, lr, elapsed, eta), so a resumed job continues
from its last checkpoint (``python -m finetune.worker --job DIR``). The queue starts that
worker as one process or under torchrun, as ``training.launcher`` says (``finetune.launch``
decides at submission; the record keeps ``launcher`` and ``processes``).
"""
from __future__ import annotations

import logging
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field, fields
from pathlib import Path

from common.jobs import (  # noqa: F401  (the job system's names, for fine-tuning's callers)
    ACTIVE, RESUMABLE, JobError, JobKind, last_metrics, metrics, read_record, update_record,
    write_record,
)
from common.jobs import JobQueue as _JobQueue
from finetune.launch import Launch, choose_launch, visible_gpus

log = logging.getLogger(__name__)

FORMAT_VERSION = 1
KIND = "finetune"
WORKER = "finetune.worker"


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
    launcher: str = "python"  # how the worker runs: "python" or "torchrun"
    processes: int = 1  # the world size under torchrun
    launch_note: str = ""  # why it runs otherwise than the settings asked
    progress: dict = field(default_factory=dict, compare=False)  # last metrics line (read)
    path: Path = field(default=Path("."), compare=False)
    format_version: int = FORMAT_VERSION
    kind: str = KIND

    def to_json(self) -> dict:
        skip = {"progress", "path"}
        return {f.name: getattr(self, f.name) for f in fields(self) if f.name not in skip}

    @property
    def target(self) -> str:
        return self.kb

    @property
    def active(self) -> bool:
        return self.status in ACTIVE

    @property
    def launch(self) -> Launch:
        return Launch(self.launcher, self.processes, self.launch_note)

    def describe(self) -> str:
        p = self.progress
        on = f" on {self.processes} processes ({self.launcher})" if self.processes > 1 else ""
        if self.status == "running" and p:
            return (f"{self.id} running{on}: step {p['step']}/{p['total']}, "
                    f"loss {p['loss']:.4f}, elapsed {p['elapsed']:.0f} s, ETA {p['eta']:.0f} s")
        extra = f" ({self.error.splitlines()[0]})" if self.error else ""
        adapter = f" -> adapter {self.adapter_id}" if self.adapter_id else ""
        return f"{self.id} {self.status}{on}{adapter}{extra}"


FINETUNE = JobKind(WORKER, JobRecord, lane="train",
                   launch=lambda record: record.launch.python_args())


def read_job(job_dir: Path) -> JobRecord:
    return read_record(job_dir, JobRecord)


def write_job(job_dir: Path, record: JobRecord) -> None:
    write_record(job_dir, record)


def update_job(job_dir: Path, **changes) -> JobRecord:
    """Read-modify-write ``job.json`` under a file lock (the app and the worker both write)."""
    return update_record(job_dir, JobRecord, **changes)


class JobQueue(_JobQueue):
    """The job queue with fine-tuning among its kinds (``kinds`` adds the others).
    ``launcher`` and ``processes`` are the settings ``training.launcher`` and
    ``training.processes`` (see ``finetune.launch``); ``gpus`` counts the visible GPUs."""

    def __init__(self, root: Path, python: str = sys.executable, env: dict | None = None,
                 kinds: dict[str, JobKind] | None = None, launcher: str = "python",
                 processes: int = 0, gpus: Callable[[], int] = visible_gpus):
        self.launcher, self.processes, self._gpus = launcher, processes, gpus
        super().__init__(root, {KIND: FINETUNE, **(kinds or {})}, python, env)

    def choose_launch(self, method: str) -> Launch:
        """How a ``method`` job would start here; ``JobError`` when the settings cannot
        be met."""
        launch = choose_launch(self.launcher, self.processes, method, self._gpus())
        if launch.note:
            log.info("A %s job runs as %s: %s", method, launch.launcher, launch.note)
        return launch

    def submit(self, method: str, spec: dict, base_model: str, dataset_id: str, *,
               name: str = "", data_dir: Path, models_dir: Path, kb: str = "",
               estimate: dict | None = None, files: dict[str, str] | None = None
               ) -> JobRecord:
        """Queue a fine-tuning job. ``files``: name -> text written into the job's folder
        before the record exists (inputs the worker reads, e.g. the RAG evaluation
        prompts)."""
        launch = self.choose_launch(method)
        job_id, folder = self.new_folder(files)
        record = JobRecord(job_id, method, dict(spec), base_model, dataset_id, "queued",
                           name, str(data_dir), str(models_dir), kb, time.time(),
                           estimate=dict(estimate or {}), launcher=launch.launcher,
                           processes=launch.processes, launch_note=launch.note, path=folder)
        return self.submit_record(record)

    def list(self, kind: str | None = KIND) -> list:
        """Fine-tuning jobs, newest first (``kind=None``: every kind)."""
        return super().list(kind)
