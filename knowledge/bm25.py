"""BM25 over a knowledge base's chunks, with rank-bm25.

Tokens are computed once at ingest and stored in the catalog (no pickle). The
in-memory ``BM25Okapi`` is built lazily from them on the first search after a
change (issue #4 replaces this with an incremental index).
"""
from __future__ import annotations

import threading
from collections.abc import Iterable

import numpy as np
from rank_bm25 import BM25Okapi

from knowledge.tokenize import tokenize
from knowledge.types import Chunk, Hit


class BM25Index:
    def __init__(self, k1: float = 1.2, b: float = 0.75):
        self.k1, self.b = k1, b
        self._chunks: list[Chunk] = []
        self._model: BM25Okapi | None = None
        self._lock = threading.Lock()

    def load(self, rows: Iterable[tuple[Chunk, list[str]]]) -> None:
        chunks, corpus = [], []
        for chunk, tokens in rows:
            chunks.append(chunk)
            corpus.append(tokens or ["\u2205"])  # BM25Okapi cannot take an empty document
        with self._lock:
            self._chunks = chunks
            self._model = BM25Okapi(corpus, k1=self.k1, b=self.b) if corpus else None

    def __len__(self) -> int:
        return len(self._chunks)

    def search(self, query: str, k: int) -> list[Hit]:
        tokens = tokenize(query)
        with self._lock:
            model, chunks = self._model, self._chunks
        if model is None or not tokens:
            return []
        scores = model.get_scores(tokens)
        top = np.argsort(-scores, kind="stable")[:k]
        return [Hit(chunks[i], float(scores[i]), scores={"bm25": float(scores[i])})
                for i in top if scores[i] > 0]
