"""Does a knowledge base agree with itself? The catalog is the record of truth; the
vector store and the in-memory BM25 must hold exactly its searchable (ready, canonical)
passages, and one file must be one document.

``check`` reports what disagrees and, with ``repair``, mends it: missing vectors are
embedded, orphaned ones deleted, BM25 is rebuilt from the catalog, and of several
documents that came from the same unchanged file the first stored is kept.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from knowledge.stores import Stores
from knowledge.types import DocumentRecord

BATCH = 64


@dataclass(frozen=True)
class ConsistencyReport:
    knowledge_base: str
    passages: int  # searchable passages in the catalog
    missing_vectors: tuple[str, ...] = ()  # in the catalog, not in the vector store
    orphan_vectors: tuple[str, ...] = ()  # in the vector store, not in the catalog
    missing_bm25: tuple[str, ...] = ()
    orphan_bm25: tuple[str, ...] = ()
    duplicate_documents: tuple[str, ...] = ()  # sources of extra copies of one file
    repaired: bool = False
    notes: tuple[str, ...] = field(default_factory=tuple)

    @property
    def consistent(self) -> bool:
        return not (self.missing_vectors or self.orphan_vectors or self.missing_bm25
                    or self.orphan_bm25 or self.duplicate_documents)


def check(stores: Stores, delete_document, repair: bool = False) -> ConsistencyReport:
    """Compare ``stores``' catalog with its vectors and BM25 (``delete_document(doc_id)``
    removes an extra copy through the write protocol). The caller holds ``stores.lock``
    when ``repair`` is set."""
    duplicates = _duplicate_documents(stores.catalog.documents())
    if repair:
        for doc in duplicates:
            delete_document(doc.doc_id)
    ids = set(stores.catalog.canonical_ids())
    stored = stores.vectors.ids() if stores.vectors is not None else set()
    missing, orphans = sorted(ids - stored), sorted(stored - ids)
    notes = []
    if stores.vectors is None and ids:
        notes.append("no embedder chosen yet, but the catalog holds passages")
    bm25 = stores.bm25
    indexed = bm25.index.ids() if bm25.loaded else ids  # unbuilt: built from the catalog
    bm25_missing, bm25_orphans = sorted(ids - indexed), sorted(indexed - ids)
    if repair and stores.vectors is not None:
        if orphans:
            stores.vectors.collection.delete(ids=orphans)
        embedder = stores.vectors.embedder
        for start in range(0, len(missing), BATCH):
            chunks = list(stores.catalog.chunks_by_id(missing[start:start + BATCH]).values())
            stores.vectors.upsert(chunks, embedder.embed_passages([c.index_text for c in chunks]))
    if repair and (bm25_missing or bm25_orphans):
        bm25.index.load(stores.catalog.ready_chunks_with_tokens())
    return ConsistencyReport(stores.name, len(ids), tuple(missing), tuple(orphans),
                             tuple(bm25_missing), tuple(bm25_orphans),
                             tuple(d.source for d in duplicates), repair, tuple(notes))


def _duplicate_documents(docs: list[DocumentRecord]) -> list[DocumentRecord]:
    """Every stored copy of a file after the first, by resolved origin and content."""
    seen: set[tuple[str, str]] = set()
    extra = []
    for doc in sorted(docs, key=lambda d: d.added_at):
        if not doc.origin:
            continue
        key = (str(Path(doc.origin).resolve()), doc.sha256)
        if key in seen:
            extra.append(doc)
        seen.add(key)
    return extra
