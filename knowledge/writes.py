"""The write protocol of a knowledge base, and the recovery of what a crash left.

Adding a document: its chunks go into the catalog as ``pending`` (duplicates recorded,
not embedded), their vectors into Chroma, then one catalog transaction marks it ready
and removes the version it replaces (tombstoning that one's vectors); tombstones and
promoted duplicates are applied to Chroma last. At each open, ``recover`` finishes or
undoes whatever a crash interrupted (see ``knowledge.catalog``), and a change of
embedder left half-way (``knowledge.reembed``).
"""
from __future__ import annotations

import logging

from knowledge import dedup, reembed
from knowledge.errors import KnowledgeError
from knowledge.originals import Originals
from knowledge.stores import Stores
from knowledge.tokenize import tokenize
from knowledge.types import Chunk, DocumentRecord

log = logging.getLogger(__name__)


class Writer:
    """Adds and deletes documents in ``stores``, keeping catalog, Chroma, BM25 and the
    stored originals in step. Its embedder must be chosen before ``add_document``."""

    def __init__(self, stores: Stores, originals: Originals):
        self.stores, self.originals = stores, originals

    def add_document(self, doc_id: str, source: str, sha256: str, pages: int,
                     chunks: list[Chunk], origin: str = "", reader: str = "") -> DocumentRecord:
        """Store ``chunks`` as one document, replacing an older version of ``source``.
        Chunks that duplicate (exactly or nearly) one already stored are recorded as
        duplicates and not embedded."""
        s = self.stores
        tokens = [tokenize(c.index_text) for c in chunks]
        hashes = [dedup.content_hash(c.text) for c in chunks]
        # duplicates are judged on the text alone: drop the heading's leading tokens (the
        # newline between heading and text ends every word and Han run, so they are a prefix)
        signatures = [dedup.minhash_signature(t[len(tokenize(c.heading)):] if c.heading else t)
                      for c, t in zip(chunks, tokens)]
        with s.lock:
            old = s.catalog.find_by_source(source)
            exclude = {doc_id} | ({old.doc_id} if old else set())
            dup_of = dedup.find_duplicates(
                [c.chunk_id for c in chunks], hashes, signatures,
                lambda h, sig: s.catalog.find_duplicate(h, sig, exclude))
            canonical = [c for i, c in enumerate(chunks) if i not in dup_of]
            vectors = s.vectors.embedder.embed_passages([c.index_text for c in canonical])
            s.heading_vectors({c.heading for c in canonical if c.heading})
            s.catalog.add_pending(doc_id, source, origin, sha256, pages, chunks, tokens,
                                  hashes, signatures, dup_of, reader)
            s.vectors.delete_document(doc_id)  # leftovers of a crashed attempt
            s.vectors.upsert(canonical, vectors)
            replaces = old.doc_id if old is not None and old.doc_id != doc_id else None
            removed = s.catalog.canonical_ids(replaces) if replaces else []
            s.catalog.commit_document(doc_id, replaces)
            if replaces:
                self.originals.drop(replaces)
            promoted = self.finish_cleanup()
            s.bm25.apply(removed, [c.chunk_id for c in canonical] + promoted)
            return s.catalog.document(doc_id)

    def delete_document(self, doc_id: str) -> None:
        s = self.stores
        with s.lock:
            if s.catalog.document(doc_id) is None:
                raise KnowledgeError(f"No document {doc_id!r} in knowledge base {s.name!r}.")
            removed = s.catalog.canonical_ids(doc_id)
            s.catalog.delete_document(doc_id)
            self.originals.drop(doc_id)
            s.bm25.apply(removed, self.finish_cleanup())

    def recover(self) -> None:
        """Finish or undo what a crash left: a change of embedder, half-ingested
        documents, tombstones and promotions not yet applied, stray originals."""
        s = self.stores
        reembed.finish(s)
        for doc_id in s.catalog.pending_doc_ids():
            log.warning("Removing half-ingested document %s from %s", doc_id, s.name)
            if s.vectors is not None:
                s.vectors.delete_document(doc_id)
            s.catalog.drop_pending(doc_id)
        self.finish_cleanup()
        self.originals.sweep(s.catalog.document_ids())

    def finish_cleanup(self) -> list[str]:
        """Delete tombstoned vectors, embed promoted chunks; returns the promoted ids."""
        s = self.stores
        if s.vectors is None:  # nothing was ever stored
            return []
        for doc_id in s.catalog.tombstones():
            s.vectors.delete_document(doc_id)
            s.catalog.clear_tombstone(doc_id)
        promoted = s.catalog.pending_vector_chunks()
        if promoted:
            vectors = s.vectors.embedder.embed_passages([c.index_text for c in promoted])
            s.vectors.upsert(promoted, vectors)
            s.catalog.clear_pending_vectors([c.chunk_id for c in promoted])
        return [c.chunk_id for c in promoted]
