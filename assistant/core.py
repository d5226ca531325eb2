"""``Assistant``: the one facade the UI, the CLI, the HTTP API and the tests call."""
from __future__ import annotations

import logging
import threading
import time
from collections.abc import Generator, Iterator, Sequence
from pathlib import Path

from assistant import tasks  # document tasks
from assistant.condense import condense
from assistant.conversations import (ConversationInfo, ConversationStore, Turn,
                                     history_for_prompt)
from assistant.citations import MarkerFilter, build_citations, clean_markers
from assistant.jobs import Jobs, JobStatus
from assistant.llm import LLM, LlamaCppLLM, OpenAICompatLLM
from assistant.models import resolve_gguf
from assistant.prompts import SYSTEM_PROMPT, build_messages, fit_sources
from assistant.settings import Settings
from assistant.types import Answer, AnswerDelta, Source
from ingest.chunking import ChunkingParams
from ingest.pipeline import IngestItem, folder_items, ingest_files, sync_folder
from ingest.types import IngestEvent, IngestReport
from knowledge.embedders import Embedder, EmbedderPool
from knowledge.errors import KnowledgeError  # document tasks
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
        self.conversations = ConversationStore(self.paths.data_dir / "conversations.sqlite3")

    # --- models ---------------------------------------------------------------
    @property
    def llm(self) -> LLM:
        with self._llm_lock:
            if self._llm is None and self.settings.llm.backend == "openai":
                self._llm = _remote_llm(self.settings)
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

    # --- conversations --------------------------------------------------------
    def new_conversation(self, kb: str | None = None, title: str = "") -> ConversationInfo:
        """Start a stored conversation over ``kb`` (several names: separated by commas)."""
        kb = kb or self.settings.default_kb
        for name in _kb_names(kb):
            self.library.manifest(name)  # an unknown knowledge base is refused now
        return self.conversations.create(kb, title)

    def list_conversations(self) -> list[ConversationInfo]:
        return self.conversations.list()

    def conversation_turns(self, cid: str) -> list[Turn]:
        return self.conversations.turns(cid)

    def rename_conversation(self, cid: str, title: str) -> ConversationInfo:
        return self.conversations.rename(cid, title)

    def delete_conversation(self, cid: str) -> None:
        self.conversations.delete(cid)

    def export_conversation(self, cid: str) -> str:
        """The conversation as Markdown, each answer followed by its citations."""
        return self.conversations.export_markdown(cid)

    def chat(self, cid: str, question: str) -> Iterator[AnswerDelta | Answer]:
        """``ask`` within stored conversation ``cid``: its earlier turns (trimmed to a
        quarter of the context) are the history; the final ``Answer`` is stored before it
        is yielded. Nothing is stored when ``ask`` fails. Unknown ``cid``: raised now."""
        info = self.conversations.get(cid)
        return self._chat(info, self.conversations.turns(cid), question)

    def _chat(self, info: ConversationInfo, turns: list[Turn], question: str
              ) -> Iterator[AnswerDelta | Answer]:
        budget = self.settings.llm.n_ctx // 4
        history = history_for_prompt(turns, budget, self.llm.count_tokens)
        for event in self.ask(question, _kb_names(info.kb), history):
            if isinstance(event, Answer):
                self.conversations.append(info.conversation_id, event)
            yield event
    # --- end conversations ----------------------------------------------------

    # --- HTTP API (OpenAI-compatible) ------------------------------------------
    def model_ids(self) -> list[str]:
        """Ids a caller may ask for: the base chat model (adapters are added later).
        The configured name (``llm.model``), or the remote model with backend 'openai'."""
        cfg = self.settings.llm
        if cfg.backend == "openai":
            return [cfg.remote_model or self.llm.name]
        return [cfg.model]

    def chat_plain(self, messages: Sequence[dict], max_tokens: int | None = None,
                   temperature: float | None = None) -> Iterator[str]:
        """Stream the model's reply to ``messages`` ({"role", "content": str}) with no
        retrieval and no sources. ``max_tokens`` is capped at ``llm.max_tokens``; a
        conversation that leaves no room for the reply raises ``ValueError``."""
        cfg = self.settings.llm
        max_tokens = min(max_tokens or cfg.max_tokens, cfg.max_tokens)
        llm = self.llm
        used = sum(llm.count_tokens(m["content"]) + 4 for m in messages)
        if used + max_tokens > cfg.n_ctx:
            raise ValueError(f"The conversation is about {used} tokens; with {max_tokens} for "
                             f"the reply it exceeds the model's context of {cfg.n_ctx} tokens.")
        temp = cfg.temperature if temperature is None else temperature
        yield from llm.stream_chat(list(messages), max_tokens, temp)
    # --- end HTTP API -----------------------------------------------------------

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

    def close(self) -> None:
        self.library.close()
        self.conversations.close()


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


def _kb_names(kb: str) -> list[str]:
    return [k.strip() for k in kb.split(",") if k.strip()]


def _remote_llm(settings: Settings) -> LLM:
    """The chat model on an OpenAI-compatible server (``llm.backend = "openai"``)."""
    cfg = settings.llm
    llm = OpenAICompatLLM(cfg.base_url, cfg.remote_model, cfg.api_key, cfg.request_timeout,
                          cfg.n_ctx, cfg.seed)
    log.info("Chat model: %s on %s", llm.name, cfg.base_url)
    return llm


def _source(number: int, hit: Hit, text: str | None = None) -> Source:
    c = hit.chunk
    return Source(number, c.chunk_id, hit.kb, c.source, c.page, c.text if text is None else text,
                  hit.score, dict(hit.scores))
