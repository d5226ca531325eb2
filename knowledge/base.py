"""A knowledge base: catalog (truth) + Chroma collection + BM25, with a versioned manifest."""
from __future__ import annotations

import json
import logging
import re
import threading
from dataclasses import asdict, dataclass
from datetime import datetime, timezone
from pathlib import Path

from knowledge.bm25 import BM25Index
from knowledge.catalog import Catalog
from knowledge.embedders import Embedder
from knowledge.errors import IndexMismatch, KnowledgeError
from knowledge.fusion import reciprocal_rank_fusion
from knowledge.tokenize import tokenize
from knowledge.types import Chunk, DocumentRecord, Hit
from knowledge.vectors import VectorIndex

log = logging.getLogger(__name__)

FORMAT_VERSION = 1
KB_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]{0,62}$")


@dataclass(frozen=True)
class Manifest:
    """What an index was built with. Saved as ``manifest.json`` next to the catalog."""

    name: str
    format_version: int
    embedder: str
    embedder_dim: int
    chunk_size: int
    chunk_overlap: int
    created_at: str

    def save(self, path: Path) -> None:
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(asdict(self), indent=2), encoding="utf-8")
        tmp.replace(path)

    @classmethod
    def load(cls, path: Path) -> "Manifest":
        data = json.loads(path.read_text(encoding="utf-8"))
        if data.get("format_version") != FORMAT_VERSION:
            raise IndexMismatch(
                f"Knowledge base at {path.parent} has index format "
                f"{data.get('format_version')}, this Docent reads {FORMAT_VERSION}: re-index it "
                "(delete the knowledge base and ingest the files again)."
            )
        return cls(**data)


def validate_kb_name(name: str) -> str:
    if not KB_NAME.match(name or ""):
        raise KnowledgeError(
            f"Invalid knowledge base name {name!r}: use 1-63 letters, digits, '-' or '_', "
            "starting with a letter or digit."
        )
    return name


class KnowledgeBase:
    """Add, delete and search documents. Writes are serialised by one lock."""

    def __init__(self, root: Path, manifest: Manifest, embedder: Embedder, chroma_client,
                 rrf_k: int = 60):
        if manifest.embedder != embedder.name:
            raise IndexMismatch(
                f"Knowledge base {manifest.name!r} was built with the embedder "
                f"{manifest.embedder!r}, but the settings choose {embedder.name!r}. "
                f"Set embedder.model to {manifest.embedder!r}, or re-index the knowledge base."
            )
        self.name = manifest.name
        self.root = root
        self.manifest = manifest
        self.rrf_k = rrf_k
        self.catalog = Catalog(root / "catalog.sqlite3")
        self.vectors = VectorIndex(chroma_client, f"kb_{manifest.name}", embedder)
        self.bm25 = BM25Index()
        self._lock = threading.RLock()
        self._bm25_stale = True
        self._recover()

    def _recover(self) -> None:
        """Drop documents a crash left half-written (catalog says pending)."""
        for doc_id in self.catalog.pending_doc_ids():
            log.warning("Removing half-ingested document %s from %s", doc_id, self.name)
            self.vectors.delete_document(doc_id)
            self.catalog.delete(doc_id)

    # --- writes -------------------------------------------------------------
    def add_document(self, doc_id: str, source: str, sha256: str, pages: int,
                     chunks: list[Chunk]) -> DocumentRecord:
        """Embed and store ``chunks`` as one document, replacing an older version of ``source``."""
        vectors = self.vectors.embedder.embed_passages([c.text for c in chunks])
        tokens = [tokenize(c.text) for c in chunks]
        with self._lock:
            old = self.catalog.find_by_source(source)
            self.catalog.add_pending(doc_id, source, sha256, pages, chunks, tokens)
            self.vectors.delete_document(doc_id)
            self.vectors.add(chunks, vectors)
            if old is not None and old.doc_id != doc_id:
                self.vectors.delete_document(old.doc_id)
                self.catalog.delete(old.doc_id)
            self.catalog.mark_ready(doc_id)
            self._bm25_stale = True
        record = next(d for d in self.catalog.documents() if d.doc_id == doc_id)
        return record

    def delete_document(self, doc_id: str) -> None:
        with self._lock:
            if not any(d.doc_id == doc_id for d in self.catalog.documents()):
                raise KnowledgeError(f"No document {doc_id!r} in knowledge base {self.name!r}.")
            self.vectors.delete_document(doc_id)
            self.catalog.delete(doc_id)
            self._bm25_stale = True

    # --- reads --------------------------------------------------------------
    def documents(self) -> list[DocumentRecord]:
        return self.catalog.documents()

    def find_document(self, source: str) -> DocumentRecord | None:
        return self.catalog.find_by_source(source)

    def chunk_count(self) -> int:
        return self.catalog.chunk_count()

    def search(self, query: str, top_k: int, candidates: int = 30) -> list[Hit]:
        """Hybrid search: BM25 and dense hits fused by reciprocal rank."""
        self._refresh_bm25()
        sparse = self.bm25.search(query, candidates)
        dense_ids = self.vectors.search(query, candidates)
        chunks = self.catalog.chunks_by_id([cid for cid, _ in dense_ids])
        dense = [Hit(chunks[cid], s, scores={"dense": s}) for cid, s in dense_ids if cid in chunks]
        fused = reciprocal_rank_fusion({"bm25": sparse, "dense": dense}, k=self.rrf_k, limit=top_k)
        return [Hit(h.chunk, h.score, self.name, h.scores) for h in fused]

    def _refresh_bm25(self) -> None:
        with self._lock:
            if self._bm25_stale:
                self.bm25.load(self.catalog.ready_chunks_with_tokens())
                self._bm25_stale = False

    def close(self) -> None:
        self.catalog.close()


def new_manifest(name: str, embedder: Embedder, chunk_size: int, chunk_overlap: int) -> Manifest:
    return Manifest(
        name=name, format_version=FORMAT_VERSION, embedder=embedder.name,
        embedder_dim=embedder.dim, chunk_size=chunk_size, chunk_overlap=chunk_overlap,
        created_at=datetime.now(timezone.utc).isoformat(timespec="seconds"),
    )
