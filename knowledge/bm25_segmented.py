"""BM25 over immutable segment files (``knowledge.bm25_segment``) plus an in-memory delta,
scored exactly as ``knowledge.bm25.BM25Index`` scores (the same Okapi formula and Lucene
IDF, the same float arithmetic in the same order), so the scores are the same.

Passages removed from a segment are masked (``dead``) and left out of every statistic;
passages added since the last segment sit in the delta (dicts, as in ``BM25Index``) until
the owner writes them as a segment (``knowledge.bm25_live``). A search visits only its
terms' postings: per segment with numpy (gather, score, ``bincount``, partial sort), in
the delta with Python; only the ``k`` best passages are then read from the catalog
(``fetch``). Equal scores are ordered by position: older segments first, then the delta.
"""
from __future__ import annotations

import heapq
import math
import threading
from collections import Counter
from collections.abc import Callable

import numpy as np

from knowledge.bm25_segment import Segment
from knowledge.tokenize import tokenize
from knowledge.types import Chunk, Hit

Fetch = Callable[[list[str]], dict[str, Chunk]]  # chunk ids -> the chunks that exist
Tokens = Callable[[list[str]], dict[str, list[str]]]  # chunk ids -> their BM25 tokens


class _Delta:
    """Passages added since the last segment was written."""

    def __init__(self):
        self.counts: dict[str, Counter] = {}
        self.lengths: dict[str, int] = {}
        self.postings: dict[str, dict[str, int]] = {}
        self.position: dict[str, int] = {}  # order of arrival, for equal scores
        self._next = 0

    def add(self, chunk_id: str, counts: Counter, length: int) -> None:
        self.counts[chunk_id], self.lengths[chunk_id] = counts, length
        self.position[chunk_id], self._next = self._next, self._next + 1
        for term, tf in counts.items():
            self.postings.setdefault(term, {})[chunk_id] = tf

    def remove(self, chunk_id: str) -> int | None:
        """Remove a passage; its token count, or None when it is not here."""
        counts = self.counts.pop(chunk_id, None)
        if counts is None:
            return None
        for term in counts:
            posting = self.postings[term]
            del posting[chunk_id]
            if not posting:
                del self.postings[term]
        del self.position[chunk_id]
        return self.lengths.pop(chunk_id)

    def rows(self) -> list[tuple[str, Counter, int]]:
        return [(cid, counts, self.lengths[cid]) for cid, counts in self.counts.items()]


class SegmentedBM25:
    """Search, add and remove over segments and a delta. ``fetch`` reads hits' chunks,
    ``tokens_of`` passages' tokens (for pseudo-relevance feedback)."""

    def __init__(self, fetch: Fetch, tokens_of: Tokens, k1: float = 1.2, b: float = 0.75):
        self.k1, self.b = k1, b
        self._fetch, self._tokens_of = fetch, tokens_of
        self._lock = threading.RLock()
        self.changes = 0  # bumped by every add and remove
        self.replace([], [])

    # --- the parts, swapped by the owner -----------------------------------------------
    def replace(self, segments: list[Segment], dead: list[np.ndarray | None],
                delta: _Delta | None = None) -> None:
        """Search ``segments`` (``dead``: each one's mask of removed rows, or None) and
        ``delta`` (empty when None) from now on."""
        with self._lock:
            self.segments, self.dead = list(segments), list(dead)
            self.delta = delta if delta is not None else _Delta()
            self._count = len(self.delta.lengths) + sum(
                s.count - (int(d.sum()) if d is not None else 0) for s, d in zip(segments, dead))
            self._total = sum(self.delta.lengths.values()) + sum(
                s.total - (int(s.lengths[d].sum()) if d is not None else 0)
                for s, d in zip(segments, dead))

    def parts(self) -> tuple[list[Segment], list[np.ndarray | None], _Delta]:
        """The segments, copies of their dead masks, and the delta, as they are now."""
        with self._lock:
            return (list(self.segments), [None if d is None else d.copy() for d in self.dead],
                    self.delta)

    # --- membership -----------------------------------------------------------------
    def __len__(self) -> int:
        return self._count

    def __contains__(self, chunk_id: str) -> bool:
        with self._lock:
            return chunk_id in self.delta.lengths or self._locate(chunk_id) is not None

    def _locate(self, chunk_id: str) -> tuple[int, int] | None:
        """(segment, row) of a live passage in a segment."""
        for s in range(len(self.segments) - 1, -1, -1):
            row = self.segments[s].row_of(chunk_id)
            if row is not None and (self.dead[s] is None or not self.dead[s][row]):
                return s, row
        return None

    def ids(self) -> set[str]:
        with self._lock:
            found = set(self.delta.lengths)
            for seg, dead in zip(self.segments, self.dead):
                ids = seg.chunk_ids()
                found.update(ids if dead is None else
                             (ids[i] for i in np.flatnonzero(~dead).tolist()))
            return found

    def add(self, chunk_id: str, tokens: list[str]) -> None:
        with self._lock:
            self.remove(chunk_id)
            self.delta.add(chunk_id, Counter(tokens), len(tokens))
            self._count, self._total = self._count + 1, self._total + len(tokens)
            self.changes += 1

    def remove(self, chunk_id: str) -> None:
        with self._lock:
            length = self.delta.remove(chunk_id)
            if length is None:
                found = self._locate(chunk_id)
                if found is None:
                    return
                s, row = found
                if self.dead[s] is None:
                    self.dead[s] = np.zeros(self.segments[s].count, bool)
                self.dead[s][row] = True
                length = int(self.segments[s].lengths[row])
            self._count, self._total = self._count - 1, self._total - length
            self.changes += 1

    # --- scoring --------------------------------------------------------------------
    def _postings(self, term: str) -> tuple[list[tuple[int, np.ndarray, np.ndarray]],
                                            dict[str, int] | None, int]:
        """``term``'s live postings per segment, in the delta, and its document frequency."""
        found, df = [], 0
        for s, seg in enumerate(self.segments):
            posting = seg.postings(term)
            if posting is None:
                continue
            rows, tfs = posting
            if self.dead[s] is not None:
                keep = ~self.dead[s][rows]
                rows, tfs = rows[keep], tfs[keep]
            if len(rows):
                found.append((s, rows, tfs))
                df += len(rows)
        delta = self.delta.postings.get(term)
        return found, delta, df + (len(delta) if delta else 0)

    def idf(self, term: str) -> float:
        """Inverse document frequency of a (tokenized) term; rare terms weigh more."""
        with self._lock:
            n, df = self._count, self._postings(term)[2]
        return math.log(1.0 + (n - df + 0.5) / (df + 0.5))

    def ranked(self, weights: dict[str, float], k: int) -> list[tuple[float, str]]:
        """``(score, chunk id)`` of the ``k`` best passages for the weighted terms."""
        with self._lock:
            n = self._count
            if not n or not weights:
                return []
            avgdl = self._total / n or 1.0
            per_segment: list[list] = [[] for _ in self.segments]
            in_delta = []
            for term, weight in weights.items():
                found, delta, df = self._postings(term)
                if not df:
                    continue
                idf = weight * math.log(1.0 + (n - df + 0.5) / (df + 0.5))
                for s, rows, tfs in found:
                    per_segment[s].append((idf, rows, tfs))
                if delta:
                    in_delta.append((idf, delta))
            best = [hit for s, terms in enumerate(per_segment) if terms
                    for hit in self._segment_best(s, terms, avgdl, k)]
            best += self._delta_best(in_delta, avgdl, k)
            best.sort(key=lambda hit: (-hit[0], hit[1]))
            return [(score, cid if cid is not None else self.segments[s].chunk_id(row))
                    for score, (s, row), cid in best[:k]]

    def _segment_best(self, s: int, terms: list, avgdl: float, k: int) -> list:
        """``(score, (s, row), None)`` of segment ``s``'s ``k`` best rows."""
        seg, k1, b = self.segments[s], self.k1, self.b
        rows_per_term, parts = [], []
        for idf, rows, tfs in terms:
            tf = tfs.astype(np.float64)
            norm = tf + k1 * (1.0 - b + b * seg.lengths[rows] / avgdl)
            rows_per_term.append(rows)
            parts.append(idf * tf * (k1 + 1.0) / norm)
        rows = np.concatenate(rows_per_term)
        scores = np.bincount(rows, weights=np.concatenate(parts), minlength=seg.count)
        if len(terms) == 1:
            found = rows
        else:
            touched = np.zeros(seg.count, bool)
            touched[rows] = True
            found = np.flatnonzero(touched)
        top = scores[found]
        if len(found) > k:
            kth = np.partition(top, len(found) - k)[len(found) - k]
            keep = top >= kth
            found, top = found[keep], top[keep]
        order = np.lexsort((found, -top))[:k]
        return [(float(top[i]), (s, int(found[i])), None) for i in order.tolist()]

    def _delta_best(self, terms: list, avgdl: float, k: int) -> list:
        """``(score, (after the segments, arrival), chunk id)`` of the delta's ``k`` best."""
        k1, b, lengths = self.k1, self.b, self.delta.lengths
        scores: dict[str, float] = {}
        for idf, posting in terms:
            for cid, tf in posting.items():
                norm = tf + k1 * (1.0 - b + b * lengths[cid] / avgdl)
                scores[cid] = scores.get(cid, 0.0) + idf * tf * (k1 + 1.0) / norm
        best = heapq.nlargest(k, scores.items(), key=lambda kv: kv[1])
        after, position = len(self.segments), self.delta.position
        return [(score, (after, position[cid]), cid) for cid, score in best]

    # --- the BM25Index interface ------------------------------------------------------
    def search(self, query: str, k: int) -> list[Hit]:
        return self.search_terms(dict.fromkeys(tokenize(query), 1.0), k)

    def search_terms(self, weights: dict[str, float], k: int) -> list[Hit]:
        """BM25 with a weight per query term (1.0 for the user's own terms)."""
        ranked = self.ranked(weights, k)
        chunks = self._fetch([cid for _, cid in ranked])
        return [Hit(chunks[cid], s, scores={"bm25": s}) for s, cid in ranked if cid in chunks]

    def expand(self, query: str, docs: int = 5, terms: int = 10,
               weight: float = 0.3) -> dict[str, float]:
        """Pseudo-relevance feedback, as ``BM25Index.expand``: the query's terms at weight
        1, plus the ``terms`` most characteristic terms of the top ``docs`` passages."""
        base = dict.fromkeys(tokenize(query), 1.0)
        first = [cid for _, cid in self.ranked(base, docs)]
        tokens = self._tokens_of(first)
        pool: dict[str, float] = {}
        for cid in first:
            counts = Counter(tokens.get(cid, ()))
            length = sum(counts.values())
            for t, tf in counts.items():
                if t not in base:
                    pool[t] = pool.get(t, 0.0) + tf / length
        scored = sorted(((v * self.idf(t), t) for t, v in pool.items()), reverse=True)[:terms]
        if scored:
            top = scored[0][0]
            base.update({t: weight * v / top for v, t in scored})
        return base
