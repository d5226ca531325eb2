"""A knowledge base's passages written to a folder, for work done in another process.

Only one process opens a knowledge base (its store is locked to it), so a background
worker gets a snapshot instead: ``chunks.jsonl`` (each passage with its BM25 tokens) and,
when asked, ``vectors.npy`` with ``vector_ids.json`` (the dense vectors as stored). A
``SnapshotRetriever`` searches a snapshot the way the knowledge base's hybrid search
does: BM25 and cosine similarity, fused with the same settings (the heading field aside).
"""
from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from knowledge.bm25 import BM25Index
from knowledge.embedders import Embedder
from knowledge.retrievers import FusionConfig, HybridRetriever
from knowledge.types import Chunk, Hit

CHUNKS = "chunks.jsonl"
VECTORS = "vectors.npy"
VECTOR_IDS = "vector_ids.json"


@dataclass(frozen=True)
class Snapshot:
    chunks: list[tuple[Chunk, list[str]]]  # (passage, its BM25 tokens), in catalog order
    embedder: str  # the embedder the vectors were made with
    ids: list[str]  # ids of the rows of ``vectors`` (empty without vectors)
    vectors: np.ndarray | None


def write_snapshot(kb, folder: Path, vectors: bool = False) -> int:
    """Write ``kb``'s searchable passages (and its vectors) into ``folder``; how many."""
    folder.mkdir(parents=True, exist_ok=True)
    count = 0
    with (folder / CHUNKS).open("w", encoding="utf-8") as f:
        for chunk, tokens in kb.catalog.ready_chunks_with_tokens():
            f.write(json.dumps({"chunk": asdict(chunk), "tokens": tokens},
                               ensure_ascii=False) + "\n")
            count += 1
    meta = {"embedder": kb.manifest.embedder, "ids": []}
    if vectors and kb.vectors is not None:
        got = kb.vectors.collection.get(include=["embeddings"])
        meta["ids"] = list(got["ids"])
        np.save(folder / VECTORS, np.asarray(got["embeddings"], dtype=np.float32))
    (folder / VECTOR_IDS).write_text(json.dumps(meta), encoding="utf-8")
    return count


def read_snapshot(folder: Path) -> Snapshot:
    chunks = []
    with (folder / CHUNKS).open(encoding="utf-8") as f:
        for line in f:
            row = json.loads(line)
            chunks.append((Chunk(**row["chunk"]), row["tokens"]))
    meta = json.loads((folder / VECTOR_IDS).read_text(encoding="utf-8"))
    path = folder / VECTORS
    vectors = np.load(path, allow_pickle=False) if path.is_file() and meta["ids"] else None
    return Snapshot(chunks, meta["embedder"], meta["ids"], vectors)


class _BM25:
    name = "bm25"

    def __init__(self, chunks: list[tuple[Chunk, list[str]]]):
        self.index = BM25Index()
        self.index.load(chunks)

    def retrieve(self, query: str, k: int) -> list[Hit]:
        return self.index.search(query, k)


class _Dense:
    name = "dense"

    def __init__(self, snapshot: Snapshot, embedder: Embedder):
        by_id = {c.chunk_id: c for c, _ in snapshot.chunks}
        keep = [i for i, cid in enumerate(snapshot.ids) if cid in by_id]
        self.chunks = [by_id[snapshot.ids[i]] for i in keep]
        matrix = snapshot.vectors[keep] if keep else np.zeros((0, embedder.dim), np.float32)
        norms = np.linalg.norm(matrix, axis=1, keepdims=True)
        self.matrix = matrix / np.where(norms == 0, 1, norms)
        self.embedder = embedder

    def retrieve(self, query: str, k: int) -> list[Hit]:
        if not self.chunks:
            return []
        q = np.asarray(self.embedder.embed_queries([query])[0], dtype=np.float32)
        scores = self.matrix @ (q / (np.linalg.norm(q) or 1.0))
        top = np.argsort(-scores)[:k]
        return [Hit(self.chunks[i], float(scores[i]), scores={"dense": float(scores[i])})
                for i in top]


def snapshot_retriever(snapshot: Snapshot, embedder: Embedder | None, fusion: FusionConfig,
                       candidates: int) -> HybridRetriever:
    """Hybrid search over a snapshot: BM25, plus dense when it has vectors and
    ``embedder`` (the one that made them) is given."""
    parts = [_BM25(snapshot.chunks)]
    if snapshot.vectors is not None and embedder is not None:
        parts.append(_Dense(snapshot, embedder))
    return HybridRetriever(parts, FusionConfig(fusion.method, fusion.rrf_k, fusion.dense_weight,
                                               heading_weight=0.0), candidates)
