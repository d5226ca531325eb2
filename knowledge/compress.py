"""Cut retrieved passages to a token budget for a small model's context.

Every sentence of every passage is scored against the question: cosine similarity of
embeddings (the knowledge base's embedder) plus lexical overlap (BM25 tokens weighted
by IDF), each min-max normalised, plus a small bonus for the passage's rank. Sentences
are taken best first until the budget is spent, then put back in their original order
inside their own passage, so each kept sentence still belongs to its chunk (file, page)
and citations stay exact. Passages left with no sentence are dropped.

>>> from knowledge.types import Chunk, Hit
>>> text = "Metformin is taken with food. The sky is blue. The usual dose is 500 mg."
>>> hit = Hit(Chunk("c1", "d", "leaflet.pdf", text, 3, 0, len(text), 0), 1.0)
>>> (out,) = compress("metformin dose", [hit], budget=14, count=lambda t: len(t.split()))
>>> out.hit.chunk.page, out.text
(3, 'Metformin is taken with food. … The usual dose is 500 mg.')
"""
from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from common.text import sentence_spans
from knowledge.tokenize import tokenize
from knowledge.types import Hit

GAP = " … "


@dataclass(frozen=True)
class Compressed:
    """A passage cut to its kept sentences (``spans`` index ``hit.chunk.text``)."""

    hit: Hit
    spans: tuple[tuple[int, int], ...]

    @property
    def text(self) -> str:
        return GAP.join(self.hit.chunk.text[a:b] for a, b in self.spans)


def compress(question: str, hits: Sequence[Hit], budget: int, count: Callable[[str], int],
             embed: Callable[[list[str]], np.ndarray] | None = None,
             embed_query: Callable[[str], np.ndarray] | None = None,
             idf: Callable[[str], float] | None = None,
             rank_bonus: float = 0.15) -> list[Compressed]:
    """Passages of ``hits`` cut to about ``budget`` tokens (see module doc).
    ``embed``/``embed_query`` add semantic scores; ``idf`` weights query terms."""
    units: list[tuple[int, tuple[int, int], str]] = []  # (hit index, span, text)
    for i, h in enumerate(hits):
        for a, b in sentence_spans(h.chunk.text):
            units.append((i, (a, b), h.chunk.text[a:b]))
    if not units:
        return []
    score = _norm(_lexical(question, [u[2] for u in units], idf))
    if embed is not None and embed_query is not None:
        vecs = embed([u[2] for u in units])
        score = score + _norm(vecs @ embed_query(question))
    rank = np.array([1.0 - u[0] / max(1, len(hits)) for u in units])
    score = score + rank_bonus * rank
    kept: dict[int, list[tuple[int, int]]] = {}
    used = 0
    for j in np.argsort(-score, kind="stable"):
        i, span, text = units[j]
        cost = count(text) + 1
        if used + cost > budget:
            continue
        kept.setdefault(i, []).append(span)
        used += cost
    return [Compressed(hits[i], tuple(sorted(kept[i]))) for i in range(len(hits)) if i in kept]


def _lexical(question: str, sentences: list[str], idf) -> np.ndarray:
    terms = set(tokenize(question))
    weight = idf or (lambda t: 1.0)
    out = []
    for s in sentences:
        toks = tokenize(s)
        found = terms.intersection(toks)
        out.append(sum(weight(t) for t in found) / math.sqrt(1 + len(toks)) if found else 0.0)
    return np.array(out, dtype=np.float64)


def _norm(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, dtype=np.float64)
    span = x.max() - x.min()
    return (x - x.min()) / span if span > 0 else np.zeros_like(x)
