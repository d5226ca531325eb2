"""Fusing ranked lists from several retrievers.

Reciprocal rank fusion: each list contributes ``1 / (k + rank)`` (rank from 1) to a
chunk's fused score, keyed by chunk id, never by text.

>>> from knowledge.types import Chunk, Hit
>>> c = lambda i: Chunk(i, "d", "f.txt", i, 1, 0, 1, 0)
>>> bm25 = [Hit(c("a"), 9.0), Hit(c("b"), 5.0)]
>>> dense = [Hit(c("b"), 0.9), Hit(c("c"), 0.8)]
>>> fused = reciprocal_rank_fusion({"bm25": bm25, "dense": dense}, k=60)
>>> [h.chunk.chunk_id for h in fused]
['b', 'a', 'c']
>>> round(fused[0].score, 5)  # 1/62 + 1/61
0.03252
"""
from __future__ import annotations

from collections.abc import Mapping, Sequence

from knowledge.types import Hit


def reciprocal_rank_fusion(
    ranked: Mapping[str, Sequence[Hit]], k: int = 60, limit: int | None = None
) -> list[Hit]:
    """Fuse ``{retriever_name: hits_in_rank_order}`` into new ``Hit``s.

    Each returned hit carries the per-retriever raw scores in ``scores`` plus
    ``scores["fused"]``. Inputs are not modified. Ties keep first-seen order.
    """
    fused: dict[str, float] = {}
    per_source: dict[str, dict[str, float]] = {}
    first: dict[str, Hit] = {}
    for name, hits in ranked.items():
        for rank, hit in enumerate(hits, start=1):
            cid = hit.chunk.chunk_id
            if name in per_source.get(cid, {}):
                continue  # a retriever listing the same chunk twice counts once
            first.setdefault(cid, hit)
            fused[cid] = fused.get(cid, 0.0) + 1.0 / (k + rank)
            per_source.setdefault(cid, {})[name] = hit.score
    order = sorted(fused, key=lambda cid: -fused[cid])
    if limit is not None:
        order = order[:limit]
    out = []
    for cid in order:
        # keep an input hit's own detail (a knowledge base's bm25/dense scores when fusing
        # several knowledge bases), then each list's score, then the fused score
        detail = {n: v for n, v in first[cid].scores.items() if n != "fused"}
        out.append(Hit(first[cid].chunk, fused[cid], first[cid].kb,
                       {**detail, **per_source[cid], "fused": fused[cid]}))
    return out


def weighted_score_fusion(
    ranked: Mapping[str, Sequence[Hit]], weights: Mapping[str, float], limit: int | None = None
) -> list[Hit]:
    """Fuse by min-max normalised scores, weighted per retriever (missing = 0).

    >>> from knowledge.types import Chunk, Hit
    >>> c = lambda i: Chunk(i, "d", "f.txt", i, 1, 0, 1, 0)
    >>> bm25 = [Hit(c("a"), 10.0), Hit(c("b"), 5.0), Hit(c("c"), 0.0)]
    >>> dense = [Hit(c("c"), 0.9), Hit(c("b"), 0.7), Hit(c("a"), 0.5)]
    >>> [(h.chunk.chunk_id, round(h.score, 2)) for h in
    ...  weighted_score_fusion({"bm25": bm25, "dense": dense}, {"bm25": 0.3, "dense": 0.7})]
    [('c', 0.7), ('b', 0.5), ('a', 0.3)]
    """
    fused: dict[str, float] = {}
    per_source: dict[str, dict[str, float]] = {}
    first: dict[str, Hit] = {}
    for name, hits in ranked.items():
        if not hits:
            continue
        scores = [h.score for h in hits]
        lo, hi = min(scores), max(scores)
        span = (hi - lo) or 1.0
        for hit in hits:
            cid = hit.chunk.chunk_id
            if name in per_source.get(cid, {}):
                continue
            first.setdefault(cid, hit)
            fused[cid] = fused.get(cid, 0.0) + weights.get(name, 0.0) * (hit.score - lo) / span
            per_source.setdefault(cid, {})[name] = hit.score
    order = sorted(fused, key=lambda cid: -fused[cid])[:limit]
    return [Hit(first[cid].chunk, fused[cid], first[cid].kb, {**per_source[cid], "fused": fused[cid]})
            for cid in order]
