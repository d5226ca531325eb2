"""Our ``Embedder`` seen as a llama-index ``BaseEmbedding`` and a Chroma embedding function.

Chroma never gets the chance to use its default embedding function (which downloads
a model), and llama-index never reaches for OpenAI.
"""
from __future__ import annotations

from typing import Any

from chromadb.api.types import Documents, EmbeddingFunction, Embeddings
from llama_index.core.embeddings import BaseEmbedding
from pydantic import PrivateAttr

from knowledge.embedders import Embedder


class LlamaIndexEmbedding(BaseEmbedding):
    _embedder: Embedder = PrivateAttr()

    def __init__(self, embedder: Embedder, **kwargs: Any):
        super().__init__(model_name=embedder.name, **kwargs)
        self._embedder = embedder

    def _get_query_embedding(self, query: str) -> list[float]:
        return self._embedder.embed_queries([query])[0].tolist()

    async def _aget_query_embedding(self, query: str) -> list[float]:
        return self._get_query_embedding(query)

    def _get_text_embedding(self, text: str) -> list[float]:
        return self._embedder.embed_passages([text])[0].tolist()

    def _get_text_embeddings(self, texts: list[str]) -> list[list[float]]:
        return self._embedder.embed_passages(texts).tolist()


class ChromaEmbeddingFunction(EmbeddingFunction[Documents]):
    """Passage embeddings for Chroma (used if Chroma is ever asked to embed documents)."""

    def __init__(self, embedder: Embedder):
        self._embedder = embedder

    def __call__(self, input: Documents) -> Embeddings:
        return [v for v in self._embedder.embed_passages(list(input))]

    @staticmethod
    def name() -> str:
        return "docent"

    def get_config(self) -> dict[str, Any]:
        return {}

    @staticmethod
    def build_from_config(config: dict[str, Any]) -> "ChromaEmbeddingFunction":
        raise NotImplementedError("Docent passes its embedder explicitly when opening a collection.")
