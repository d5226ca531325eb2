"""A knowledge base: catalog (truth) + Chroma collection + BM25, with a versioned manifest.

``KnowledgeBase`` is the one class callers use. It chooses the embedder and composes the
parts, each usable alone on a ``knowledge.stores.Stores``: the manifest
(``knowledge.manifest``), the write protocol and crash recovery (``knowledge.writes``),
stored originals (``knowledge.originals``), the change of embedder
(``knowledge.reembed``) and search (``knowledge.search``).
"""
from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterator
from contextlib import AbstractContextManager
from pathlib import Path

import numpy as np

from common.text import detect_language
from knowledge import reembed as reembedding
from knowledge.bm25 import BM25Index
from knowledge.catalog import Catalog
from knowledge.check import ConsistencyReport, check
from knowledge.compress import Compressed
from knowledge.embedders import E5_NAME, Embedder, EmbedderPool
from knowledge.errors import EmbedderNotFound, IndexMismatch, KnowledgeError
from knowledge.language import AUTO, MULTILINGUAL, embedder_for, reads
from knowledge.manifest import (  # noqa: F401 - also imported from here by callers
    FORMAT_VERSION, KB_NAME, Manifest, new_manifest, validate_kb_name,
)
from knowledge.originals import ORIGINALS, PAGE_CACHE, Originals  # noqa: F401 - as above
from knowledge.reembed import REEMBED  # noqa: F401 - as above
from knowledge.rerank import Reranker
from knowledge.retrievers import FusionConfig, RetrievalConfig, Retriever
from knowledge.search import Searcher
from knowledge.stores import Stores
from knowledge.types import Chunk, DocumentRecord, Hit
from knowledge.vectors import VectorIndex
from knowledge.writes import Writer

log = logging.getLogger(__name__)


class KnowledgeBase:
    """Add, delete and search documents. Writes are serialised by one lock."""

    def __init__(self, root: Path, manifest: Manifest, embedders: EmbedderPool, chroma_client,
                 retrieval: RetrievalConfig = RetrievalConfig()):
        self.name = root.name  # the directory name is the truth (see Library.rename)
        self.root = root
        self._embedders = embedders
        vectors = None  # opened once the embedder is known
        if manifest.embedder != AUTO:
            try:
                embedder = embedders.get(manifest.embedder)
            except EmbedderNotFound as exc:
                raise IndexMismatch(
                    f"Knowledge base {manifest.name!r} was built with the embedder "
                    f"{manifest.embedder!r}, which cannot be loaded here ({exc}). Make it "
                    "available again, or re-index the knowledge base.") from exc
            vectors = VectorIndex(chroma_client, manifest.collection, embedder)
        self._stores = Stores(root, manifest, chroma_client, vectors)
        self._originals = Originals(root)
        self._writer = Writer(self._stores, self._originals)
        self._search = Searcher(self._stores, retrieval)
        self._writer.recover()
        self._warm_lock = threading.Lock()
        self._warmed = False

    # --- the parts' state, read by callers ---------------------------------------
    @property
    def manifest(self) -> Manifest:
        return self._stores.manifest

    @property
    def vectors(self) -> VectorIndex | None:
        """The Chroma vectors; None until the embedder is chosen."""
        return self._stores.vectors

    @property
    def catalog(self) -> Catalog:
        return self._stores.catalog

    @property
    def bm25(self) -> BM25Index:
        """The in-memory BM25 (empty until its first use: see ``_refresh_bm25``)."""
        return self._stores.bm25.index

    @property
    def retrieval(self) -> RetrievalConfig:
        return self._search.retrieval

    def _refresh_bm25(self) -> None:
        """Build BM25 from the catalog once, on first use; later changes are incremental."""
        self._stores.bm25.refresh()

    def warm(self) -> int | None:
        """Open now what the first search would otherwise open: BM25, and the vector
        index (an embedded Chroma reads a collection's whole HNSW index on its first use:
        about 3 s at a million chunks). Returns the vectors the store holds the first
        time (0 without an embedder yet), None once warm. Every search calls it, so a
        warm knowledge base returns before taking the lock."""
        if self._warmed:
            return None
        with self._warm_lock:
            if self._warmed:
                return None
            t0 = time.perf_counter()
            self._refresh_bm25()
            t1 = time.perf_counter()
            vectors = self.vectors.count() if self.vectors is not None else 0
            self._warmed = True
        log.info("Knowledge base %s open for search in %.1f s (BM25 %.1f s, vectors %.1f s)",
                 self.name, time.perf_counter() - t0, t1 - t0, time.perf_counter() - t1)
        return vectors

    # --- the embedder ---------------------------------------------------------
    @property
    def embedder(self) -> Embedder:
        """This knowledge base's embedder; for a new "auto" one, e5 until it is chosen."""
        vectors = self._stores.vectors
        return vectors.embedder if vectors else self._embedders.get(E5_NAME)

    def ensure_embedder(self, sample: str) -> Embedder:
        """Fix the embedder of a knowledge base created with "auto" from the language of
        its first document (``sample``), record it in the manifest, and open its vectors.
        A knowledge base created with a named embedder records the language all the same
        (answers translate questions asked in another language)."""
        s = self._stores
        with s.lock:
            if s.vectors is not None and not s.manifest.language and sample.strip():
                s.update_manifest(language=detect_language(sample))
            if s.vectors is None:
                language = detect_language(sample)
                embedder = self._embedders.get(embedder_for(language))
                s.update_manifest(embedder=embedder.name, embedder_dim=embedder.dim,
                                  language=language)
                s.vectors = VectorIndex(s.client, s.manifest.collection, embedder)
                log.info("Knowledge base %s: %s text, embedder %s", self.name, language,
                         embedder.name)
            return s.vectors.embedder

    def needs_multilingual(self, sample: str) -> bool:
        """Whether ``sample`` (a new document's text) is in a language this knowledge base's
        embedder cannot read, so it must be re-embedded with the multilingual one first."""
        return (self.vectors is not None and bool(sample.strip())
                and not reads(self.manifest.embedder, detect_language(sample)))

    def reembed(self, embedder_name: str = MULTILINGUAL, batch: int = 64
                ) -> Iterator[tuple[int, int]]:
        """Embed every passage again with ``embedder_name`` into a new collection and switch
        to it once all are in, yielding ``(done, total)`` as it goes.

        Nothing is lost on the way: searches use the old vectors until the switch, the
        catalog (the truth) is only read, and a crash before the switch leaves the old
        index as it was (the half-built collection is dropped at the next open). Writes
        wait until it is done (see ``knowledge.reembed``).
        """
        with self._stores.lock:
            embedder = self._embedders.get(embedder_name)
            yield from reembedding.change_embedder(self._stores, embedder, batch)

    def install_vectors(self, embedder_name: str, vectors: dict[str, np.ndarray],
                        batch: int = 64) -> int:
        """Switch to ``embedder_name`` with ``vectors`` (chunk id -> vector) made elsewhere
        from a snapshot (a re-embedding job's worker); passages added since the snapshot
        are embedded here, removed ones skipped. How many passages the new index holds."""
        with self._stores.lock:
            embedder = self._embedders.get(embedder_name)
            if self._stores.vectors is None or self._stores.vectors.embedder.name == embedder.name:
                return 0
            dims = {np.asarray(v).shape[-1] for v in vectors.values()}
            if dims - {embedder.dim}:
                raise KnowledgeError(
                    f"The vectors made for {self.name!r} have {sorted(dims)} dimensions, but "
                    f"{embedder.name} here makes {embedder.dim}: they come from another model "
                    "of that name. Nothing was changed; re-embed again.")
            ids = self._stores.catalog.canonical_ids()
            made = [cid for cid in ids if cid in vectors]
            missing = [cid for cid in ids if cid not in vectors]

            def batches():
                for start in range(0, len(made), batch):
                    part = made[start:start + batch]
                    yield part, np.stack([vectors[cid] for cid in part])
                yield from reembedding.embed_chunks(self._stores.catalog, embedder, missing, batch)

            for _ in reembedding.install(self._stores, embedder, batches(), len(ids)):
                pass
            return len(ids)

    def count_tokens(self, text: str) -> int:
        """Length of ``text`` in the embedder's tokens (what chunk sizes are measured in)."""
        return self.embedder.count_tokens(text)

    # --- writes -------------------------------------------------------------
    def add_document(self, doc_id: str, source: str, sha256: str, pages: int,
                     chunks: list[Chunk], origin: str = "", reader: str = "") -> DocumentRecord:
        """Store ``chunks`` as one document, replacing an older version of ``source``
        (``reader``: the loader and version that read it, see ``ingest.loaders``).

        Chunks that duplicate (exactly or nearly) a chunk already in the knowledge base
        are recorded as duplicates and not embedded.
        """
        self.ensure_embedder("\n".join(c.text for c in chunks[:50]))
        return self._writer.add_document(doc_id, source, sha256, pages, chunks, origin, reader)

    def delete_document(self, doc_id: str) -> None:
        self._writer.delete_document(doc_id)

    def check(self, repair: bool = False) -> ConsistencyReport:
        """Whether the catalog, the vectors and BM25 agree (``knowledge.check``); with
        ``repair``, make them agree. Writes wait meanwhile."""
        with self._stores.lock:
            return check(self._stores, self._writer.delete_document, repair)

    # --- stored originals (cited pages are rendered from them) --------------------
    def original_path(self, doc_id: str) -> Path:
        """Where the original PDF of ``doc_id`` is kept (it may not exist)."""
        return self._originals.path(doc_id)

    def keeping_original(self, doc_id: str, path: Path | None) -> AbstractContextManager[None]:
        """Copy ``path`` (atomically) as the original of ``doc_id`` for the duration of the
        block that stores the document; removed again when the block fails. None: no-op."""
        return self._originals.keeping(doc_id, path,
                                       lambda d: self.catalog.document(d) is not None)

    # --- reads --------------------------------------------------------------
    def documents(self) -> list[DocumentRecord]:
        return self.catalog.documents()

    def find_document(self, source: str) -> DocumentRecord | None:
        return self.catalog.find_by_source(source)

    def chunk_count(self) -> int:
        return self.catalog.chunk_count()

    def chunk(self, chunk_id: str) -> Chunk:
        """One chunk of a ready document (duplicates included) by id."""
        found = self.catalog.chunks_by_id([chunk_id]).get(chunk_id)
        if found is None:
            raise KnowledgeError(f"No passage {chunk_id!r} in knowledge base {self.name!r}: "
                                 "its document was deleted or replaced.")
        return found

    def document_chunks(self, doc_id: str) -> list[Chunk]:
        """The chunks of one document in reading order (for document tasks)."""
        if self.catalog.document(doc_id) is None:
            raise KnowledgeError(f"No document {doc_id!r} in knowledge base {self.name!r}.")
        return self.catalog.document_chunks(doc_id)

    # --- search (see knowledge.search) -------------------------------------------
    def retriever(self, mode: str = "hybrid", fusion: FusionConfig | None = None,
                  candidates: int | None = None, prf: bool | None = None) -> Retriever:
        """``bm25``, ``dense`` or ``hybrid`` retrieval over this knowledge base."""
        return self._search.retriever(mode, fusion, candidates, prf)

    def reranker(self) -> Reranker:
        """The reranker the settings choose for this knowledge base (loaded once)."""
        return self._search.reranker()

    def search(self, query: str, top_k: int, candidates: int | None = None,
               mode: str = "hybrid", fusion: FusionConfig | None = None,
               rerank: bool = True) -> list[Hit]:
        """Hits for ``query`` tagged with this knowledge base's name; the top
        ``rerank_top`` fused hits are reordered by the reranker (if any)."""
        return self._search.search(query, top_k, candidates, mode, fusion, rerank)

    def compress(self, question: str, hits: list[Hit], budget: int) -> list[Compressed]:
        """``hits`` cut to about ``budget`` embedder tokens of the sentences most relevant
        to ``question`` (see ``knowledge.compress``)."""
        return self._search.compress(question, hits, budget, self.embedder)

    def close(self) -> None:
        self._stores.close()
