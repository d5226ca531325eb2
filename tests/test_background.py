"""Work handed to a worker process: a knowledge base's snapshot, searched the way the
knowledge base searches, and vectors made from it installed by the process that holds
the knowledge base (passages added meanwhile embedded then, removed ones skipped)."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from ingest.chunking import ChunkingParams
from ingest.pipeline import IngestItem, drain, ingest_files
from knowledge.embedders import EmbedderPool
from knowledge.errors import KnowledgeError
from knowledge.library import Library
from knowledge.retrievers import FusionConfig
from knowledge.snapshot import read_snapshot, snapshot_retriever, write_snapshot
from tests.fakes import HashEmbedder

TEXTS = {
    "dose.txt": "Take amoxicillin 500 mg every 8 hours with water for seven days in a row. " * 3,
    "visit.txt": "Visitors may come between 2 pm and 8 pm on weekdays and all day Sunday. " * 3,
    "park.txt": "The car park behind the clinic is free for patients with a blue badge. " * 3,
}


def _library(tmp_path: Path) -> Library:
    pool = EmbedderPool("hash-a", loader=lambda name: HashEmbedder(name, 64 if name == "hash-a" else 32))
    return Library(tmp_path / "kb", pool, 60, 10)


def _add(base, tmp_path: Path, names) -> None:
    items = []
    for name in names:
        (tmp_path / name).write_text(TEXTS[name], encoding="utf-8")
        items.append(IngestItem(tmp_path / name))
    drain(ingest_files(base, items, ChunkingParams(60, 10)))


def test_a_snapshot_holds_the_passages_and_vectors_and_searches_like_the_base(tmp_path):
    lib = _library(tmp_path)
    base = lib.get("clinic", create=True)
    _add(base, tmp_path, TEXTS)
    count = write_snapshot(base, tmp_path / "snap", vectors=True)
    snap = read_snapshot(tmp_path / "snap")
    assert count == len(snap.chunks) == base.chunk_count() and snap.embedder == "hash-a"
    assert snap.vectors.shape == (count, 64) and sorted(snap.ids) == sorted(
        c.chunk_id for c, _ in snap.chunks)
    for query, source in (("amoxicillin dose", "dose.txt"), ("blue badge parking", "park.txt")):
        hits = snapshot_retriever(snap, HashEmbedder("hash-a"), FusionConfig(), 10).retrieve(query, 3)
        assert hits[0].chunk.source == source == base.search(query, 1)[0].chunk.source
        assert {"dense", "bm25"} <= set(hits[0].scores)
    keywords_only = snapshot_retriever(snap, None, FusionConfig(), 10).retrieve("amoxicillin", 1)
    assert keywords_only[0].chunk.source == "dose.txt"
    lib.close()


def test_vectors_made_from_a_snapshot_are_installed_with_what_changed_since(tmp_path):
    lib = _library(tmp_path)
    base = lib.get("clinic", create=True)
    _add(base, tmp_path, ["dose.txt", "visit.txt"])
    write_snapshot(base, tmp_path / "snap")
    snap = read_snapshot(tmp_path / "snap")
    other = HashEmbedder("hash-b", 32)
    made = dict(zip([c.chunk_id for c, _ in snap.chunks],
                    other.embed_passages([c.index_text for c, _ in snap.chunks])))
    # meanwhile: one document added, one deleted
    _add(base, tmp_path, ["park.txt"])
    visit = next(d for d in base.documents() if d.source == "visit.txt")
    base.delete_document(visit.doc_id)
    assert base.install_vectors("hash-b", made) == base.chunk_count()
    assert base.manifest.embedder == "hash-b" and base.manifest.embedder_dim == 32
    assert base.vectors.count() == base.chunk_count()
    assert base.search("blue badge parking", 1)[0].chunk.source == "park.txt"
    assert all(h.chunk.source != "visit.txt" for h in base.search("visitors weekdays", 5))
    # the switch is kept on reopening, and installing again is a no-op
    lib.close()
    lib = _library(tmp_path)
    again = lib.get("clinic")
    assert again.embedder.name == "hash-b" and again.vectors.count() == again.chunk_count()
    assert again.install_vectors("hash-b", {}) == 0
    wrong = {cid: np.ones(8, np.float32) for cid in made}
    assert again.install_vectors("hash-a", {}) == again.chunk_count()  # back, all embedded here
    with pytest.raises(KnowledgeError, match="have \\[8\\] dimensions.*Nothing was changed"):
        again.install_vectors("hash-b", wrong)
    assert again.embedder.name == "hash-a"
    np.testing.assert_equal(again.vectors.count(), again.chunk_count())
    lib.close()
