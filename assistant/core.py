"""``Assistant``: the one facade the UI, the CLI, the HTTP API and the tests call.

It builds the services from settings and exposes them; callers use them directly:
``documents`` (knowledge bases, ingestion, sync, status), ``chat`` (search, answers,
citations), ``conversations`` (stored chats), ``tasks`` (summaries, exam questions,
advice), ``datasets`` and ``training`` (fine-tuning), ``serving`` (the chat model and
the adapters), and ``index_jobs`` (reranker training and re-embedding in the background).
"""
from __future__ import annotations

from assistant.conversations import ConversationStore
from assistant.accounts import AccountStore
from assistant.services.access import Access
from assistant.services.evaluations import Evaluations
from assistant.inference_log import InferenceLog
from assistant.background import job_queue
from assistant.llm import LLM
from assistant.services.bases import KnowledgeBases
from assistant.services.chat import Chat
from assistant.services.conversations import Conversations
from assistant.services.datasets import Datasets
from assistant.services.documents import Documents, FolderAccess
from assistant.services.index_jobs import IndexJobs
from assistant.services.serving import Serving
from assistant.services.tasks import Tasks
from assistant.services.training import Training
from assistant.settings import Settings
from finetune.registry import AdapterRegistry
from ingest.chunking import ChunkingParams
from knowledge.chroma import VectorStoreConfig
from knowledge.embedders import Embedder, EmbedderPool
from knowledge.library import Library


def vector_store_config(settings: Settings) -> VectorStoreConfig:
    """Where the knowledge bases keep their vectors (``knowledge.chroma``)."""
    return VectorStoreConfig(settings.vector_store.url, settings.vector_store.collection_prefix)


class Assistant:
    """``llm`` and ``embedder`` (or a whole ``embedders`` pool) may be injected: tests use
    scripted fakes. Otherwise they are built from ``settings``, the LLM lazily, on first
    use or ``serving.warm_up()``."""

    def __init__(self, settings: Settings, llm: LLM | None = None,
                 embedder: Embedder | None = None, embedders: EmbedderPool | None = None):
        self.settings = settings
        self.paths = paths = settings.paths
        self.embedders = embedders or (
            EmbedderPool.fixed(embedder) if embedder else
            EmbedderPool(settings.embedder.model, settings.embedder.batch_size,
                         models_dir=paths.models_dir))
        chunking = ChunkingParams(settings.chunking.chunk_size, settings.chunking.chunk_overlap)
        self.library = Library(paths.kb_dir, self.embedders, chunking.chunk_size,
                               chunking.chunk_overlap, settings.retrieval.config(),
                               vector_store_config(settings))
        self.library.get(settings.default_kb, create=True)
        bases = KnowledgeBases(self.library, settings.default_kb,
                               settings.answers.default_profile)
        # the one job queue: fine-tuning, reranker training, re-embedding (worker processes)
        self.jobs = job_queue(settings, self.library)
        log_path = paths.logs_dir / "inference.jsonl"
        self.inference_log = InferenceLog(log_path) if settings.answers.inference_log else None

        self.serving = Serving(settings, AdapterRegistry(paths.data_dir / "adapters"), llm)
        base_llm = lambda: self.serving.llm  # noqa: E731 (built on first use)
        self.index_jobs = IndexJobs(bases, self.embedders, self.jobs, settings)
        # the folders the page may make this server read (the CLI is not limited)
        self.web_folders = FolderAccess.for_server(settings.server.allowed_folders,
                                                   settings.server.loopback)
        self.documents = Documents(bases, chunking, settings.ingest.max_file_mb,
                                   settings.retrieval, self.index_jobs)
        self.chat = Chat(settings, bases, self.embedders, self.serving, self.index_jobs,
                         self.inference_log)
        # who may do what: accounts, the page's login and the API's tokens
        self.access = Access(AccountStore(paths.data_dir / "accounts.sqlite3"),
                             settings.server.api_token, settings.server.loopback,
                             paths.data_dir / "jobs" / ".internal-token")
        self.conversations = Conversations(
            ConversationStore(paths.data_dir / "conversations.sqlite3"), bases, self.chat,
            self.serving, settings.llm.n_ctx)
        self.tasks = Tasks(bases, base_llm, settings.llm)
        self.datasets = Datasets(paths.data_dir / "datasets", bases, base_llm)
        self.training = Training(paths, self.datasets, bases, settings.retrieval.top_k,
                                 self.jobs)
        # real questions asked of the base model and adapters (a job asks the app's API)
        self.evaluations = Evaluations(self.jobs, bases, self.chat, self.serving,
                                       settings.server.own_url, self.access.internal_token)

    def close(self) -> None:
        self.jobs.close()
        self.serving.close()
        self.library.close()
        self.conversations.close()
        self.access.accounts.close()
