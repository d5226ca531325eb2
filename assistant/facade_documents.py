"""The facade's document tasks and citation view, as a mixin of ``Assistant`` (kept in
its own module so that assistant/core.py stays readable)."""
from __future__ import annotations

from collections.abc import Generator, Sequence

from assistant import tasks
from assistant.citation_view import CitationView, citation_view
from knowledge.errors import KnowledgeError


class DocumentsMixin:
    # --- document tasks ---------------------------------------------------------
    # summarize / exam_questions / advice check their input at once (an unknown document
    # raises KnowledgeError here) and return a generator: it yields ``TaskProgress``
    # events and returns the result (``StopIteration.value``, like ``ingest``);
    # ``assistant.tasks.run_task(gen, on_progress)`` drives one and returns the result.
    # The output is in the documents' language (Traditional Chinese stays Traditional).
    def resolve_documents(self, refs: Sequence[str], kb: str | None = None) -> list[str]:
        """Document ids for ``refs``: ids or file names as ``documents(kb)`` lists them."""
        base = self.library.get(kb or self.settings.default_kb)
        ids = {d.doc_id for d in base.documents()}
        out: list[str] = []
        for ref in refs:
            record = None if ref in ids else base.find_document(ref)
            if ref not in ids and record is None:
                raise KnowledgeError(f"No document {ref!r} in knowledge base {base.name!r}: "
                                     "give a file name or id as `kb docs` lists them.")
            out.append(ref if record is None else record.doc_id)
        return list(dict.fromkeys(out))

    def summarize(self, doc_ids: Sequence[str], kb: str | None = None
                  ) -> Generator[tasks.TaskProgress, None, tasks.Summary]:
        """Map-reduce summary of the documents, cited by file and page."""
        name, chunks = self._task_chunks(doc_ids, kb)
        cfg = self.settings.llm
        return tasks.summarize(self.llm, chunks, tasks.document_language(chunks),
                               cfg.max_tokens, cfg.temperature, kb=name)

    def exam_questions(self, doc_ids: Sequence[str], kb: str | None = None, n: int = 5
                       ) -> Generator[tasks.TaskProgress, None, list[tasks.ExamQuestion]]:
        """Up to ``n`` multiple-choice questions with answer key and source page each;
        export with ``tasks.exam_to_json`` / ``tasks.exam_to_csv``."""
        if not 1 <= n <= 100:
            raise ValueError("Ask for 1 to 100 exam questions.")
        _, chunks = self._task_chunks(doc_ids, kb)
        cfg = self.settings.llm
        return tasks.exam_questions(self.llm, chunks, n, tasks.document_language(chunks),
                                    cfg.max_tokens, cfg.temperature)

    def advice(self, doc_ids: Sequence[str], kb: str | None = None, focus: str = ""
               ) -> Generator[tasks.TaskProgress, None, tasks.Advice]:
        """Recommendations from the documents, each citing its source; with ``focus``
        the passages that match it best (BM25 over the selection) are used first."""
        name, chunks = self._task_chunks(doc_ids, kb)
        cfg = self.settings.llm
        return tasks.advice(self.llm, chunks, focus, tasks.document_language(chunks),
                            cfg.max_tokens, cfg.temperature, kb=name)

    def _task_chunks(self, doc_ids: Sequence[str], kb: str | None) -> tuple[str, list]:
        ids = [doc_ids] if isinstance(doc_ids, str) else list(dict.fromkeys(doc_ids))
        if not ids:
            raise ValueError("Choose at least one document.")
        base = self.library.get(kb or self.settings.default_kb)
        return base.name, [c for doc_id in ids for c in base.document_chunks(doc_id)]
    # --- end document tasks -------------------------------------------------------

    # --- citation view ------------------------------------------------------------
    def citation_view(self, chunk_id: str, kb: str, quote: str = "") -> CitationView:
        """The cited passage of ``kb`` with the span of ``quote`` in it and, for a PDF,
        its page rendered to PNG (cached in the knowledge base's folder). An unknown
        chunk (its document deleted or replaced) raises ``KnowledgeError``."""
        base = self.library.get(kb or self.settings.default_kb)
        return citation_view(base, chunk_id, quote)
    # --- end citation view --------------------------------------------------------
