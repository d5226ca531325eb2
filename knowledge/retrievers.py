"""Retrievers behind one small interface: ``retrieve(query, k) -> list[Hit]``."""
from __future__ import annotations

import time
from dataclasses import dataclass
from collections.abc import Callable
from typing import Literal, Protocol

from knowledge.fusion import reciprocal_rank_fusion, weighted_score_fusion
from knowledge.types import Hit


class Retriever(Protocol):
    name: str

    def retrieve(self, query: str, k: int) -> list[Hit]: ...


class BM25Retriever:
    """BM25 over a knowledge base (``bm25``: its ``knowledge.stores.LiveBM25``); ``prf``
    adds pseudo-relevance-feedback terms."""

    name = "bm25"

    def __init__(self, bm25, prf: bool = False):
        self.bm25, self.prf = bm25, prf

    def retrieve(self, query: str, k: int) -> list[Hit]:
        index = self.bm25.refresh()
        if self.prf:
            return index.search_terms(index.expand(query), k)
        return index.search(query, k)


class DenseRetriever:
    """Nearest chunks by their vectors (``stores``: a knowledge base's
    ``knowledge.stores.Stores``, read at each search: a change of embedder replaces them)."""

    name = "dense"

    def __init__(self, stores):
        self.stores = stores

    def retrieve(self, query: str, k: int) -> list[Hit]:
        if self.stores.vectors is None:  # nothing ingested yet
            return []
        found = self.stores.vectors.search(query, k)
        chunks = self.stores.catalog.chunks_by_id([cid for cid, _ in found])
        return [Hit(chunks[cid], s, scores={"dense": s}) for cid, s in found if cid in chunks]


@dataclass(frozen=True)
class FusionConfig:
    """How BM25 and dense lists are combined. ``weighted`` uses min-max scores with
    ``dense_weight`` for dense and ``1 - dense_weight`` for BM25. ``heading_weight``: the
    share of the final score given to the chunks' headings scored alone
    (``knowledge.headings``; 0 turns it off)."""

    method: Literal["rrf", "weighted"] = "weighted"
    rrf_k: int = 60
    dense_weight: float = 0.5
    heading_weight: float = 0.3

    def __post_init__(self):
        if not 0.0 <= self.dense_weight <= 1.0:
            raise ValueError("dense_weight must be within [0, 1]")
        if not 0.0 <= self.heading_weight < 1.0:
            raise ValueError("heading_weight must be within [0, 1)")
        if self.rrf_k < 1:
            raise ValueError("rrf_k must be at least 1")


@dataclass(frozen=True)
class RetrievalConfig:
    """How a knowledge base answers a search: hybrid candidates, fusion, reranking.

    ``reranker``: ``none``, ``trained`` / ``auto`` (the knowledge base's trained reranker
    when it has one, else none), or ``cross-encoder`` (the folder ``reranker_model``).
    """

    fusion: FusionConfig = FusionConfig()
    candidates: int = 100
    prf: bool = False  # pseudo-relevance feedback for BM25 (measured: off)
    reranker: Literal["none", "auto", "trained", "cross-encoder"] = "none"
    reranker_model: str = ""
    rerank_top: int = 20
    rerank_blend: float = 0.5


Rescorer = Callable[[str, list[Hit], float], list[Hit]]


class HybridRetriever:
    """Each retriever's ``candidates`` best, fused; ``rescore`` (the heading field) then
    re-scores every fused candidate before the list is cut to ``k``."""

    name = "hybrid"

    def __init__(self, retrievers: list[Retriever], fusion: FusionConfig, candidates: int = 100,
                 rescore: Rescorer | None = None):
        self.retrievers, self.fusion, self.candidates = retrievers, fusion, candidates
        self.rescore = rescore
        self.last_timings: dict[str, float] = {}

    def retrieve(self, query: str, k: int) -> list[Hit]:
        ranked, timings = {}, {}
        for r in self.retrievers:
            t = time.perf_counter()
            ranked[r.name] = r.retrieve(query, max(k, self.candidates))
            timings[r.name] = time.perf_counter() - t
        t = time.perf_counter()
        if self.fusion.method == "rrf":
            fused = reciprocal_rank_fusion(ranked, k=self.fusion.rrf_k)
        else:
            w = self.fusion.dense_weight
            fused = weighted_score_fusion(ranked, {"dense": w, "bm25": 1.0 - w})
        timings["fusion"] = time.perf_counter() - t
        if self.rescore is not None and self.fusion.heading_weight > 0:
            t = time.perf_counter()
            fused = self.rescore(query, fused, self.fusion.heading_weight)
            timings["heading"] = time.perf_counter() - t
        self.last_timings = timings
        return fused[:k]
