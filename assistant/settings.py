"""One typed settings tree for Docent.

Loaded once (``load_settings``) from an optional TOML/JSON file plus ``DOCENT_*``
environment variables (nested fields use ``__``, e.g. ``DOCENT_LLM__N_CTX=8192``),
then passed into constructors. Nothing reads a global.

>>> s = Settings(data_dir="/tmp/docent-example")
>>> str(s.paths.models_dir)
'/tmp/docent-example/models'
"""
from __future__ import annotations

import json
import os
import tomllib
from pathlib import Path
from typing import TYPE_CHECKING, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from common.models import DEFAULT_DATA_DIR

if TYPE_CHECKING:
    from knowledge.retrievers import RetrievalConfig

class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class LLMSettings(_Section):
    model: str = Field(
        "qwen2.5-coder-1.5b",
        description="Chat model: an installed default ('qwen2.5-coder-1.5b' or "
        "'qwen2.5-coder-0.5b') or a path to any local .gguf file.",
    )
    n_ctx: int = Field(4096, ge=512, le=131072, description="Context window in tokens.")
    n_threads: int = Field(
        0, ge=0, le=256, description="CPU threads for generation; 0 means all cores."
    )
    n_gpu_layers: int = Field(
        0, ge=-1, le=1000, description="Layers to offload to a GPU (-1: all); 0 on CPU builds."
    )
    max_tokens: int = Field(512, ge=16, le=8192, description="Most tokens in one answer.")
    temperature: float = Field(0.2, ge=0.0, le=2.0, description="Sampling temperature.")
    repeat_penalty: float = Field(
        1.1, ge=1.0, le=2.0, description="Penalty on repeated tokens (small models loop without it)."
    )
    repeat_last_n: int = Field(
        16, ge=0, le=4096, description="llama-server: how many of the last tokens the "
        "repeat penalty looks at. The server counts the prompt in that window, whose "
        "closing rule to cite [n] then kept a 64-token window's answers from citing; 16 "
        "reaches past the prompt once a sentence is written and still stops short loops.")
    seed: int = Field(0, ge=0, description="Sampling seed, for repeatable answers.")
    # --- remote backend (an OpenAI-compatible server instead of the local GGUF) ---
    backend: Literal["llama-server", "llama-cpp", "openai"] = Field(
        "llama-server", description="'llama-server' (default): llama.cpp's own server runs "
        "the local GGUF in `model` as a supervised child process (a crash there costs one "
        "answer and it is restarted); 'llama-cpp': the GGUF runs inside Docent's process; "
        "'openai': send chats to the OpenAI-compatible server at `base_url` (model, "
        "n_threads, n_gpu_layers and repeat_penalty then do not apply; n_ctx must match "
        "the server's context).")
    parallel: int = Field(
        2, ge=1, le=64, description="llama-server: conversations answered at once "
        "(slots, continuous batching); each has the full n_ctx. Chosen from the measured "
        "total tokens/s with 1, 2 and 4 slots on 2 cores (README).")
    server_binary: str = Field(
        "", max_length=4096, description="llama-server: path to the binary; empty: the one "
        "`make setup` built into the venv (<venv>/bin/llama-server).")
    startup_timeout: float = Field(
        180.0, gt=0, le=3600, description="llama-server: seconds to wait for the model to "
        "load before the start counts as failed (and is tried again).")
    ready_timeout: float = Field(
        60.0, ge=0, le=3600, description="llama-server: seconds a question waits for the "
        "model server while it (re)starts before the answer fails with a message.")
    base_url: str = Field(
        "http://127.0.0.1:8080/v1", min_length=8, max_length=2048, pattern=r"^https?://",
        description="Base URL of the OpenAI-compatible server (backend 'openai'), with /v1.")
    api_key: str = Field(
        "", max_length=4096, description="Bearer key for the remote server (backend 'openai'); "
        "empty for servers that need none.")
    remote_model: str = Field(
        "", max_length=512, description="Model id to ask the remote server for (backend "
        "'openai'); empty: the first model the server lists.")
    request_timeout: float = Field(
        300.0, gt=0, le=3600, description="Seconds to wait for the remote server (backend "
        "'openai') before giving up on a request.")


class EmbedderSettings(_Section):
    model: str = Field(
        "auto",
        description="Embedder for new knowledge bases: 'auto' (multilingual-e5-small, "
        "installed, for every language), 'all-MiniLM-L6-v2' (installed, English only, "
        "faster), 'embeddinggemma-300m' (after `make embeddinggemma`: far better across "
        "languages, ~4x slower to embed than e5), or a path to a local sentence-transformers "
        "folder. A knowledge base keeps its embedder; `kb reembed --embedder NAME` moves it "
        "to another in the background.",
    )
    across: str = Field(
        "embeddinggemma-300m",
        description="Embedder a knowledge base is moved to, in the background, the first "
        "time it is asked in another language than its documents' (it stays searchable "
        "with its current vectors meanwhile), when that embedder is assembled: "
        "EmbeddingGemma finds the answering English passage for 46 of 48 Chinese and "
        "Vietnamese questions against 25 for e5. Empty: never.")
    batch_size: int = Field(32, ge=1, le=1024, description="Texts per embedding batch.")


class ChunkingSettings(_Section):
    chunk_size: int = Field(
        220, ge=32, le=2048, description="Target chunk size in embedder tokens (approximate)."
    )
    chunk_overlap: int = Field(40, ge=0, le=512, description="Overlap between chunks, in tokens.")

    @field_validator("chunk_overlap")
    @classmethod
    def _overlap_below_size(cls, v: int, info) -> int:
        size = info.data.get("chunk_size", 220)
        if v >= size:
            raise ValueError(f"chunk_overlap ({v}) must be smaller than chunk_size ({size})")
        return v


class RetrievalSettings(_Section):
    top_k: int = Field(5, ge=1, le=50, description="Sources given to the model per question.")
    candidates: int = Field(
        100, ge=1, le=500, description="Hits taken from each retriever before fusion (100 "
        "ranked better than 30 on MedQuAD and Toyhom, see benchmarks/retrieval.md).")
    fusion: Literal["weighted", "rrf"] = Field(
        "weighted", description="How BM25 and vector hits are fused: min-max 'weighted' "
        "scores (best on the shared sets) or reciprocal rank ('rrf').")
    dense_weight: float = Field(
        0.5, ge=0.0, le=1.0, description="Weight of the vector scores in weighted fusion.")
    rrf_k: int = Field(60, ge=1, le=1000, description="Reciprocal-rank-fusion constant.")
    heading_weight: float = Field(
        0.3, ge=0.0, lt=1.0, description="Share of the score given to a chunk's section "
        "heading scored alone against the question (DOCX, Markdown, HTML and PDF headings; 0: off).")
    prf: bool = Field(False, description="Pseudo-relevance feedback: add terms of the top "
                      "BM25 hits to the keyword query (lowered nDCG@10 on the shared sets).")
    reranker: Literal["none", "auto", "trained", "cross-encoder"] = Field(
        "none", description="'none' (default: no offline reranker improved nDCG@10 on the "
        "shared sets, see benchmarks/retrieval.md); 'trained': the knowledge base's own "
        "(Knowledge tab or `kb train-reranker`); 'auto': the trained one when there is one; "
        "'cross-encoder': the local folder in reranker_model.")
    reranker_model: str = Field(
        "", description="A local sentence-transformers CrossEncoder folder (reranker "
        "'cross-encoder').")
    rerank_top: int = Field(20, ge=1, le=200, description="Fused hits the reranker reorders.")
    rerank_blend: float = Field(
        0.5, ge=0.0, le=1.0, description="Weight of the fused order against the reranker's "
        "(0: the reranker's order alone).")

    reranker_questions: int = Field(
        300, ge=10, le=20_000, description="Questions the local model writes to train a "
        "knowledge base's reranker (about 2-3 s each on 2 CPU cores with the 1.5B).")
    compress_budget: int = Field(
        0, ge=0, le=8192, description="Cut the sources to about this many tokens of the "
        "sentences most relevant to the question (0: off, whole chunks).")

    def config(self) -> "RetrievalConfig":
        from knowledge.retrievers import FusionConfig, RetrievalConfig

        return RetrievalConfig(
            FusionConfig(self.fusion, self.rrf_k, self.dense_weight, self.heading_weight),
            self.candidates, self.prf, self.reranker, self.reranker_model, self.rerank_top,
            self.rerank_blend)


class IngestSettings(_Section):
    max_file_mb: float = Field(
        200.0, gt=0, le=10_000, description="Files larger than this are refused up front."
    )


class AnswerSettings(_Section):
    default_profile: Literal["medical", "general"] = Field(
        "medical", description="Profile of a knowledge base that has none of its own: "
        "'medical' (scope guardrail, disclaimer, urgent-symptom advice, no uncited dosing) "
        "or 'general' (any subject). Each knowledge base can set its own.")
    gate: bool = Field(True, description="Evidence gate: when the best source is too weak, "
                       "say the answer is not in the knowledge base instead of answering.")
    cite_grammar: Literal["across", "always", "never"] = Field(
        "across", description="Make the model cite while it writes (a llama.cpp grammar: "
        "a source marker in every sentence of East Asian text and in every paragraph): "
        "'across' when the answer's language differs from its sources' (a missing marker "
        "cannot be inferred from shared words then), 'always', or 'never'. Only where "
        "the model is served by llama.cpp.")
    min_similarity: float | None = Field(
        None, ge=-1.0, le=1.0, description="Evidence gate threshold on the best source's "
        "cosine similarity; empty: the value calibrated for the knowledge base's embedder "
        "(benchmarks/answers.md). Embedders with no calibration and no value: gate off.")
    scope_threshold: float = Field(
        0.77, ge=0.0, le=1.0, description="Guardrail: a question whose similarity to the "
        "scope's subject (multilingual-e5-small) is below this, and that the knowledge "
        "base does not support, is out of scope.")
    inference_log: bool = Field(True, description="Record each answer (question, knowledge "
                                "base, chunk ids, model, timings, tokens) in "
                                "<data_dir>/logs/inference.jsonl.")


class ServerSettings(_Section):
    host: str = Field("127.0.0.1", description="Address the app binds to. Keep loopback unless you mean it.")
    port: int = Field(7860, ge=1, le=65535, description="Port of the web app.")
    api_token: str = Field(
        "", max_length=4096, description="Bearer token the OpenAI-compatible API (/v1) "
        "requires; empty: no token. Required when host is not a loopback address.")
    allowed_folders: list[Path] = Field(
        default_factory=list, description="Folders the page may sync from (and their "
        "subfolders), checked after symlinks and '..' are resolved. Empty: any folder when "
        "bound to loopback, none beyond it. The CLI on this machine is not limited.")
    max_request_mb: float = Field(
        4.0, gt=0, le=1024, description="Largest request body the API (/v1) accepts, in MB; "
        "a larger one is answered 413 before it is read in full.")
    max_queued_requests: int = Field(
        16, ge=1, le=10000, description="Chat completions (/v1) handled or waiting at once; "
        "one more is answered 429 with Retry-After instead of waiting without end.")

    @property
    def own_url(self) -> str:
        """Where this machine reaches the app (loopback for a bind to every address).

        >>> ServerSettings(host="0.0.0.0", port=8080).own_url
        'http://127.0.0.1:8080'
        """
        host = {"0.0.0.0": "127.0.0.1", "::": "::1", "": "127.0.0.1"}.get(self.host, self.host)
        return f"http://[{host}]:{self.port}" if ":" in host else f"http://{host}:{self.port}"

    @property
    def loopback(self) -> bool:
        """Whether ``host`` is reachable from this computer only.

        >>> ServerSettings(host="0.0.0.0").loopback, ServerSettings(host="::1").loopback
        (False, True)
        """
        import ipaddress

        if self.host == "localhost":
            return True
        try:
            return ipaddress.ip_address(self.host).is_loopback
        except ValueError:
            return False


class VectorStoreSettings(_Section):
    url: str = Field(
        "", max_length=2048, description="Address of a Chroma server (for example "
        "http://127.0.0.1:8000) every knowledge base keeps its vectors in; empty: the embedded "
        "store under <data_dir>/knowledge/chroma. The catalog stays local and is the record "
        "of truth either way.")
    collection_prefix: str = Field(
        "docent", min_length=1, max_length=32, pattern=r"^[A-Za-z0-9][A-Za-z0-9_-]*$",
        description="Start of every collection name on a Chroma server, so that several "
        "Docent installations can share one server without seeing each other's vectors.")


class TrainingSettings(_Section):
    launcher: Literal["auto", "python", "torchrun"] = Field(
        "auto", description="How a fine-tuning worker starts: 'python' (one process), "
        "'torchrun' (one process per GPU, or per 'processes' on CPU), 'auto' (torchrun when "
        "more than one GPU is visible).")
    processes: int = Field(
        0, ge=0, le=64, description="Worker processes under torchrun; 0: one per visible GPU. "
        "On CPU (gloo) set it to run data-parallel processes.")


class Paths(BaseModel):
    """Every runtime path, derived from the data dir."""

    model_config = ConfigDict(frozen=True)
    data_dir: Path
    models_dir: Path

    @property
    def kb_dir(self) -> Path:
        return self.data_dir / "knowledge"

    @property
    def uploads_dir(self) -> Path:
        """Files the web page received (Gradio's cache), kept only until they are old."""
        return self.data_dir / "uploads"

    @property
    def logs_dir(self) -> Path:
        return self.data_dir / "logs"


class Settings(BaseSettings):
    """Docent's settings. Every field is described; ``python -m assistant doctor`` prints them."""

    model_config = SettingsConfigDict(
        env_prefix="DOCENT_", env_nested_delimiter="__", extra="forbid", frozen=True
    )

    data_dir: Path = Field(
        DEFAULT_DATA_DIR, description="Where Docent keeps knowledge bases, models and logs."
    )
    models_dir: Path | None = Field(
        None,
        description="Where the assembled default models live; defaults to <data_dir>/models. "
        "Several data dirs may share one models dir.",
    )
    default_kb: str = Field("default", min_length=1, max_length=64, description="Knowledge base used when none is chosen.")
    llm: LLMSettings = Field(default_factory=LLMSettings, description="Chat model.")
    embedder: EmbedderSettings = Field(default_factory=EmbedderSettings, description="Embedding model.")
    chunking: ChunkingSettings = Field(default_factory=ChunkingSettings, description="How documents are split.")
    retrieval: RetrievalSettings = Field(default_factory=RetrievalSettings, description="How sources are found.")
    ingest: IngestSettings = Field(default_factory=IngestSettings, description="Ingestion limits.")
    answers: AnswerSettings = Field(default_factory=AnswerSettings, description="How answers are checked and framed.")
    server: ServerSettings = Field(default_factory=ServerSettings, description="Web server.")
    vector_store: VectorStoreSettings = Field(
        default_factory=VectorStoreSettings, description="Where passage vectors are kept.")
    training: TrainingSettings = Field(
        default_factory=TrainingSettings, description="How fine-tuning jobs are started.")
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = Field("INFO", description="Logging level.")

    @property
    def paths(self) -> Paths:
        data = self.data_dir.expanduser().resolve()
        models = (self.models_dir or data / "models").expanduser().resolve()
        return Paths(data_dir=data, models_dir=models)


def load_settings(config_file: str | os.PathLike | None = None, **overrides) -> Settings:
    """Settings from ``config_file`` (TOML or JSON; default ``$DOCENT_CONFIG``), then
    ``DOCENT_*`` environment variables, then keyword ``overrides`` (highest)."""
    path = config_file or os.environ.get("DOCENT_CONFIG")
    file_values: dict = {}
    if path:
        p = Path(path).expanduser()
        if not p.is_file():
            raise FileNotFoundError(f"Settings file {p} not found (from --config or DOCENT_CONFIG).")
        text = p.read_text(encoding="utf-8")
        file_values = json.loads(text) if p.suffix == ".json" else tomllib.loads(text)
    env_values = Settings().model_dump(exclude_unset=True)
    merged = _deep_merge(_deep_merge(file_values, env_values), overrides)
    return Settings(**merged)


def _deep_merge(base: dict, top: dict) -> dict:
    out = dict(base)
    for key, value in top.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = _deep_merge(out[key], value)
        else:
            out[key] = value
    return out
