"""``Assistant``: the one facade the UI, the CLI, the HTTP API and the tests call."""
from __future__ import annotations

import logging
import threading
import time
from collections.abc import Generator, Iterator, Sequence
from pathlib import Path

from assistant.condense import condense
from assistant.citations import MarkerFilter, build_citations, clean_markers
from assistant.jobs import Jobs, JobStatus
from assistant.llm import LLM, LlamaCppLLM
from assistant.models import resolve_gguf
from assistant.prompts import SYSTEM_PROMPT, build_messages, fit_sources
from assistant.settings import Settings
from assistant.types import Answer, AnswerDelta, Source
from ingest.chunking import ChunkingParams
from ingest.pipeline import IngestItem, folder_items, ingest_files, sync_folder
from ingest.types import IngestEvent, IngestReport
from knowledge.embedders import Embedder, EmbedderPool
from knowledge.gpl import RerankerTraining, current_reranker, reranker_dir, train_reranker
from knowledge.language import AUTO
from knowledge.library import Library
from knowledge.types import DocumentRecord, Hit

log = logging.getLogger(__name__)

TRAIN_RERANKER = "reranker training"


class Assistant:
    """Knowledge bases, ingestion and cited, streamed answers.

    ``llm`` and ``embedder`` may be injected (tests use scripted fakes); otherwise they
    are built from ``settings`` — the LLM lazily, on first use or ``warm_up()``.
    """

    def __init__(self, settings: Settings, llm: LLM | None = None,
                 embedder: Embedder | None = None):
        self.settings = settings
        self.paths = settings.paths
        self._llm = llm
        self._llm_lock = threading.Lock()
        self.embedders = (EmbedderPool.fixed(embedder) if embedder else
                          EmbedderPool(settings.embedder.model, settings.embedder.batch_size))
        self.chunking = ChunkingParams(settings.chunking.chunk_size, settings.chunking.chunk_overlap)
        self.library = Library(
            self.paths.kb_dir, self.embedders, self.chunking.chunk_size,
            self.chunking.chunk_overlap, settings.retrieval.config(),
        )
        self.library.get(settings.default_kb, create=True)
        self.jobs = Jobs()

    # --- models ---------------------------------------------------------------
    @property
    def llm(self) -> LLM:
        with self._llm_lock:
            if self._llm is None:
                cfg = self.settings.llm
                path = resolve_gguf(cfg.model, self.paths.models_dir)
                t0 = time.perf_counter()
                self._llm = LlamaCppLLM(path, cfg.n_ctx, cfg.n_threads, cfg.n_gpu_layers,
                                        cfg.seed, cfg.repeat_penalty)
                log.info("Loaded %s in %.1f s", path.name, time.perf_counter() - t0)
            return self._llm

    def warm_up(self) -> None:
        """Load the chat model now rather than on the first question."""
        _ = self.llm

    # --- knowledge bases ------------------------------------------------------
    def knowledge_bases(self) -> list[str]:
        return self.library.names()

    def create_knowledge_base(self, name: str, embedder: str | None = None) -> None:
        """``embedder``: "auto" (default: from the first document's language), an
        installed embedder's name, or a sentence-transformers folder."""
        self.library.create(name, embedder)

    def delete_knowledge_base(self, name: str) -> None:
        self.library.delete(name)

    def rename_knowledge_base(self, old: str, new: str) -> None:
        self.library.rename(old, new)

    def knowledge_base_status(self, kb: str | None = None) -> str:
        """Embedder, size and reranker of a knowledge base, in words (UI and CLI)."""
        base = self.library.get(kb or self.settings.default_kb)
        m = base.manifest
        embedder = (f"{m.embedder}" + (f" (chosen for {m.language} text)" if m.language else "")
                    if m.embedder != AUTO else "chosen from the language of the first document")
        lines = [f"**{base.name}**: {len(base.documents())} documents, {base.chunk_count()} "
                 f"chunks. Embedder: {embedder}.", "Reranker: " + self.reranker_status(kb)]
        job = self.jobs.latest(TRAIN_RERANKER, base.name)
        if job is not None:
            lines.append(job.describe())
        return "\n\n".join(lines)

    def reranker_status(self, kb: str | None = None) -> str:
        base = self.library.get(kb or self.settings.default_kb)
        choice = self.settings.retrieval.reranker
        record = current_reranker(base.root)
        if choice == "cross-encoder":
            return f"cross-encoder from {self.settings.retrieval.reranker_model}."
        if record is not None and choice in ("auto", "trained"):
            return (f"trained v{record.version} ({record.questions} generated questions, "
                    f"{record.created_at[:10]}); it reorders the top "
                    f"{self.settings.retrieval.rerank_top} hits together with the hybrid order.")
        why = ("none: answers use the hybrid (keyword + vector) order. No reranker that runs "
               "offline on this computer improved that order on the evaluation sets "
               "(benchmarks/retrieval.md), so none is the default.")
        if record is not None:
            return (why + f" This knowledge base has a trained reranker (v{record.version}); "
                    "set retrieval.reranker to 'trained' to use it.")
        return why + (" You can train one for this knowledge base and select it with "
                      "retrieval.reranker = 'trained'.")

    def train_reranker(self, kb: str | None = None, questions: int | None = None) -> JobStatus:
        """Start training ``kb``'s reranker in the background; poll ``jobs.get(id)``."""
        base = self.library.get(kb or self.settings.default_kb)
        cfg = RerankerTraining(questions=questions or self.settings.retrieval.reranker_questions)
        return self.jobs.start(TRAIN_RERANKER, base.name,
                               lambda: train_reranker(base, self.llm, cfg),
                               record=reranker_dir(base.root) / "job.json")

    def documents(self, kb: str | None = None) -> list[DocumentRecord]:
        return self.library.get(kb or self.settings.default_kb).documents()

    def delete_document(self, doc_id: str, kb: str | None = None) -> None:
        self.library.get(kb or self.settings.default_kb).delete_document(doc_id)

    def ingest(self, items: Sequence[IngestItem | Path | str], kb: str | None = None,
               password: str | None = None) -> Generator[IngestEvent, None, IngestReport]:
        """Progress events while ingesting files and folders; returns the report (see
        ``ingest.pipeline.drain``). ``password`` opens encrypted PDFs in this batch."""
        base = self.library.get(kb or self.settings.default_kb)
        return ingest_files(base, _expand(items, password), self.chunking, self._max_bytes())

    def sync_folder(self, folder: Path | str, kb: str | None = None
                    ) -> Generator[IngestEvent, None, IngestReport]:
        """Make ``kb`` match ``folder`` (add, replace changed, delete removed files)."""
        base = self.library.get(kb or self.settings.default_kb)
        return sync_folder(base, Path(folder).expanduser(), self.chunking, self._max_bytes())

    def _max_bytes(self) -> int:
        return int(self.settings.ingest.max_file_mb * 2**20)

    # --- answering ------------------------------------------------------------
    def search(self, question: str, kb: str | Sequence[str] | None = None,
               top_k: int | None = None) -> list[Hit]:
        """Hybrid search over one knowledge base, or several fused (each hit tagged)."""
        r = self.settings.retrieval
        names = [kb] if isinstance(kb, str) else list(kb or [])
        return self.library.search(names or [self.settings.default_kb], question,
                                   top_k or r.top_k)

    def ask(self, question: str, kb: str | Sequence[str] | None = None,
            history: Sequence[tuple[str, str]] = ()) -> Iterator[AnswerDelta | Answer]:
        """Stream the answer as ``AnswerDelta``s, then yield the final ``Answer``.

        ``history``: earlier (question, answer) turns; a follow-up is rewritten into a
        standalone query for the search (the model still sees the question as asked)."""
        question = question.strip()
        if not question:
            raise ValueError("The question is empty.")
        timings: dict[str, float] = {}
        llm = self.llm
        query = question
        if history:
            t0 = time.perf_counter()
            query = condense(llm, history, question)
            timings["condense_s"] = time.perf_counter() - t0
        t0 = time.perf_counter()
        hits = self.search(query, kb)
        timings["retrieve_s"] = time.perf_counter() - t0
        cfg = self.settings.llm
        budget = self.settings.retrieval.compress_budget
        if budget and hits:
            t0 = time.perf_counter()
            sources = [_source(i, c.hit, c.text) for i, c in enumerate(
                self.library.compress(query, hits, budget), start=1)]
            timings["compress_s"] = time.perf_counter() - t0
        else:
            sources = [_source(i, h) for i, h in enumerate(hits, start=1)]
        budget = cfg.n_ctx - cfg.max_tokens - llm.count_tokens(SYSTEM_PROMPT + question) - 64
        sources = fit_sources(sources, budget, llm.count_tokens)
        messages = build_messages(question, sources)
        marker_filter = MarkerFilter({s.number for s in sources})
        pieces: list[str] = []
        t1 = time.perf_counter()
        for piece in llm.stream_chat(messages, cfg.max_tokens, cfg.temperature):
            if not pieces:
                timings["first_token_s"] = time.perf_counter() - t1
            pieces.append(piece)
            shown = marker_filter.feed(piece)
            if shown:
                yield AnswerDelta(shown)
        tail = marker_filter.flush()
        if tail:
            yield AnswerDelta(tail)
        timings["generate_s"] = time.perf_counter() - t1
        raw = "".join(pieces)
        text = clean_markers(raw, {s.number for s in sources}).strip()
        citations = tuple(build_citations(text, sources))
        yield Answer(question, text, citations, tuple(sources), llm.name, timings,
                     tokens=llm.count_tokens(raw) if raw else 0, search_query=query)

    def answer(self, question: str, kb: str | Sequence[str] | None = None,
               history: Sequence[tuple[str, str]] = ()) -> Answer:
        """``ask`` without streaming."""
        final = None
        for event in self.ask(question, kb, history):
            if isinstance(event, Answer):
                final = event
        assert final is not None
        return final

    def close(self) -> None:
        self.library.close()


def _expand(items: Sequence[IngestItem | Path | str], password: str | None) -> list[IngestItem]:
    out: list[IngestItem] = []
    for item in items:
        if isinstance(item, IngestItem):
            out.append(item if password is None else IngestItem(item.path, item.source, item.origin, password))
            continue
        path = Path(item).expanduser()
        if path.is_dir():
            out.extend(folder_items(path, password))
        else:
            out.append(IngestItem(path, path.name, str(path.resolve()), password))
    return out


def _source(number: int, hit: Hit, text: str | None = None) -> Source:
    c = hit.chunk
    return Source(number, c.chunk_id, hit.kb, c.source, c.page, c.text if text is None else text,
                  hit.score, dict(hit.scores))
