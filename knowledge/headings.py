"""The heading field: a chunk's section heading scored against the query on its own.

A chunk is indexed as "heading + text", so its heading already counts, diluted, in BM25
and in its vector. Scored alone as well (as a title field is in BM25F), a heading that
matches the question ("What are the treatments for Syphilis?", "Dosage in kidney
disease") lifts the chunks under it. The fused candidates are re-scored as

    (1 - w) * fused + w * (2/3 * dense(query, heading) + 1/3 * bm25(query, heading))

each part min-max normalised over the candidates; the heading's BM25 uses the knowledge
base's own IDF. Chunks without a heading score 0 on the heading part (no match), and when
no candidate has a heading the hits come back unchanged. Measured in
benchmarks/retrieval.md: w = 0.3 lifted MedQuAD x LiveQA nDCG@10 from 0.661 to 0.693 and
moved SciFact by -0.004 (within noise).

>>> import numpy as np
>>> from knowledge.types import Chunk, Hit
>>> c = lambda i, h: Chunk(i, "d", "f.docx", "text", 0, 0, 4, 0, h)
>>> hits = [Hit(c("a", "Storage"), 1.0), Hit(c("b", "Dosage"), 0.96), Hit(c("c", ""), 0.8)]
>>> vecs = {"Storage": np.array([1.0, 0.0]), "Dosage": np.array([0.0, 1.0])}
>>> out = rescore(hits, "dosage?", np.array([0.0, 1.0]), vecs.get, lambda t: 1.0, 0.3)
>>> [(h.chunk.chunk_id, round(h.score, 2)) for h in out]
[('b', 0.86), ('a', 0.7), ('c', 0.0)]
>>> rescore(hits[2:], "dosage?", np.array([0.0, 1.0]), vecs.get, lambda t: 1.0, 0.3) == hits[2:]
True
"""
from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Sequence

import numpy as np

from knowledge.tokenize import tokenize
from knowledge.types import Hit

DENSE_SHARE = 2 / 3  # of the heading part; the rest is the heading's BM25 (measured)


def rescore(hits: Sequence[Hit], query: str, query_vector: np.ndarray,
            vector_of: Callable[[str], np.ndarray | None], idf: Callable[[str], float],
            weight: float, k1: float = 1.2, b: float = 0.75) -> list[Hit]:
    """New hits, re-scored with their headings and sorted (``scores["heading"]`` added)."""
    headings = [h.chunk.heading for h in hits]
    if weight <= 0 or not any(headings):
        return list(hits)
    distinct = {x: tokenize(x) for x in set(headings)}
    sims = {x: _cosine(query_vector, vector_of(x)) for x in distinct if x}
    dense = np.array([sims.get(x, 0.0) for x in headings])
    tokens = [distinct[x] for x in headings]
    avg = float(np.mean([len(t) for t in tokens if t] or [1]))
    terms = set(tokenize(query))
    per_heading = {x: _bm25(terms, t, avg, idf, k1, b) for x, t in distinct.items()}
    lexical = np.array([per_heading[x] for x in headings])
    part = DENSE_SHARE * _minmax(dense) + (1 - DENSE_SHARE) * _minmax(lexical)
    score = (1 - weight) * _minmax(np.array([h.score for h in hits])) + weight * part
    out = [Hit(h.chunk, float(s), h.kb, {**h.scores, "heading": float(p), "fused": float(s)})
           for h, s, p in zip(hits, score, part)]
    return sorted(out, key=lambda h: -h.score)


def _cosine(q: np.ndarray, v: np.ndarray | None) -> float:
    if v is None:
        return 0.0
    norm = float(np.linalg.norm(q) * np.linalg.norm(v)) or 1.0
    return float(q @ v) / norm


def _bm25(terms: set[str], tokens: list[str], avg: float, idf, k1: float, b: float) -> float:
    counts = Counter(tokens)
    norm = k1 * (1 - b + b * len(tokens) / avg)
    return sum(idf(t) * n * (k1 + 1) / (n + norm) for t, n in counts.items() if t in terms)


def _minmax(v: np.ndarray) -> np.ndarray:
    lo, hi = (float(v.min()), float(v.max())) if len(v) else (0.0, 0.0)
    return (v - lo) / (hi - lo) if hi > lo else np.zeros_like(v, dtype=float)
