"""Long work on a knowledge base's index, as jobs of the one job system run by worker
processes (``assistant.background``): training its reranker and re-embedding it."""
from __future__ import annotations

import logging
from collections.abc import Sequence

from assistant.background import (
    REEMBED, TRAIN_RERANKER, submit_reembed, submit_reranker_training,
)
from assistant.language import question_language
from assistant.services.bases import KnowledgeBases
from assistant.settings import Settings
from common.jobs import JobQueue, TaskRecord
from finetune.reranker import RerankerTraining
from knowledge.embedders import EmbedderPool, embedder_available
from knowledge.errors import KnowledgeError
from knowledge.language import MULTILINGUAL, multilingual

log = logging.getLogger(__name__)

__all__ = ["IndexJobs", "REEMBED", "TRAIN_RERANKER"]


class IndexJobs:
    def __init__(self, bases: KnowledgeBases, embedders: EmbedderPool, queue: JobQueue,
                 settings: Settings):
        self._bases, self._embedders, self._queue = bases, embedders, queue
        self._settings = settings  # handed to the worker: it builds its own models from them

    def latest(self, kind: str, kb: str | None = None) -> TaskRecord | None:
        """The last job of ``kind`` (TRAIN_RERANKER or REEMBED) on ``kb``, if any."""
        return self._queue.latest(kind, self._bases.name(kb))

    def get(self, job_id: str) -> TaskRecord:
        return self._queue.get(job_id)

    def train_reranker(self, kb: str | None = None, questions: int | None = None) -> TaskRecord:
        """Queue training ``kb``'s reranker in a worker process; poll ``get`` or ``latest``."""
        base = self._bases.get(kb)
        cfg = RerankerTraining(questions=questions or self._settings.retrieval.reranker_questions)
        return submit_reranker_training(self._queue, self._settings, base, cfg)

    def reembed(self, kb: str | None = None, embedder: str | None = None) -> TaskRecord:
        """Queue re-embedding ``kb`` with ``embedder`` (default: the multilingual one, for
        an English-only knowledge base that holds or is asked in another language); it
        stays searchable with its old vectors until the new ones are installed."""
        base = self._bases.get(kb)
        if base.vectors is None:
            raise KnowledgeError(f"Knowledge base {base.name!r} is empty: there is nothing "
                                 "to re-embed (its first document chooses the embedder).")
        if embedder is None and multilingual(base.manifest.embedder):
            raise KnowledgeError(f"Knowledge base {base.name!r} already uses an embedder that "
                                 "reads every language (" + base.manifest.embedder + ").")
        target = self._embedders.get(embedder or MULTILINGUAL).name  # loads it: fails early
        if target == base.manifest.embedder:
            raise KnowledgeError(f"Knowledge base {base.name!r} already uses {target}.")
        return submit_reembed(self._queue, self._settings, base, target)

    def reembed_for(self, question: str, names: Sequence[str]) -> list[str]:
        """Start moving the knowledge bases among ``names`` to an embedder that serves
        ``question`` better, in the background (each stays searchable meanwhile): an
        English-only one asked in another language, or one asked in another language
        than its documents' while ``embedder.across`` is assembled. The names of those
        being re-embedded."""
        asked = question_language(question).split("-")[0]
        busy = []
        for name in names:
            base = self._bases.library.get(name)
            target = None if base.vectors is None else self._better_for(base.manifest, asked)
            if target is None:
                continue
            job = self._queue.latest(REEMBED, name)
            if job is not None and not job.active and job.status != "succeeded" \
                    and job.params.get("embedder") == target:
                continue  # it failed or was cancelled: not started again by every question
            if job is None or not job.active:
                submit_reembed(self._queue, self._settings, base, target)
                log.info("Knowledge base %s (%s) is asked in %s: re-embedding it with %s",
                         name, base.manifest.embedder, asked, target)
            busy.append(name)
        return busy

    def _better_for(self, manifest, asked: str) -> str | None:
        across = self._settings.embedder.across
        if not embedder_available(across, self._settings.paths.models_dir):
            across = ""
        if not multilingual(manifest.embedder):
            return None if asked == "en" else (across or MULTILINGUAL)
        own = (manifest.language or "").split("-")[0]
        if across and manifest.embedder != across and own and asked != own:
            return across
        return None
