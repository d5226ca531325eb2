"""What the parts of one knowledge base share: its folder, its manifest, the catalog (the
record of truth), the Chroma vectors and the in-memory BM25.

The write protocol (``knowledge.writes``), the change of embedder (``knowledge.reembed``)
and search (``knowledge.search``) each receive one ``Stores`` and read or replace what
they need in it; ``KnowledgeBase`` builds it and composes them.
"""
from __future__ import annotations

import threading
from dataclasses import replace
from pathlib import Path

import numpy as np

from knowledge.bm25 import BM25Index
from knowledge.catalog import Catalog
from knowledge.manifest import MANIFEST, Manifest
from knowledge.vectors import VectorIndex


class LiveBM25:
    """BM25 over the catalog's ready canonical chunks, built from it once, on first use;
    each committed change is then applied incrementally (never rebuilt per document)."""

    def __init__(self, catalog: Catalog):
        self.catalog = catalog
        self.index = BM25Index()
        self._lock = threading.Lock()
        self._loaded = False

    @property
    def loaded(self) -> bool:
        return self._loaded

    def refresh(self) -> BM25Index:
        """The index, built from the catalog if this is its first use."""
        with self._lock:
            if not self._loaded:
                self.index.load(self.catalog.ready_chunks_with_tokens())
                self._loaded = True
        return self.index

    def apply(self, removed: list[str], added: list[str]) -> None:
        """Apply one committed change (if the index is built yet; else the first use reads
        the catalog, which already holds it)."""
        with self._lock:
            if not self._loaded:
                return
            for cid in removed:
                self.index.remove(cid)
            for chunk, tokens in self.catalog.chunks_with_tokens(added):
                self.index.add(chunk, tokens)


class Stores:
    """One knowledge base's stores. ``vectors`` is None until its embedder is chosen (a
    knowledge base created with "auto" and nothing ingested yet). ``lock`` serialises
    writes: adding, deleting, choosing the embedder and re-embedding."""

    def __init__(self, root: Path, manifest: Manifest, client, vectors: VectorIndex | None):
        self.root = root
        self.manifest = manifest
        self.client = client  # the Chroma client the collections live in
        self.vectors = vectors
        self.catalog = Catalog(root / "catalog.sqlite3")
        self.bm25 = LiveBM25(self.catalog)
        self.lock = threading.RLock()

    @property
    def name(self) -> str:
        return self.root.name  # the directory name is the truth (see Library.rename)

    def update_manifest(self, **changes) -> Manifest:
        """Record ``changes`` in the manifest and save it (atomically)."""
        self.manifest = replace(self.manifest, **changes)
        self.manifest.save(self.root / MANIFEST)
        return self.manifest

    def heading_vectors(self, names: set[str]) -> dict[str, np.ndarray]:
        """Vectors of the headings ``names``: stored at ingestion; a knowledge base built
        before headings were scored gets them here, once each. Needs ``vectors``."""
        found = self.catalog.heading_vectors(names)
        missing = sorted(names - found.keys())
        if missing:
            new = dict(zip(missing, self.vectors.embedder.embed_passages(missing)))
            self.catalog.add_heading_vectors(new)
            found.update(new)
        return found

    def close(self) -> None:
        self.catalog.close()
