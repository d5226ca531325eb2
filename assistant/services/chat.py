"""Answers: hybrid search, cited and streamed answers over knowledge bases, replies with
no retrieval (the HTTP API), and the view of a cited passage."""
from __future__ import annotations

from collections.abc import Iterator, Sequence

from assistant.answering import Answerer
from assistant.citation_view import CitationView, citation_view
from assistant.guard import ScopeGuard
from assistant.inference_log import InferenceLog
from assistant.services.bases import KnowledgeBases
from assistant.services.index_jobs import IndexJobs
from assistant.services.serving import Serving
from assistant.settings import Settings
from assistant.types import Answer, AnswerDelta, Reading
from knowledge.embedders import E5_NAME, EmbedderPool
from knowledge.errors import IndexMismatch
from knowledge.types import Hit

Stream = Iterator[Reading | AnswerDelta | Answer]


class Chat:
    def __init__(self, settings: Settings, bases: KnowledgeBases, embedders: EmbedderPool,
                 serving: Serving, index_jobs: IndexJobs, inference_log: InferenceLog | None):
        self.settings = settings
        self._bases, self._embedders = bases, embedders
        self._serving, self._index_jobs = serving, index_jobs
        self._guard: ScopeGuard | None = None
        self.answerer = Answerer(settings, bases.library, self._scope_guard, inference_log)

    def search(self, question: str, kb: str | Sequence[str] | None = None,
               top_k: int | None = None) -> list[Hit]:
        """Hybrid search over one knowledge base, or several fused (each hit tagged)."""
        return self._bases.library.search(self._bases.names(kb), question,
                                          top_k or self.settings.retrieval.top_k)

    def ask(self, question: str, kb: str | Sequence[str] | None = None,
            history: Sequence[tuple[str, str]] = (), model: str | None = None,
            user: str = "") -> Stream:
        """Stream the answer: a ``Reading`` with the sources when the model is asked (it
        reads them before its first token), ``AnswerDelta``s, then the final ``Answer``.

        ``history``: earlier (question, answer) turns; a follow-up is rewritten into a
        standalone query for the search (the model still sees the question as asked).
        The first knowledge base's profile decides scope, prompt and medical rules; an
        answer may be a refusal (``Answer.refused``, see ``assistant.answering``). A
        question in another language than English starts re-embedding the English-only
        knowledge bases among ``kb`` (``IndexJobs.reembed_for``). ``user``: the account
        asking, for the inference log."""
        question = question.strip()
        if not question:
            raise ValueError("The question is empty.")
        names = self._bases.names(kb)
        llm = self._serving.llm_for(model)  # None: the model chosen with use_model, or the base
        profile = self._bases.profile(names[0])
        self._index_jobs.reembed_for(question, names)
        yield from self.answerer.ask(llm, question, names, history, profile,
                                     model or self._serving.chat_model(), user)

    def holders(self, sources: Sequence) -> dict[str, list[str]]:
        """For each source (``Source`` or ``Citation``), the documents holding its
        passage: its own first, then those whose identical passage was stored once,
        under it (deduplication at ingestion)."""
        out: dict[str, list[str]] = {}
        for src in sources:
            docs = out.setdefault(src.chunk_id, [src.source])
            catalog = self._bases.library.get(src.kb).catalog
            for doc in catalog.duplicate_sources([src.chunk_id]).get(src.chunk_id, []):
                if doc not in docs:
                    docs.append(doc)
        return out

    def answer(self, question: str, kb: str | Sequence[str] | None = None,
               history: Sequence[tuple[str, str]] = ()) -> Answer:
        """``ask`` without streaming."""
        final = None
        for event in self.ask(question, kb, history):
            if isinstance(event, Answer):
                final = event
        assert final is not None
        return final

    def plain(self, messages: Sequence[dict], max_tokens: int | None = None,
              temperature: float | None = None, model: str | None = None) -> Iterator[str]:
        """Stream the model's reply to ``messages`` ({"role", "content": str}) with no
        retrieval and no sources. ``max_tokens`` is capped at ``llm.max_tokens``; a
        conversation that leaves no room for the reply raises ``ValueError``."""
        cfg = self.settings.llm
        max_tokens = min(max_tokens or cfg.max_tokens, cfg.max_tokens)
        llm = self._serving.llm_for(model)
        used = sum(llm.count_tokens(m["content"]) + 4 for m in messages)
        if used + max_tokens > cfg.n_ctx:
            raise ValueError(f"The conversation is about {used} tokens; with {max_tokens} for "
                             f"the reply it exceeds the model's context of {cfg.n_ctx} tokens.")
        temp = cfg.temperature if temperature is None else temperature
        yield from llm.stream_chat(list(messages), max_tokens, temp)

    def citation(self, chunk_id: str, kb: str | None, quote: str = "") -> CitationView:
        """The cited passage of ``kb`` with the span of ``quote`` in it and, for a PDF,
        its page rendered to PNG (cached in the knowledge base's folder). An unknown
        chunk (its document deleted or replaced) raises ``KnowledgeError``."""
        return citation_view(self._bases.get(kb), chunk_id, quote)

    def _scope_guard(self) -> ScopeGuard:
        """The guardrail's multilingual embedder: e5, or the injected one in tests."""
        if self._guard is None:
            try:
                embedder = self._embedders.get(E5_NAME)
            except IndexMismatch:
                embedder = self._embedders.get(self._embedders.default)
            self._guard = ScopeGuard(lambda q: embedder.embed_queries([q])[0],
                                     lambda p: embedder.embed_passages([p])[0],
                                     self.settings.answers.scope_threshold)
        return self._guard
