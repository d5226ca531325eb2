"""Rerankers: reorder the fused candidates of a query. ``none`` is always available.

* ``none``: keep the fused order.
* ``cross-encoder``: sentence-transformers ``CrossEncoder`` on a local model folder (a
  user's, or the one trained for a knowledge base by ``finetune.reranker``, found
  through ``current_reranker``).

The reranked list blends the cross-encoder's order with the fused order by reciprocal
rank (``blend`` is the weight of the fused list): a small reranker trained on
generated questions is a strong second opinion, not a replacement for BM25 + vectors.

>>> from knowledge.types import Chunk, Hit
>>> c = lambda i: Chunk(i, "d", "f.txt", i, 1, 0, 1, 0)
>>> hits = [Hit(c("a"), 0.9), Hit(c("b"), 0.8), Hit(c("c"), 0.7)]
>>> [h.chunk.chunk_id for h in NoReranker().rerank("q", hits, 2)]
['a', 'b']
>>> [h.chunk.chunk_id for h in blend_ranks(hits, [0.1, 0.2, 5.0], blend=0.0)]
['c', 'b', 'a']
"""
from __future__ import annotations

import json
import threading
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

from knowledge.errors import KnowledgeError
from knowledge.types import Hit



@dataclass(frozen=True)
class RerankerRecord:
    version: int
    path: str
    base_model: str
    questions: int
    groups: int
    loss_first: float
    loss_last: float
    seconds: dict[str, float] = field(default_factory=dict)
    created_at: str = ""
    max_length: int = 256  # tokens of (question, passage) it was trained on; used at search


def reranker_dir(kb_root: Path) -> Path:
    return kb_root / "reranker"


def current_reranker(kb_root: Path) -> RerankerRecord | None:
    """The record of the knowledge base's current trained reranker, if any."""
    pointer = reranker_dir(kb_root) / "current.json"
    if not pointer.is_file():
        return None
    data = json.loads(pointer.read_text(encoding="utf-8"))
    record = RerankerRecord(**data)
    return record if (reranker_dir(kb_root) / record.path / "config.json").is_file() else None


class Reranker(Protocol):
    name: str

    def rerank(self, query: str, hits: Sequence[Hit], k: int) -> list[Hit]: ...


class NoReranker:
    name = "none"

    def rerank(self, query: str, hits: Sequence[Hit], k: int) -> list[Hit]:
        return list(hits[:k])


def blend_ranks(hits: Sequence[Hit], scores: Sequence[float], blend: float,
                rrf_k: int = 10) -> list[Hit]:
    """New hits ordered by ``(1 - blend) / (rrf_k + rerank rank) + blend / (rrf_k + fused
    rank)``, each carrying ``scores["rerank"]``."""
    order = sorted(range(len(hits)), key=lambda i: -scores[i])
    rerank_rank = {i: r for r, i in enumerate(order, start=1)}
    combined = [(1 - blend) / (rrf_k + rerank_rank[i]) + blend / (rrf_k + i + 1)
                for i in range(len(hits))]
    best = sorted(range(len(hits)), key=lambda i: -combined[i])
    return [Hit(hits[i].chunk, combined[i], hits[i].kb,
                {**hits[i].scores, "rerank": float(scores[i])}) for i in best]


class CrossEncoderReranker:
    """A sentence-transformers cross-encoder loaded from a local folder (safetensors)."""

    name = "cross-encoder"

    def __init__(self, folder: Path, blend: float = 0.5, max_length: int = 256,
                 batch_size: int = 16):
        folder = Path(folder).expanduser()
        if not (folder / "config.json").is_file():
            raise KnowledgeError(
                f"{folder} is not a cross-encoder model folder (no config.json). Point "
                "retrieval.reranker_model at a local sentence-transformers CrossEncoder, "
                "or train the knowledge base's reranker.")
        from sentence_transformers import CrossEncoder

        self.folder, self.blend, self.batch_size = folder, blend, batch_size
        self.model = CrossEncoder(str(folder), device="cpu", max_length=max_length,
                                  local_files_only=True, trust_remote_code=False)
        self._lock = threading.Lock()

    def scores(self, query: str, passages: Sequence[str]) -> list[float]:
        if not passages:
            return []
        with self._lock:
            out = self.model.predict([(query, p) for p in passages],
                                     batch_size=self.batch_size, show_progress_bar=False,
                                     convert_to_numpy=True)
        return [float(s) for s in out]

    def rerank(self, query: str, hits: Sequence[Hit], k: int) -> list[Hit]:
        scores = self.scores(query, [h.chunk.index_text for h in hits])
        return blend_ranks(hits, scores, self.blend)[:k]
