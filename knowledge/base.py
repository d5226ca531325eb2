"""A knowledge base: catalog (truth) + Chroma collection + BM25, with a versioned manifest."""
from __future__ import annotations

import json
import logging
import os
import re
import shutil
import threading
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, replace
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

from knowledge.bm25 import BM25Index
from knowledge import dedup, headings
from knowledge.catalog import Catalog
from knowledge.embedders import E5_NAME, Embedder, EmbedderPool
from common.text import detect_language
from knowledge.language import AUTO, MULTILINGUAL, embedder_for, reads
from knowledge.errors import EmbedderNotFound, IndexMismatch, KnowledgeError
from knowledge.compress import Compressed, compress
from knowledge.rerank import (
    CrossEncoderReranker, NoReranker, Reranker, current_reranker, reranker_dir,
)
from knowledge.retrievers import (
    BM25Retriever, DenseRetriever, FusionConfig, HybridRetriever, RetrievalConfig, Retriever,
)
from knowledge.tokenize import tokenize
from knowledge.types import Chunk, DocumentRecord, Hit
from knowledge.vectors import VectorIndex

log = logging.getLogger(__name__)

FORMAT_VERSION = 3  # 2: duplicates, headings, tombstones; 3: heading-prefixed index text
KB_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]{0,62}$")
ORIGINALS = "originals"  # <kb>/originals/<doc_id>.pdf: the ingested PDF, to render cited pages
PAGE_CACHE = "page-cache"  # <kb>/page-cache/<doc_id>-*.png: pages rendered for citations
REEMBED = "reembed.json"  # a change of embedder in progress (see KnowledgeBase.reembed)


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
    language: str = ""  # detected from the first document when the embedder was "auto"

    def save(self, path: Path) -> None:
        _write_json(path, asdict(self))

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

    def __init__(self, root: Path, manifest: Manifest, embedders: EmbedderPool, chroma_client,
                 retrieval: RetrievalConfig = RetrievalConfig()):
        self.name = root.name  # the directory name is the truth (see Library.rename)
        self.root = root
        self.manifest = manifest
        self.retrieval = retrieval
        self._reranker: tuple[str, Reranker] | None = None
        self._embedders, self._client = embedders, chroma_client
        self.catalog = Catalog(root / "catalog.sqlite3")
        self.vectors: VectorIndex | None = None  # opened once the embedder is known
        if manifest.embedder != AUTO:
            try:
                embedder = embedders.get(manifest.embedder)
            except EmbedderNotFound as exc:
                raise IndexMismatch(
                    f"Knowledge base {manifest.name!r} was built with the embedder "
                    f"{manifest.embedder!r}, which cannot be loaded here ({exc}). Make it "
                    "available again, or re-index the knowledge base.") from exc
            self.vectors = VectorIndex(chroma_client, manifest.collection, embedder)
        self.bm25 = BM25Index()
        self._lock = threading.RLock()  # serialises writes
        self._bm25_lock = threading.Lock()
        self._bm25_loaded = False
        self._recover()

    # --- the embedder ---------------------------------------------------------
    @property
    def embedder(self) -> Embedder:
        """This knowledge base's embedder; for a new "auto" one, e5 until it is chosen."""
        return self.vectors.embedder if self.vectors else self._embedders.get(E5_NAME)

    def ensure_embedder(self, sample: str) -> Embedder:
        """Fix the embedder of a knowledge base created with "auto" from the language of
        its first document (``sample``), record it in the manifest, and open its vectors.
        A knowledge base created with a named embedder records the language all the same
        (answers translate questions asked in another language)."""
        with self._lock:
            if self.vectors is not None and not self.manifest.language and sample.strip():
                self.manifest = replace(self.manifest, language=detect_language(sample))
                self.manifest.save(self.root / "manifest.json")
            if self.vectors is None:
                language = detect_language(sample)
                embedder = self._embedders.get(embedder_for(language))
                self.manifest = replace(self.manifest, embedder=embedder.name,
                                        embedder_dim=embedder.dim, language=language)
                self.manifest.save(self.root / "manifest.json")
                self.vectors = VectorIndex(self._client, self.manifest.collection, embedder)
                log.info("Knowledge base %s: %s text, embedder %s", self.name, language,
                         embedder.name)
            return self.vectors.embedder

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
        wait until it is done.
        """
        with self._lock:
            embedder = self._embedders.get(embedder_name)
            if self.vectors is None or self.vectors.embedder.name == embedder.name:
                return
            ids = self.catalog.canonical_ids()
            collection = f"kb_{uuid.uuid4().hex[:16]}"
            _write_json(self.root / REEMBED, {"from": self.manifest.collection,
                                              "to": collection, "embedder": embedder.name})
            target = VectorIndex(self._client, collection, embedder)
            log.info("Knowledge base %s: re-embedding %d passages with %s", self.name,
                     len(ids), embedder.name)
            yield 0, len(ids)
            for start in range(0, len(ids), batch):
                chunks = list(self.catalog.chunks_by_id(ids[start:start + batch]).values())
                target.upsert(chunks, embedder.embed_passages([c.index_text for c in chunks]))
                yield min(start + batch, len(ids)), len(ids)
            self.manifest = replace(self.manifest, collection=collection,
                                    embedder=embedder.name, embedder_dim=embedder.dim)
            self.manifest.save(self.root / "manifest.json")
            self.vectors = target
            self._finish_reembed()

    def _finish_reembed(self) -> None:
        """Complete or undo a change of embedder that ``reembed`` recorded: once the
        manifest names the new collection the old one goes (with the heading vectors, which
        belong to the old embedder); before that, the new one goes."""
        marker = self.root / REEMBED
        if not marker.is_file():
            return
        record = json.loads(marker.read_text(encoding="utf-8"))
        done = self.manifest.collection == record["to"]
        if done:
            self.catalog.clear_heading_vectors()
        _drop_collection(self._client, record["from"] if done else record["to"])
        marker.unlink()
        if not done:
            log.warning("Knowledge base %s: an unfinished change of embedder was undone; "
                        "it is still searched with %s", self.name, self.manifest.embedder)

    def count_tokens(self, text: str) -> int:
        """Length of ``text`` in the embedder's tokens (what chunk sizes are measured in)."""
        return self.embedder.count_tokens(text)

    def _recover(self) -> None:
        """Finish or undo what a crash left (see ``knowledge.catalog``)."""
        self._finish_reembed()
        for doc_id in self.catalog.pending_doc_ids():
            log.warning("Removing half-ingested document %s from %s", doc_id, self.name)
            if self.vectors is not None:
                self.vectors.delete_document(doc_id)
            self.catalog.drop_pending(doc_id)
        self._finish_cleanup()
        self._sweep_originals()

    def _finish_cleanup(self) -> list[str]:
        """Delete tombstoned vectors, embed promoted chunks; returns the promoted ids."""
        if self.vectors is None:  # nothing was ever stored
            return []
        for doc_id in self.catalog.tombstones():
            self.vectors.delete_document(doc_id)
            self.catalog.clear_tombstone(doc_id)
        promoted = self.catalog.pending_vector_chunks()
        if promoted:
            vectors = self.vectors.embedder.embed_passages([c.index_text for c in promoted])
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
                     chunks: list[Chunk], origin: str = "", reader: str = "") -> DocumentRecord:
        """Store ``chunks`` as one document, replacing an older version of ``source``
        (``reader``: the loader and version that read it, see ``ingest.loaders``).

        Chunks that duplicate (exactly or nearly) a chunk already in the knowledge base
        are recorded as duplicates and not embedded.
        """
        tokens = [tokenize(c.index_text) for c in chunks]
        hashes = [dedup.content_hash(c.text) for c in chunks]
        # duplicates are judged on the text alone: drop the heading's leading tokens (the
        # newline between heading and text ends every word and Han run, so they are a prefix)
        signatures = [dedup.minhash_signature(t[len(tokenize(c.heading)):] if c.heading else t)
                      for c, t in zip(chunks, tokens)]
        self.ensure_embedder("\n".join(c.text for c in chunks[:50]))
        with self._lock:
            old = self.catalog.find_by_source(source)
            exclude = {doc_id} | ({old.doc_id} if old else set())
            dup_of = self._duplicates(chunks, hashes, signatures, exclude)
            canonical = [c for i, c in enumerate(chunks) if i not in dup_of]
            vectors = self.vectors.embedder.embed_passages([c.index_text for c in canonical])
            self._heading_vectors({c.heading for c in canonical if c.heading})
            self.catalog.add_pending(doc_id, source, origin, sha256, pages, chunks, tokens,
                                     hashes, signatures, dup_of, reader)
            self.vectors.delete_document(doc_id)  # leftovers of a crashed attempt
            self.vectors.upsert(canonical, vectors)
            replaces = old.doc_id if old is not None and old.doc_id != doc_id else None
            removed = self.catalog.canonical_ids(replaces) if replaces else []
            self.catalog.commit_document(doc_id, replaces)
            if replaces:
                self._drop_original(replaces)
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
            self._drop_original(doc_id)
            self._update_bm25(removed, self._finish_cleanup())

    # --- stored originals (cited pages are rendered from them) --------------------
    def original_path(self, doc_id: str) -> Path:
        """Where the original PDF of ``doc_id`` is kept (it may not exist)."""
        return self.root / ORIGINALS / f"{doc_id}.pdf"

    @contextmanager
    def keeping_original(self, doc_id: str, path: Path | None) -> Iterator[None]:
        """Copy ``path`` (atomically) as the original of ``doc_id`` for the duration of the
        block that stores the document; removed again when the block fails. None: no-op."""
        if path is None:
            yield
            return
        target = self.original_path(doc_id)
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = target.with_suffix(f".{uuid.uuid4().hex[:8]}.tmp")
        try:
            shutil.copyfile(path, tmp)
            os.replace(tmp, target)
            yield
        except BaseException:
            tmp.unlink(missing_ok=True)
            if self.catalog.document(doc_id) is None:
                self._drop_original(doc_id)
            raise

    def _drop_original(self, doc_id: str) -> None:
        """Remove the stored original of ``doc_id`` and its rendered pages."""
        self.original_path(doc_id).unlink(missing_ok=True)
        for png in (self.root / PAGE_CACHE).glob(f"{doc_id}-*.png"):
            png.unlink(missing_ok=True)

    def _sweep_originals(self) -> None:
        """Remove what a crash left: half-copied files and originals of documents that
        are gone (a copy made before the catalog committed, or not yet removed after)."""
        folder = self.root / ORIGINALS
        if not folder.is_dir():
            return
        for tmp in folder.glob("*.tmp"):
            tmp.unlink(missing_ok=True)
        known = {d.doc_id for d in self.catalog.documents()}
        for pdf in folder.glob("*.pdf"):
            if pdf.stem not in known:
                log.info("Removing the original of a document no longer in %s", self.name)
                self._drop_original(pdf.stem)

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

    def retriever(self, mode: str = "hybrid", fusion: FusionConfig | None = None,
                  candidates: int | None = None, prf: bool | None = None) -> Retriever:
        """``bm25``, ``dense`` or ``hybrid`` retrieval over this knowledge base."""
        prf = self.retrieval.prf if prf is None else prf
        if mode == "bm25":
            return BM25Retriever(self, prf)
        if mode == "dense":
            return DenseRetriever(self)
        if mode != "hybrid":
            raise KnowledgeError(f"Unknown retrieval mode {mode!r}: bm25, dense or hybrid.")
        return HybridRetriever([BM25Retriever(self, prf), DenseRetriever(self)],
                               fusion or self.retrieval.fusion,
                               candidates or self.retrieval.candidates, self._rescore_headings)

    def _rescore_headings(self, query: str, hits: list[Hit], weight: float) -> list[Hit]:
        """``hits`` re-scored with their headings (see ``knowledge.headings``)."""
        if self.vectors is None or not any(h.chunk.heading for h in hits):
            return hits
        vectors = self._heading_vectors({h.chunk.heading for h in hits if h.chunk.heading})
        self._refresh_bm25()
        return headings.rescore(hits, query, self.vectors.query_vector(query), vectors.get,
                                self.bm25.idf, weight)

    def _heading_vectors(self, names: set[str]) -> dict[str, np.ndarray]:
        """Vectors of the headings ``names``: stored at ingestion; a knowledge base built
        before headings were scored gets them here, once each."""
        found = self.catalog.heading_vectors(names)
        missing = sorted(names - found.keys())
        if missing:
            new = dict(zip(missing, self.vectors.embedder.embed_passages(missing)))
            self.catalog.add_heading_vectors(new)
            found.update(new)
        return found

    def reranker(self) -> Reranker:
        """The reranker the settings choose for this knowledge base (loaded once)."""
        cfg = self.retrieval
        key, make = "none", NoReranker
        record = current_reranker(self.root) if cfg.reranker in ("auto", "trained") else None
        if record is not None:
            folder = reranker_dir(self.root) / record.path
            key, make = str(folder), lambda: CrossEncoderReranker(folder, cfg.rerank_blend,
                                                                  record.max_length)
        elif cfg.reranker == "cross-encoder":
            if not cfg.reranker_model:
                raise KnowledgeError("retrieval.reranker is cross-encoder but "
                                     "retrieval.reranker_model names no folder.")
            key = cfg.reranker_model
            make = lambda: CrossEncoderReranker(Path(cfg.reranker_model), cfg.rerank_blend)  # noqa: E731
        if self._reranker is None or self._reranker[0] != key:
            self._reranker = (key, make())
        return self._reranker[1]

    def search(self, query: str, top_k: int, candidates: int | None = None,
               mode: str = "hybrid", fusion: FusionConfig | None = None,
               rerank: bool = True) -> list[Hit]:
        """Hits for ``query`` tagged with this knowledge base's name; the top
        ``rerank_top`` fused hits are reordered by the reranker (if any)."""
        n = max(top_k, self.retrieval.rerank_top)
        hits = self.retriever(mode, fusion, candidates).retrieve(query, n)
        if rerank:
            reranker = self.reranker()
            if reranker.name != "none":
                top = self.retrieval.rerank_top
                hits = reranker.rerank(query, hits[:top], top) + hits[top:]
        return [Hit(h.chunk, h.score, self.name, h.scores) for h in hits[:top_k]]

    def compress(self, question: str, hits: list[Hit], budget: int) -> list[Compressed]:
        """``hits`` cut to about ``budget`` embedder tokens of the sentences most relevant
        to ``question`` (see ``knowledge.compress``)."""
        self._refresh_bm25()
        embedder = self.embedder
        return compress(question, hits, budget, embedder.count_tokens,
                        embed=embedder.embed_passages,
                        embed_query=lambda q: embedder.embed_queries([q])[0],
                        idf=self.bm25.idf)

    def _refresh_bm25(self) -> None:
        """Build BM25 from the catalog once, on first use; later changes are incremental."""
        with self._bm25_lock:
            if not self._bm25_loaded:
                self.bm25.load(self.catalog.ready_chunks_with_tokens())
                self._bm25_loaded = True

    def close(self) -> None:
        self.catalog.close()


def _write_json(path: Path, data: dict) -> None:
    """``data`` as ``path``, atomically (written aside, then renamed over it)."""
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(data, indent=2), encoding="utf-8")
    tmp.replace(path)


def _drop_collection(client, name: str) -> None:
    try:
        client.delete_collection(name)
    except Exception as exc:  # noqa: BLE001 - an absent collection is what we want
        log.debug("Collection %s not dropped: %s", name, exc)


def new_manifest(name: str, embedder: str, embedder_dim: int, chunk_size: int,
                 chunk_overlap: int) -> Manifest:
    """A manifest for a new knowledge base; ``embedder`` may be "auto" (dimension 0)."""
    return Manifest(
        name=name, format_version=FORMAT_VERSION, collection=f"kb_{uuid.uuid4().hex[:16]}",
        embedder=embedder, embedder_dim=embedder_dim, chunk_size=chunk_size,
        chunk_overlap=chunk_overlap,
        created_at=datetime.now(timezone.utc).isoformat(timespec="seconds"),
    )
