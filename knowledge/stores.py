"""What the parts of one knowledge base share: its folder, its manifest, the catalog (the
record of truth), the Chroma vectors and the BM25 kept on disk beside the catalog.

The write protocol (``knowledge.writes``), the change of embedder (``knowledge.reembed``)
and search (``knowledge.search``) each receive one ``Stores`` and read or replace what
they need in it; ``KnowledgeBase`` builds it and composes them.
"""
from __future__ import annotations

import threading
from dataclasses import replace
from pathlib import Path

import numpy as np

from knowledge.bm25_live import LiveBM25  # noqa: F401 - callers name it from here too
from knowledge.catalog import Catalog
from knowledge.manifest import MANIFEST, Manifest
from knowledge.vectors import VectorIndex


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
        self.bm25 = LiveBM25(self.catalog, root / "bm25")
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
