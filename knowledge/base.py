"""A knowledge base: catalog (truth) + Chroma collection + BM25, with a versioned manifest."""
from __future__ import annotations

import json
import logging
import re
import threading
import uuid
from dataclasses import asdict, dataclass
from datetime import datetime, timezone
from pathlib import Path

from knowledge.bm25 import BM25Index
from knowledge import dedup
from knowledge.catalog import Catalog
from knowledge.embedders import Embedder
from knowledge.errors import IndexMismatch, KnowledgeError
from knowledge.retrievers import (
    BM25Retriever, DenseRetriever, FusionConfig, HybridRetriever, Retriever,
)
from knowledge.tokenize import tokenize
from knowledge.types import Chunk, DocumentRecord, Hit
from knowledge.vectors import VectorIndex

log = logging.getLogger(__name__)

FORMAT_VERSION = 2  # 2: duplicates, headings, tombstones
KB_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]{0,62}$")


@dataclass(frozen=True)
class Manifest:
    """What an index was built with. Saved as ``manifest.json`` next to the catalog."""

    name: str
    format_version: int
    collection: str  # the Chroma collection: a stable id, so renaming never touches it
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
        if data.get("format_version") != FORMAT_VERSION or "collection" not in data:
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
        self.name = root.name  # the directory name is the truth (see Library.rename)
        self.root = root
        self.manifest = manifest
        self.rrf_k = rrf_k
        self.catalog = Catalog(root / "catalog.sqlite3")
        self.vectors = VectorIndex(chroma_client, manifest.collection, embedder)
        self.bm25 = BM25Index()
        self._lock = threading.RLock()  # serialises writes
        self._bm25_lock = threading.Lock()
        self._bm25_loaded = False
        self._recover()

    def _recover(self) -> None:
        """Finish or undo what a crash left (see ``knowledge.catalog``)."""
        for doc_id in self.catalog.pending_doc_ids():
            log.warning("Removing half-ingested document %s from %s", doc_id, self.name)
            self.vectors.delete_document(doc_id)
            self.catalog.drop_pending(doc_id)
        self._finish_cleanup()

    def _finish_cleanup(self) -> list[str]:
        """Delete tombstoned vectors, embed promoted chunks; returns the promoted ids."""
        for doc_id in self.catalog.tombstones():
            self.vectors.delete_document(doc_id)
            self.catalog.clear_tombstone(doc_id)
        promoted = self.catalog.pending_vector_chunks()
        if promoted:
            vectors = self.vectors.embedder.embed_passages([c.text for c in promoted])
            self.vectors.upsert(promoted, vectors)
            self.catalog.clear_pending_vectors([c.chunk_id for c in promoted])
        return [c.chunk_id for c in promoted]

    def _update_bm25(self, removed: list[str], added: list[str]) -> None:
        """Apply one committed change to the in-memory BM25 (if it is loaded yet)."""
        with self._bm25_lock:
            if not self._bm25_loaded:
                return
            for cid in removed:
                self.bm25.remove(cid)
            for chunk, tokens in self.catalog.chunks_with_tokens(added):
                self.bm25.add(chunk, tokens)

    # --- writes -------------------------------------------------------------
    def add_document(self, doc_id: str, source: str, sha256: str, pages: int,
                     chunks: list[Chunk], origin: str = "") -> DocumentRecord:
        """Store ``chunks`` as one document, replacing an older version of ``source``.

        Chunks that duplicate (exactly or nearly) a chunk already in the knowledge base
        are recorded as duplicates and not embedded.
        """
        tokens = [tokenize(c.text) for c in chunks]
        hashes = [dedup.content_hash(c.text) for c in chunks]
        signatures = [dedup.minhash_signature(t) for t in tokens]
        with self._lock:
            old = self.catalog.find_by_source(source)
            exclude = {doc_id} | ({old.doc_id} if old else set())
            dup_of = self._duplicates(chunks, hashes, signatures, exclude)
            canonical = [c for i, c in enumerate(chunks) if i not in dup_of]
            vectors = self.vectors.embedder.embed_passages([c.text for c in canonical])
            self.catalog.add_pending(doc_id, source, origin, sha256, pages, chunks, tokens,
                                     hashes, signatures, dup_of)
            self.vectors.delete_document(doc_id)  # leftovers of a crashed attempt
            self.vectors.upsert(canonical, vectors)
            replaces = old.doc_id if old is not None and old.doc_id != doc_id else None
            removed = self.catalog.canonical_ids(replaces) if replaces else []
            self.catalog.commit_document(doc_id, replaces)
            promoted = self._finish_cleanup()
            self._update_bm25(removed, [c.chunk_id for c in canonical] + promoted)
            return self.catalog.document(doc_id)

    def _duplicates(self, chunks, hashes, signatures, exclude: set[str]) -> dict[int, str]:
        """Index of each duplicate chunk -> id of the canonical chunk it repeats (in the
        knowledge base, or earlier in the same document; the latter through in-memory
        LSH bands, so a long document is not compared chunk by chunk)."""
        dup_of: dict[int, str] = {}
        seen_hash: dict[str, int] = {}
        bands: dict[tuple[int, str], list[int]] = {}
        for i, (h, sig) in enumerate(zip(hashes, signatures)):
            if h in seen_hash:
                dup_of[i] = chunks[seen_hash[h]].chunk_id
                continue
            twin = self.catalog.find_duplicate(h, sig, exclude)
            keys = dedup.band_keys(sig) if sig is not None else []
            if twin is None and keys:
                near = {j for key in keys for j in bands.get(key, ())}
                twin = next((chunks[j].chunk_id for j in sorted(near)
                             if dedup.jaccard(sig, signatures[j]) >= dedup.NEAR_THRESHOLD), None)
            if twin is not None:
                dup_of[i] = twin
                continue
            seen_hash[h] = i
            for key in keys:
                bands.setdefault(key, []).append(i)
        return dup_of

    def delete_document(self, doc_id: str) -> None:
        with self._lock:
            if self.catalog.document(doc_id) is None:
                raise KnowledgeError(f"No document {doc_id!r} in knowledge base {self.name!r}.")
            removed = self.catalog.canonical_ids(doc_id)
            self.catalog.delete_document(doc_id)
            self._update_bm25(removed, self._finish_cleanup())

    # --- reads --------------------------------------------------------------
    def documents(self) -> list[DocumentRecord]:
        return self.catalog.documents()

    def find_document(self, source: str) -> DocumentRecord | None:
        return self.catalog.find_by_source(source)

    def chunk_count(self) -> int:
        return self.catalog.chunk_count()

    def retriever(self, mode: str = "hybrid", fusion: FusionConfig | None = None,
                  candidates: int = 30) -> Retriever:
        """``bm25``, ``dense`` or ``hybrid`` retrieval over this knowledge base."""
        if mode == "bm25":
            return BM25Retriever(self)
        if mode == "dense":
            return DenseRetriever(self)
        if mode != "hybrid":
            raise KnowledgeError(f"Unknown retrieval mode {mode!r}: bm25, dense or hybrid.")
        return HybridRetriever([BM25Retriever(self), DenseRetriever(self)],
                               fusion or FusionConfig(rrf_k=self.rrf_k), candidates)

    def search(self, query: str, top_k: int, candidates: int = 30, mode: str = "hybrid",
               fusion: FusionConfig | None = None) -> list[Hit]:
        """Hits for ``query`` tagged with this knowledge base's name."""
        hits = self.retriever(mode, fusion, candidates).retrieve(query, top_k)
        return [Hit(h.chunk, h.score, self.name, h.scores) for h in hits]

    def _refresh_bm25(self) -> None:
        """Build BM25 from the catalog once, on first use; later changes are incremental."""
        with self._bm25_lock:
            if not self._bm25_loaded:
                self.bm25.load(self.catalog.ready_chunks_with_tokens())
                self._bm25_loaded = True

    def close(self) -> None:
        self.catalog.close()


def new_manifest(name: str, embedder: Embedder, chunk_size: int, chunk_overlap: int) -> Manifest:
    return Manifest(
        name=name, format_version=FORMAT_VERSION, collection=f"kb_{uuid.uuid4().hex[:16]}",
        embedder=embedder.name,
        embedder_dim=embedder.dim, chunk_size=chunk_size, chunk_overlap=chunk_overlap,
        created_at=datetime.now(timezone.utc).isoformat(timespec="seconds"),
    )
