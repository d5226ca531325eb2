"""``Assistant``: the one facade the UI, the CLI, the HTTP API and the tests call."""
from __future__ import annotations

import functools
import logging
import os
import threading
import time
from collections.abc import Generator, Iterator, Sequence
from pathlib import Path

from assistant.adapter_serving import AdapterServing  # adapters
from assistant.answering import Answerer
from assistant.facade_documents import DocumentsMixin
from assistant.facade_training import TrainingMixin
from assistant.conversations import (ConversationInfo, ConversationStore, Turn,
                                     history_for_prompt)
from assistant.guard import ScopeGuard
from assistant.inference_log import InferenceLog
from assistant.language import question_language
from assistant.jobs import Jobs, JobStatus, Progress
from assistant.llm import LLM, LlamaCppLLM, OpenAICompatLLM, ServedLLM
from assistant.model_server import ModelServer, ServerConfig
from assistant.errors import AssistantError
from common.errors import ModelNotFound
from common.models import resolve_gguf
from assistant.profiles import Profile, load_profile, preset, save_profile
from assistant.settings import Settings
from assistant.types import Answer, AnswerDelta, Reading
from assistant.vocab import cjk_token_ids
from finetune.registry import AdapterRegistry  # adapters
from ingest.chunking import ChunkingParams
from ingest.pipeline import (
    IngestItem, folder_items, ingest_files, outdated_documents, reread_documents, sync_folder,
)
from ingest.types import IngestEvent, IngestReport
from knowledge.embedders import E5_NAME, Embedder, EmbedderPool
from knowledge.errors import IndexMismatch, KnowledgeError
from finetune.reranker import RerankerTraining, train_reranker
from knowledge.rerank import current_reranker, reranker_dir
from knowledge.language import AUTO, MULTILINGUAL, multilingual
from knowledge.library import Library
from knowledge.types import DocumentRecord, Hit

log = logging.getLogger(__name__)

TRAIN_RERANKER = "reranker training"
REEMBED = "re-embedding"


class Assistant(DocumentsMixin, TrainingMixin):
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
                          EmbedderPool(settings.embedder.model, settings.embedder.batch_size,
                                       models_dir=settings.paths.models_dir))
        self.chunking = ChunkingParams(settings.chunking.chunk_size, settings.chunking.chunk_overlap)
        self.library = Library(
            self.paths.kb_dir, self.embedders, self.chunking.chunk_size,
            self.chunking.chunk_overlap, settings.retrieval.config(),
        )
        self.library.get(settings.default_kb, create=True)
        self.jobs = Jobs()
        self._guard: ScopeGuard | None = None
        log_path = self.paths.logs_dir / "inference.jsonl"
        self.inference_log = InferenceLog(log_path) if settings.answers.inference_log else None
        self.answerer = Answerer(settings, self.library, self._scope_guard, self.inference_log)
        self.conversations = ConversationStore(self.paths.data_dir / "conversations.sqlite3")
        left = self.conversations.recover_pending(
            "Docent stopped before this answer was finished; ask again (Retry).")
        if left:
            log.warning("%d question(s) left unanswered by the last run are marked failed", left)
        self._model_server: ModelServer | None = None
        self._stops: dict[str, threading.Event] = {}  # conversation id -> stop asked
        # adapters: the registry, the adapter models (one loaded at a time), the chosen one
        self.adapters = AdapterRegistry(self.paths.data_dir / "adapters")
        self._serving = AdapterServing(settings, self.adapters, lambda: self.llm)
        self._chat_model: str | None = None

    # --- models ---------------------------------------------------------------
    @property
    def llm(self) -> LLM:
        with self._llm_lock:
            if self._llm is None and self.settings.llm.backend == "openai":
                self._llm = _remote_llm(self.settings)
            if self._llm is None and self.settings.llm.backend == "llama-server":
                self._llm = self._served_llm()
            if self._llm is None:
                cfg = self.settings.llm
                path = resolve_gguf(cfg.model, self.paths.models_dir)
                t0 = time.perf_counter()
                self._llm = LlamaCppLLM(path, cfg.n_ctx, cfg.n_threads, cfg.n_gpu_layers,
                                        cfg.seed, cfg.repeat_penalty)
                log.info("Loaded %s in %.1f s", path.name, time.perf_counter() - t0)
            return self._llm

    def _served_llm(self) -> ServedLLM:
        """The chat model in a supervised ``llama-server`` child (started now, in the
        background: ``warm_up`` waits for it)."""
        cfg = self.settings.llm
        from assistant.canary import server_binary

        binary = server_binary(cfg.server_binary)
        if binary is None:
            raise ModelNotFound("llama-server is not built: run `make setup` (it builds it), "
                                "or set llm.backend = 'llama-cpp'.")
        path = resolve_gguf(cfg.model, self.paths.models_dir)
        self._model_server = ModelServer(ServerConfig(
            binary, path, cfg.n_ctx, cfg.parallel, cfg.n_threads, cfg.n_gpu_layers,
            log_path=self.paths.logs_dir / "llama-server.log",
            startup_timeout_s=cfg.startup_timeout))
        self._model_server.start()
        cache = self.paths.data_dir / "cache"
        cjk = functools.lru_cache(maxsize=1)(lambda: cjk_token_ids(path, cache))
        threading.Thread(target=cjk, name="cjk-tokens", daemon=True).start()  # ~10 s once
        return ServedLLM(self._model_server, path.name, cfg.n_ctx, cfg.seed,
                         cfg.repeat_penalty, request_timeout=cfg.request_timeout,
                         ready_timeout=cfg.ready_timeout, cjk_tokens=cjk,
                         repeat_last_n=cfg.repeat_last_n)

    def warm_up(self) -> None:
        """Load the chat model now rather than on the first question."""
        _ = self.llm
        if self._model_server is not None:
            self._model_server.wait_ready()

    def model_status(self) -> dict:
        """The chat model's process: ``{"pid": int | None, "state": "ready" | "starting" |
        "down", ...}``. In-process and remote models are "ready" once built."""
        if self._model_server is not None:
            return self._model_server.status()
        built = self._llm is not None
        pid = os.getpid() if isinstance(self._llm, LlamaCppLLM) else None
        return {"pid": pid, "state": "ready" if built else "down", "restarts": 0,
                "last_exit": "", "model": getattr(self._llm, "name", self.settings.llm.model)}

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
        for kind in (REEMBED, TRAIN_RERANKER):
            job = self.jobs.latest(kind, base.name)
            if job is not None:
                lines.append(job.describe())
        old = len(outdated_documents(base))
        if old:
            lines.append(f"{old} document(s) were read by an earlier Docent (PDFs without "
                         "section headings): *Read old documents again* reads them anew.")
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

    def reembed_knowledge_base(self, kb: str | None = None,
                               embedder: str | None = None) -> JobStatus:
        """Start re-embedding ``kb`` in the background with ``embedder`` (default: the
        multilingual one, for an English-only knowledge base that holds or is asked in
        another language); it stays searchable with its old vectors until the new ones are
        all in, then switches."""
        base = self.library.get(kb or self.settings.default_kb)
        if base.vectors is None:
            raise KnowledgeError(f"Knowledge base {base.name!r} is empty: there is nothing "
                                 "to re-embed (its first document chooses the embedder).")
        if embedder is None and multilingual(base.manifest.embedder):
            raise KnowledgeError(f"Knowledge base {base.name!r} already uses an embedder that "
                                 "reads every language (" + base.manifest.embedder + ").")
        target = self.embedders.get(embedder or MULTILINGUAL).name  # loads it: fails early
        if target == base.manifest.embedder:
            raise KnowledgeError(f"Knowledge base {base.name!r} already uses {target}.")

        def work():
            for done, total in base.reembed(target):
                yield Progress("re-embedding", done, total, target)
            return {"embedder": base.manifest.embedder}

        return self.jobs.start(REEMBED, base.name, work, record=base.root / "reembed-job.json")

    def _reembed_for(self, question: str, names: Sequence[str]) -> list[str]:
        """Start re-embedding the English-only knowledge bases among ``names`` when the
        question is in another language; the names of those being re-embedded."""
        if question_language(question) == "en":
            return []
        busy = []
        for name in names:
            base = self.library.get(name)
            if base.vectors is None or multilingual(base.manifest.embedder):
                continue
            job = self.jobs.latest(REEMBED, name)
            if job is None or not job.running:
                self.reembed_knowledge_base(name)
                log.info("Knowledge base %s is asked in another language than English: "
                         "re-embedding it with the multilingual embedder", name)
            busy.append(name)
        return busy

    def kb_profile(self, kb: str | None = None) -> Profile:
        """``kb``'s scope, system prompt and medical rules (see ``assistant.profiles``)."""
        base = self.library.get(kb or self.settings.default_kb)
        return load_profile(base.root, preset(self.settings.answers.default_profile))

    def set_kb_profile(self, profile: Profile, kb: str | None = None) -> None:
        base = self.library.get(kb or self.settings.default_kb)
        save_profile(base.root, profile)

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

    def reread_documents(self, kb: str | None = None
                         ) -> Generator[IngestEvent, None, IngestReport]:
        """Read again the documents of ``kb`` that an older reader read (e.g. PDFs from
        before headings were found), from their stored originals."""
        base = self.library.get(kb or self.settings.default_kb)
        return reread_documents(base, self.chunking, self._max_bytes())

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
            history: Sequence[tuple[str, str]] = (), model: str | None = None
            ) -> Iterator[Reading | AnswerDelta | Answer]:
        """Stream the answer: a ``Reading`` with the sources when the model is asked (it
        reads them before its first token), ``AnswerDelta``s, then the final ``Answer``.

        ``history``: earlier (question, answer) turns; a follow-up is rewritten into a
        standalone query for the search (the model still sees the question as asked).
        The first knowledge base's profile decides scope, prompt and medical rules; an
        answer may be a refusal (``Answer.refused``, see ``assistant.answering``)."""
        question = question.strip()
        if not question:
            raise ValueError("The question is empty.")
        names = [kb] if isinstance(kb, str) else list(kb or [])
        names = names or [self.settings.default_kb]
        llm = self.llm_for(model)  # None: the model chosen with use_model, or the base
        profile = self.kb_profile(names[0])
        self._reembed_for(question, names)
        yield from self.answerer.ask(llm, question, names, history, profile,
                                     model or self.chat_model())

    def _scope_guard(self) -> ScopeGuard:
        """The guardrail's multilingual embedder: e5, or the injected one in tests."""
        if self._guard is None:
            try:
                embedder = self.embedders.get(E5_NAME)
            except IndexMismatch:
                embedder = self.embedders.get(self.embedders.default)
            self._guard = ScopeGuard(lambda q: embedder.embed_queries([q])[0],
                                     lambda p: embedder.embed_passages([p])[0],
                                     self.settings.answers.scope_threshold)
        return self._guard

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

    def chat(self, cid: str, question: str, model: str | None = None
             ) -> Iterator[Reading | AnswerDelta | Answer]:
        """``ask`` within stored conversation ``cid``: its earlier answered turns (trimmed
        to a quarter of the context) are the history. The question is stored before the
        model is called; the final ``Answer`` fills it before it is yielded; a failure
        stores it as failed with the reason (then re-raises), and ``stop_answer`` or
        closing the stream stores what was streamed as stopped. Unknown ``cid``: raised
        now. ``model``: the base model or an adapter for this turn."""
        info = self.conversations.get(cid)
        question = question.strip()
        if not question:
            raise ValueError("The question is empty.")
        return self._chat(info, question, model)

    def retry(self, cid: str, model: str | None = None
              ) -> Iterator[Reading | AnswerDelta | Answer]:
        """Ask the last question of ``cid`` again when its answer failed or was stopped
        (the failed turn is replaced)."""
        failed = self.conversations.last_failed(cid)
        if failed is None:
            raise ValueError("The last answer of this conversation was neither failed nor "
                             "stopped: nothing to retry.")
        self.conversations.remove_turn(failed.turn_id)
        return self.chat(cid, failed.question, model)

    def stop_answer(self, cid: str) -> bool:
        """Stop the answer being written in ``cid`` (what was streamed is kept, marked
        stopped, and the model's slot is freed); False when none is being written."""
        event = self._stops.get(cid)
        if event is None:
            return False
        event.set()
        return True

    def _chat(self, info: ConversationInfo, question: str, model: str | None
              ) -> Iterator[Reading | AnswerDelta | Answer]:
        cid = info.conversation_id
        turns = self.conversations.turns(cid)
        turn_id = self.conversations.begin(cid, question, model or self.chat_model())
        stop = self._stops[cid] = threading.Event()
        streamed: list[str] = []
        finished = False
        try:
            budget = self.settings.llm.n_ctx // 4
            history = history_for_prompt(turns, budget, self.llm.count_tokens)
            events = self.ask(question, _kb_names(info.kb), history, model)
            try:
                for event in events:
                    if stop.is_set():
                        break
                    if isinstance(event, AnswerDelta):
                        streamed.append(event.text)
                    elif isinstance(event, Answer):
                        self.conversations.finish(turn_id, event)
                        finished = True
                    yield event
            finally:
                events.close()  # frees the model's slot now, not when collected
            if not finished:
                self.conversations.stop(turn_id, "".join(streamed))
                finished = True
        except GeneratorExit:
            if not finished:
                self.conversations.stop(turn_id, "".join(streamed))
            raise
        except Exception as exc:
            reason = str(exc) if isinstance(exc, (AssistantError, ValueError)) else (
                f"{type(exc).__name__}: {exc}")
            self.conversations.fail(turn_id, reason, "".join(streamed))
            raise
        finally:
            if self._stops.get(cid) is stop:
                del self._stops[cid]
    # --- end conversations ----------------------------------------------------

    # --- HTTP API (OpenAI-compatible) ------------------------------------------
    def model_ids(self) -> list[str]:
        """Ids a caller may ask for: the base chat model first (the configured name
        ``llm.model``, or the remote model with backend 'openai'), then each adapter."""
        return [self._base_model_id()] + [r.adapter_id for r in self.adapters.list()]

    def chat_plain(self, messages: Sequence[dict], max_tokens: int | None = None,
                   temperature: float | None = None, model: str | None = None
                   ) -> Iterator[str]:
        """Stream the model's reply to ``messages`` ({"role", "content": str}) with no
        retrieval and no sources. ``max_tokens`` is capped at ``llm.max_tokens``; a
        conversation that leaves no room for the reply raises ``ValueError``."""
        cfg = self.settings.llm
        max_tokens = min(max_tokens or cfg.max_tokens, cfg.max_tokens)
        llm = self.llm_for(model)
        used = sum(llm.count_tokens(m["content"]) + 4 for m in messages)
        if used + max_tokens > cfg.n_ctx:
            raise ValueError(f"The conversation is about {used} tokens; with {max_tokens} for "
                             f"the reply it exceeds the model's context of {cfg.n_ctx} tokens.")
        temp = cfg.temperature if temperature is None else temperature
        yield from llm.stream_chat(list(messages), max_tokens, temp)
    # --- end HTTP API -----------------------------------------------------------



    def close(self) -> None:
        if self._model_server is not None:
            self._model_server.stop()
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
