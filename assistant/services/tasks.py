"""Document tasks: summaries, exam questions and advice from chosen documents.

Each method checks its input at once (an unknown document raises ``KnowledgeError``
here) and returns a generator: it yields ``TaskProgress`` events and returns the result
(``StopIteration.value``, like ingestion); ``assistant.tasks.run_task(gen, on_progress)``
drives one and returns the result. The output is in the documents' language
(Traditional Chinese stays Traditional)."""
from __future__ import annotations

from collections.abc import Callable, Generator, Sequence

from assistant import tasks
from assistant.llm import LLM
from assistant.services.bases import KnowledgeBases
from assistant.settings import LLMSettings


class Tasks:
    def __init__(self, bases: KnowledgeBases, llm: Callable[[], LLM], settings: LLMSettings):
        self._bases, self._llm, self._cfg = bases, llm, settings

    def summarize(self, doc_ids: Sequence[str], kb: str | None = None
                  ) -> Generator[tasks.TaskProgress, None, tasks.Summary]:
        """Map-reduce summary of the documents, cited by file and page."""
        name, chunks = self._chunks(doc_ids, kb)
        return tasks.summarize(self._llm(), chunks, tasks.document_language(chunks),
                               self._cfg.max_tokens, self._cfg.temperature, kb=name)

    def exam_questions(self, doc_ids: Sequence[str], kb: str | None = None, n: int = 5
                       ) -> Generator[tasks.TaskProgress, None, list[tasks.ExamQuestion]]:
        """Up to ``n`` multiple-choice questions with answer key and source page each;
        export with ``tasks.exam_to_json`` / ``tasks.exam_to_csv``."""
        if not 1 <= n <= 100:
            raise ValueError("Ask for 1 to 100 exam questions.")
        _, chunks = self._chunks(doc_ids, kb)
        return tasks.exam_questions(self._llm(), chunks, n, tasks.document_language(chunks),
                                    self._cfg.max_tokens, self._cfg.temperature)

    def advice(self, doc_ids: Sequence[str], kb: str | None = None, focus: str = ""
               ) -> Generator[tasks.TaskProgress, None, tasks.Advice]:
        """Recommendations from the documents, each citing its source; with ``focus``
        the passages that match it best (BM25 over the selection) are used first."""
        name, chunks = self._chunks(doc_ids, kb)
        return tasks.advice(self._llm(), chunks, focus, tasks.document_language(chunks),
                            self._cfg.max_tokens, self._cfg.temperature, kb=name)

    def _chunks(self, doc_ids: Sequence[str], kb: str | None) -> tuple[str, list]:
        ids = [doc_ids] if isinstance(doc_ids, str) else list(dict.fromkeys(doc_ids))
        if not ids:
            raise ValueError("Choose at least one document.")
        base = self._bases.get(kb)
        return base.name, [c for doc_id in ids for c in base.document_chunks(doc_id)]
