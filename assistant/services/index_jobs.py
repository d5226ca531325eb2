"""Background work on a knowledge base's index: training its reranker and re-embedding
it. The only users of the thread jobs (``assistant.jobs.Jobs``) are the methods below."""
from __future__ import annotations

import logging
from collections.abc import Callable, Sequence

from assistant.jobs import Jobs, JobStatus, Progress
from assistant.language import question_language
from assistant.llm import LLM
from assistant.services.bases import KnowledgeBases
from assistant.settings import RetrievalSettings
from finetune.reranker import RerankerTraining, train_reranker
from knowledge.embedders import EmbedderPool
from knowledge.errors import KnowledgeError
from knowledge.language import MULTILINGUAL, multilingual
from knowledge.rerank import reranker_dir

log = logging.getLogger(__name__)

TRAIN_RERANKER = "reranker training"
REEMBED = "re-embedding"


class IndexJobs:
    def __init__(self, bases: KnowledgeBases, embedders: EmbedderPool, jobs: Jobs,
                 llm: Callable[[], LLM], retrieval: RetrievalSettings):
        self._bases, self._embedders, self._jobs = bases, embedders, jobs
        self._llm, self._retrieval = llm, retrieval

    def latest(self, kind: str, kb: str | None = None) -> JobStatus | None:
        """The last job of ``kind`` (TRAIN_RERANKER or REEMBED) on ``kb``, if any."""
        return self._jobs.latest(kind, self._bases.name(kb))

    def train_reranker(self, kb: str | None = None, questions: int | None = None) -> JobStatus:
        """Start training ``kb``'s reranker in the background; poll ``latest``."""
        base = self._bases.get(kb)
        cfg = RerankerTraining(questions=questions or self._retrieval.reranker_questions)
        return self._jobs.start(TRAIN_RERANKER, base.name,
                                lambda: train_reranker(base, self._llm(), cfg),
                                record=reranker_dir(base.root) / "job.json")

    def reembed(self, kb: str | None = None, embedder: str | None = None) -> JobStatus:
        """Start re-embedding ``kb`` in the background with ``embedder`` (default: the
        multilingual one, for an English-only knowledge base that holds or is asked in
        another language); it stays searchable with its old vectors until the new ones are
        all in, then switches."""
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

        def work():
            for done, total in base.reembed(target):
                yield Progress("re-embedding", done, total, target)
            return {"embedder": base.manifest.embedder}

        return self._jobs.start(REEMBED, base.name, work, record=base.root / "reembed-job.json")

    def reembed_for(self, question: str, names: Sequence[str]) -> list[str]:
        """Start re-embedding the English-only knowledge bases among ``names`` when the
        question is in another language; the names of those being re-embedded."""
        if question_language(question) == "en":
            return []
        busy = []
        for name in names:
            base = self._bases.library.get(name)
            if base.vectors is None or multilingual(base.manifest.embedder):
                continue
            job = self._jobs.latest(REEMBED, name)
            if job is None or not job.running:
                self.reembed(name)
                log.info("Knowledge base %s is asked in another language than English: "
                         "re-embedding it with the multilingual embedder", name)
            busy.append(name)
        return busy
