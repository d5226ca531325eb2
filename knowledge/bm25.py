"""Incremental BM25 over a knowledge base's canonical chunks.

An inverted index (term -> {chunk id: term frequency}) kept in memory and updated per
document: adding or deleting a document touches only its chunks' postings, and
searching visits only the postings of the query's terms. Tokens are computed once at
ingest and stored in the catalog (no pickle); the index is rebuilt from them at start.

rank-bm25's ``BM25Okapi`` (the library first used here) precomputes IDF for a fixed
corpus, so every change meant a rebuild: 2.3 s at 20k chunks, on the first search after
each added document (benchmarks/ingest_incremental.py). Scores follow the same Okapi
formula, with Lucene's always-positive IDF ``ln(1 + (N - df + 0.5) / (df + 0.5))``.

>>> from knowledge.types import Chunk
>>> idx = BM25Index()
>>> c = lambda i, t: Chunk(i, "d", "f", t, 0, 0, len(t), 0)
>>> idx.add(c("a", "x"), ["insulin", "dose"]); idx.add(c("b", "y"), ["aspirin", "dose"])
>>> [h.chunk.chunk_id for h in idx.search("insulin dose", 5)]
['a', 'b']
>>> idx.remove("a"); [h.chunk.chunk_id for h in idx.search("insulin", 5)]
[]
"""
from __future__ import annotations

import heapq
import math
import threading
from collections import Counter
from collections.abc import Iterable

from knowledge.tokenize import tokenize
from knowledge.types import Chunk, Hit


class BM25Index:
    def __init__(self, k1: float = 1.2, b: float = 0.75):
        self.k1, self.b = k1, b
        self._chunks: dict[str, Chunk] = {}
        self._terms: dict[str, Counter] = {}  # chunk id -> its term counts (for removal)
        self._length: dict[str, int] = {}
        self._postings: dict[str, dict[str, int]] = {}
        self._total = 0
        self._lock = threading.RLock()

    def __len__(self) -> int:
        return len(self._chunks)

    def __contains__(self, chunk_id: str) -> bool:
        return chunk_id in self._chunks

    def ids(self) -> set[str]:
        with self._lock:
            return set(self._chunks)

    def load(self, rows: Iterable[tuple[Chunk, list[str]]]) -> None:
        with self._lock:
            self.__init__(self.k1, self.b)
            for chunk, tokens in rows:
                self.add(chunk, tokens)

    def add(self, chunk: Chunk, tokens: list[str]) -> None:
        with self._lock:
            if chunk.chunk_id in self._chunks:
                self.remove(chunk.chunk_id)
            counts = Counter(tokens)
            self._chunks[chunk.chunk_id] = chunk
            self._terms[chunk.chunk_id] = counts
            self._length[chunk.chunk_id] = len(tokens)
            self._total += len(tokens)
            for term, tf in counts.items():
                self._postings.setdefault(term, {})[chunk.chunk_id] = tf

    def remove(self, chunk_id: str) -> None:
        with self._lock:
            if chunk_id not in self._chunks:
                return
            for term in self._terms.pop(chunk_id):
                posting = self._postings[term]
                del posting[chunk_id]
                if not posting:
                    del self._postings[term]
            self._total -= self._length.pop(chunk_id)
            del self._chunks[chunk_id]

    def idf(self, term: str) -> float:
        """Inverse document frequency of a (tokenized) term; rare terms weigh more."""
        with self._lock:
            n, df = len(self._chunks), len(self._postings.get(term, ()))
        return math.log(1.0 + (n - df + 0.5) / (df + 0.5))

    def search(self, query: str, k: int) -> list[Hit]:
        return self.search_terms(dict.fromkeys(tokenize(query), 1.0), k)

    def search_terms(self, weights: dict[str, float], k: int) -> list[Hit]:
        """BM25 with a weight per query term (1.0 for the user's own terms)."""
        with self._lock:
            n = len(self._chunks)
            if not n or not weights:
                return []
            avgdl = self._total / n or 1.0
            k1, b = self.k1, self.b
            scores: dict[str, float] = {}
            for term, weight in weights.items():
                posting = self._postings.get(term)
                if not posting:
                    continue
                idf = weight * math.log(1.0 + (n - len(posting) + 0.5) / (len(posting) + 0.5))
                for cid, tf in posting.items():
                    norm = tf + k1 * (1.0 - b + b * self._length[cid] / avgdl)
                    scores[cid] = scores.get(cid, 0.0) + idf * tf * (k1 + 1.0) / norm
            best = heapq.nlargest(k, scores.items(), key=lambda kv: kv[1])
            return [Hit(self._chunks[cid], s, scores={"bm25": s}) for cid, s in best]

    def expand(self, query: str, docs: int = 5, terms: int = 10,
               weight: float = 0.3) -> dict[str, float]:
        """Pseudo-relevance feedback (RM3-like): the query's terms at weight 1, plus the
        ``terms`` most characteristic terms of the top ``docs`` hits at up to ``weight``."""
        base = dict.fromkeys(tokenize(query), 1.0)
        first = self.search_terms(base, docs)
        pool: dict[str, float] = {}
        with self._lock:
            for h in first:
                counts = self._terms.get(h.chunk.chunk_id)
                if not counts:
                    continue
                length = sum(counts.values())
                for t, tf in counts.items():
                    if t not in base:
                        pool[t] = pool.get(t, 0.0) + tf / length
        scored = sorted(((v * self.idf(t), t) for t, v in pool.items()), reverse=True)[:terms]
        if scored:
            top = scored[0][0]
            base.update({t: weight * v / top for v, t in scored})
        return base
