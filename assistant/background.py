"""The long work of the services as jobs (``common.jobs``): fine-tuning, training a
knowledge base's reranker, and re-embedding a knowledge base with another embedder.

Each runs in a worker process (``finetune.worker``, ``assistant.worker``), so a crash or
a kill costs the job, not the app, and its record survives a restart. A worker cannot
open a knowledge base (one process holds it), so it gets a snapshot of its passages
(``knowledge.snapshot``) in the job's folder:

* reranker training trains into the job's folder (with the questions the knowledge base
  already has, so they are reused); the process holding the knowledge base moves the
  reranker in as its next version when the job has succeeded (``on_finished``);
* re-embedding writes the new vectors into the job's folder, and the process holding
  the knowledge base installs them the same way: passages added since the snapshot are
  embedded then, removed ones skipped.
A knowledge base deleted or renamed meanwhile makes the install fail with the reason;
nothing is written into its old folder.
"""
from __future__ import annotations

import json
import logging
import os
import time
from dataclasses import asdict
from pathlib import Path

import numpy as np

from assistant.settings import Settings
from common.jobs import JobKind, JobQueue, TaskRecord
from finetune.jobs import JobQueue as FinetuneJobQueue
from finetune.reranker import RerankerTraining, install_reranker
from knowledge.library import Library
from knowledge.rerank import reranker_dir
from knowledge.snapshot import write_snapshot

log = logging.getLogger(__name__)

TRAIN_RERANKER = "reranker training"
REEMBED = "re-embedding"
WORKER = "assistant.worker"
SETTINGS_FILE = "settings.json"
NEW_VECTORS = "new_vectors.npy"
NEW_IDS = "new_ids.json"
TRAINED = "reranker"  # in a training job's folder: what it trained
EVALUATION = "real-task evaluation"
EVAL_QUESTIONS = "questions.jsonl"  # in an evaluation job's folder: the question set
EVAL_TOKEN = "token"  # and the app's internal token for its requests (mode 0600)


def job_queue(settings: Settings, library: Library) -> JobQueue:
    """The one queue of every kind of job, under ``<data dir>/jobs``. Fine-tuning and
    reranker training share a lane (both train on every core); re-embedding runs beside
    them. Fine-tuning workers start as ``training.launcher`` and ``processes`` say."""
    kinds = {
        TRAIN_RERANKER: JobKind(WORKER, TaskRecord, lane="train",
                                on_finished=lambda record: install_trained(library, record)),
        REEMBED: JobKind(WORKER, TaskRecord, lane="embed",
                         on_finished=lambda record: install_vectors(library, record)),
        # asks the app's own API: the model server is the app's, so no lane of its own
        EVALUATION: JobKind(WORKER, TaskRecord, lane="evaluate"),
    }
    root = settings.paths.data_dir / "jobs"
    earlier = settings.paths.data_dir / "finetune" / "jobs"  # where fine-tuning jobs were
    if earlier.is_dir() and not root.exists():
        earlier.rename(root)
    return FinetuneJobQueue(root, kinds=kinds, launcher=settings.training.launcher,
                            processes=settings.training.processes)


def submit_reranker_training(queue: JobQueue, settings: Settings, base, cfg: RerankerTraining
                             ) -> TaskRecord:
    """Queue training ``base``'s reranker (a snapshot with its vectors goes along)."""
    questions = reranker_dir(base.root) / "questions.jsonl"
    files = {f"{TRAINED}/questions.jsonl": questions.read_text(encoding="utf-8")
             } if questions.is_file() else {}
    return _submit(queue, settings, TRAIN_RERANKER, base, {"config": asdict(cfg)}, vectors=True,
                   files=files)


def submit_reembed(queue: JobQueue, settings: Settings, base, embedder: str) -> TaskRecord:
    """Queue re-embedding ``base`` with ``embedder``."""
    return _submit(queue, settings, REEMBED, base, {"embedder": embedder}, vectors=False)


def _submit(queue: JobQueue, settings: Settings, kind: str, base, params: dict,
            vectors: bool, files: dict[str, str] | None = None) -> TaskRecord:
    job_id, folder = queue.new_folder()
    for name, text in (files or {}).items():
        (folder / name).parent.mkdir(parents=True, exist_ok=True)
        (folder / name).write_text(text, encoding="utf-8")
    # readable by this user only: the settings may hold a remote server's API key
    fd = os.open(folder / SETTINGS_FILE, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        f.write(settings.model_dump_json())
    count = write_snapshot(base, folder / "snapshot", vectors=vectors)
    record = TaskRecord(job_id, kind, base.name, {**params, "passages": count},
                        created=time.time(), path=folder)
    return queue.submit_record(record)


def install_trained(library: Library, record: TaskRecord) -> None:
    """Move the reranker a training job made into ``record.target``."""
    made = install_reranker(record.path / TRAINED, library.get(record.target).root)
    log.info("Knowledge base %s: reranker v%d installed", record.target, made.version)


def install_vectors(library: Library, record: TaskRecord) -> None:
    """Switch ``record.target`` to the vectors a re-embedding job made."""
    base = library.get(record.target)
    ids = json.loads((record.path / NEW_IDS).read_text(encoding="utf-8"))
    vectors = np.load(record.path / NEW_VECTORS, allow_pickle=False)
    embedder = record.params["embedder"]
    if base.manifest.embedder == embedder:
        return
    done = base.install_vectors(embedder, dict(zip(ids, vectors)))
    log.info("Knowledge base %s now searches with %s (%d passages)", base.name, embedder, done)


def settings_of(job_dir: Path) -> Settings:
    return Settings.model_validate_json((job_dir / SETTINGS_FILE).read_text(encoding="utf-8"))
