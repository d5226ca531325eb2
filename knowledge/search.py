"""Search over one knowledge base: the retrievers, the heading field, the reranker the
settings choose, and the compression of the hits that answer a question."""
from __future__ import annotations

from pathlib import Path

from knowledge import headings
from knowledge.compress import Compressed, compress
from knowledge.embedders import Embedder
from knowledge.errors import KnowledgeError
from knowledge.rerank import (
    CrossEncoderReranker, NoReranker, Reranker, current_reranker, reranker_dir,
)
from knowledge.retrievers import (
    BM25Retriever, DenseRetriever, FusionConfig, HybridRetriever, RetrievalConfig, Retriever,
)
from knowledge.stores import Stores
from knowledge.types import Hit


class Searcher:
    """Searches ``stores`` as ``retrieval`` says; it only reads (BM25 is built on first
    use, heading vectors missing from an older knowledge base are stored once)."""

    def __init__(self, stores: Stores, retrieval: RetrievalConfig = RetrievalConfig()):
        self.stores, self.retrieval = stores, retrieval
        self._reranker: tuple[str, Reranker] | None = None

    def retriever(self, mode: str = "hybrid", fusion: FusionConfig | None = None,
                  candidates: int | None = None, prf: bool | None = None) -> Retriever:
        """``bm25``, ``dense`` or ``hybrid`` retrieval over the knowledge base."""
        prf = self.retrieval.prf if prf is None else prf
        if mode == "bm25":
            return BM25Retriever(self.stores.bm25, prf)
        if mode == "dense":
            return DenseRetriever(self.stores)
        if mode != "hybrid":
            raise KnowledgeError(f"Unknown retrieval mode {mode!r}: bm25, dense or hybrid.")
        return HybridRetriever([BM25Retriever(self.stores.bm25, prf), DenseRetriever(self.stores)],
                               fusion or self.retrieval.fusion,
                               candidates or self.retrieval.candidates, self.rescore_headings)

    def rescore_headings(self, query: str, hits: list[Hit], weight: float) -> list[Hit]:
        """``hits`` re-scored with their headings (see ``knowledge.headings``)."""
        vectors = self.stores.vectors
        if vectors is None or not any(h.chunk.heading for h in hits):
            return hits
        found = self.stores.heading_vectors({h.chunk.heading for h in hits if h.chunk.heading})
        idf = self.stores.bm25.refresh().idf
        return headings.rescore(hits, query, vectors.query_vector(query), found.get, idf, weight)

    def reranker(self) -> Reranker:
        """The reranker the settings choose for this knowledge base (loaded once)."""
        cfg = self.retrieval
        key, make = "none", NoReranker
        root = self.stores.root
        record = current_reranker(root) if cfg.reranker in ("auto", "trained") else None
        if record is not None:
            folder = reranker_dir(root) / record.path
            key, make = str(folder), lambda: CrossEncoderReranker(folder, cfg.rerank_blend,
                                                                  record.max_length)
        elif cfg.reranker == "cross-encoder":
            if not cfg.reranker_model:
                raise KnowledgeError("retrieval.reranker is cross-encoder but "
                                     "retrieval.reranker_model names no folder.")
            key = cfg.reranker_model
            make = lambda: CrossEncoderReranker(Path(cfg.reranker_model), cfg.rerank_blend)  # noqa: E731
        if self._reranker is None or self._reranker[0] != key:
            self._reranker = (key, make())
        return self._reranker[1]

    def search(self, query: str, top_k: int, candidates: int | None = None,
               mode: str = "hybrid", fusion: FusionConfig | None = None,
               rerank: bool = True) -> list[Hit]:
        """Hits for ``query`` tagged with the knowledge base's name; the top
        ``rerank_top`` fused hits are reordered by the reranker (if any)."""
        n = max(top_k, self.retrieval.rerank_top)
        hits = self.retriever(mode, fusion, candidates).retrieve(query, n)
        if rerank:
            reranker = self.reranker()
            if reranker.name != "none":
                top = self.retrieval.rerank_top
                hits = reranker.rerank(query, hits[:top], top) + hits[top:]
        name = self.stores.name
        return [Hit(h.chunk, h.score, name, h.scores) for h in hits[:top_k]]

    def compress(self, question: str, hits: list[Hit], budget: int,
                 embedder: Embedder) -> list[Compressed]:
        """``hits`` cut to about ``budget`` tokens of ``embedder`` of the sentences most
        relevant to ``question`` (see ``knowledge.compress``)."""
        idf = self.stores.bm25.refresh().idf
        return compress(question, hits, budget, embedder.count_tokens,
                        embed=embedder.embed_passages,
                        embed_query=lambda q: embedder.embed_queries([q])[0], idf=idf)
