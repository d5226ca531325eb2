"""Each part of a knowledge base on its own, on real SQLite and Chroma under tmp_path with
the deterministic hash embedder: the manifest, search, the write protocol and crash
recovery, the change of embedder, the stored originals."""
from __future__ import annotations

import json

import chromadb
import pytest
from chromadb.config import Settings as ChromaSettings

from knowledge import dedup, reembed
from knowledge.errors import IndexMismatch, KnowledgeError
from knowledge.manifest import (
    FORMAT_VERSION, MANIFEST, Manifest, new_manifest, validate_kb_name,
)
from knowledge.originals import ORIGINALS, PAGE_CACHE, Originals
from knowledge.retrievers import RetrievalConfig
from knowledge.search import Searcher
from knowledge.stores import Stores
from knowledge.tokenize import tokenize
from knowledge.types import Chunk
from knowledge.vectors import VectorIndex
from knowledge.writes import Writer
from tests.fakes import HashEmbedder

TEXTS = {
    "dose": "Take amoxicillin 500 mg every 8 hours with water for seven days in a row.",
    "visit": "Visitors may come between 2 pm and 8 pm on weekdays and all day on Sundays.",
    "park": "The car park behind the clinic is free for patients with a blue badge on show.",
}


def chunk(doc_id: str, i: int, text: str, heading: str = "") -> Chunk:
    return Chunk(f"{doc_id}-{i}", doc_id, f"{doc_id}.txt", text, 1, 0, len(text), i, heading)


@pytest.fixture
def client(tmp_path):
    return chromadb.PersistentClient(path=str(tmp_path / "chroma"),
                                     settings=ChromaSettings(anonymized_telemetry=False))


def open_stores(root, client, embedder=None) -> Stores:
    """The stores of the knowledge base in ``root`` as an open would find them (manifest
    read from disk), its vectors opened with ``embedder``."""
    manifest = Manifest.load(root / MANIFEST)
    embedder = embedder or HashEmbedder(manifest.embedder, manifest.embedder_dim)
    return Stores(root, manifest, client, VectorIndex(client, manifest.collection, embedder))


@pytest.fixture
def stores(tmp_path, client):
    root = tmp_path / "clinic"
    root.mkdir()
    new_manifest("clinic", "hash-embedder", 64, 220, 40).save(root / MANIFEST)
    s = open_stores(root, client)
    yield s
    s.close()


def store_directly(s: Stores, doc_id: str, chunks: list[Chunk]) -> None:
    """A ready document written straight into catalog and Chroma (no ``Writer``)."""
    s.catalog.add_pending(doc_id, f"{doc_id}.txt", "", "0" * 64, 1, chunks,
                          [tokenize(c.index_text) for c in chunks],
                          [dedup.content_hash(c.text) for c in chunks], [None] * len(chunks), {})
    s.catalog.commit_document(doc_id, None)
    s.vectors.upsert(chunks, s.vectors.embedder.embed_passages([c.index_text for c in chunks]))


def assert_consistent(s: Stores) -> None:
    """Chroma holds exactly the catalog's canonical chunks and nothing is left pending."""
    assert s.vectors.ids() == set(s.catalog.canonical_ids())
    assert s.catalog.pending_doc_ids() == [] and s.catalog.tombstones() == []


# --- the manifest ------------------------------------------------------------------
def test_manifest_round_trips_through_its_json_file(tmp_path):
    m = new_manifest("clinic", "hash-embedder", 64, 220, 40)
    m.save(tmp_path / MANIFEST)
    on_disk = json.loads((tmp_path / MANIFEST).read_text(encoding="utf-8"))
    assert on_disk["format_version"] == FORMAT_VERSION and on_disk["collection"] == m.collection
    assert Manifest.load(tmp_path / MANIFEST) == m
    assert [p.name for p in tmp_path.iterdir()] == [MANIFEST]  # the aside copy was renamed


@pytest.mark.parametrize("change", [{"format_version": FORMAT_VERSION - 1},
                                    {"collection": None}])
def test_a_manifest_of_another_format_is_refused_with_what_to_do(tmp_path, change):
    data = {**new_manifest("old", "e5", 384, 220, 40).__dict__, **change}
    data = {k: v for k, v in data.items() if v is not None}
    (tmp_path / MANIFEST).write_text(json.dumps(data), encoding="utf-8")
    with pytest.raises(IndexMismatch, match=f"this Docent reads {FORMAT_VERSION}: re-index it"):
        Manifest.load(tmp_path / MANIFEST)


def test_knowledge_base_names():
    assert validate_kb_name("clinic_2026-a") == "clinic_2026-a"
    for bad in ["", "-clinic", "a b", "x" * 64, "../up"]:
        with pytest.raises(KnowledgeError, match="Invalid knowledge base name"):
            validate_kb_name(bad)


# --- search --------------------------------------------------------------------------
def test_each_retrieval_mode_finds_the_passage_and_tags_the_knowledge_base(stores):
    store_directly(stores, "leaflet", [chunk("leaflet", i, t) for i, t in enumerate(TEXTS.values())])
    search = Searcher(stores)
    for mode in ("bm25", "dense", "hybrid"):
        hits = search.search("amoxicillin dose every 8 hours", 2, mode=mode)
        assert hits[0].chunk.chunk_id == "leaflet-0" and {h.kb for h in hits} == {"clinic"}
    assert {"bm25", "dense", "fused"} <= set(hits[0].scores)
    with pytest.raises(KnowledgeError, match="Unknown retrieval mode 'fuzzy'"):
        search.retriever("fuzzy")


def test_bm25_is_built_on_first_search_then_updated_per_change(stores):
    store_directly(stores, "a", [chunk("a", 0, TEXTS["dose"])])
    assert not stores.bm25.loaded and len(stores.bm25.index) == 0
    bm25 = Searcher(stores).retriever("bm25")
    assert [h.chunk.chunk_id for h in bm25.retrieve("amoxicillin", 5)] == ["a-0"]
    assert stores.bm25.loaded
    store_directly(stores, "b", [chunk("b", 0, TEXTS["park"])])
    assert bm25.retrieve("car park", 5) == []  # a change is applied, never re-read
    stores.bm25.apply([], ["b-0"])
    stores.bm25.apply(["a-0"], [])
    assert [h.chunk.chunk_id for h in bm25.retrieve("car park amoxicillin", 5)] == ["b-0"]


def test_a_matching_heading_lifts_its_chunk_and_its_vector_is_stored_once(stores):
    body = "Read this section before you start the course of tablets at home."
    store_directly(stores, "d", [chunk("d", 0, body, "Storage"), chunk("d", 1, body, "Dosage")])
    search = Searcher(stores, RetrievalConfig(candidates=10))
    hits = search.search("dosage", 2, rerank=False)
    assert hits[0].chunk.heading == "Dosage" and hits[0].scores["heading"] == 1.0
    assert set(stores.catalog.heading_vectors(["Storage", "Dosage"])) == {"Storage", "Dosage"}


def test_the_reranker_follows_the_settings(stores):
    assert Searcher(stores).reranker().name == "none"
    with pytest.raises(KnowledgeError, match="reranker_model names no folder"):
        Searcher(stores, RetrievalConfig(reranker="cross-encoder")).reranker()


def test_compress_keeps_the_relevant_sentence_within_budget(stores):
    text = TEXTS["dose"] + " " + TEXTS["park"]
    store_directly(stores, "d", [chunk("d", 0, text)])
    search = Searcher(stores)
    hits = search.search("amoxicillin dose", 1)
    embedder = stores.vectors.embedder
    (kept,) = search.compress("amoxicillin dose", hits, 16, embedder)
    assert "amoxicillin" in kept.text and "car park" not in kept.text


# --- writes and recovery ---------------------------------------------------------------
def test_duplicates_are_recorded_not_embedded_and_a_new_version_replaces_the_old(stores):
    writer = Writer(stores, Originals(stores.root))
    writer.add_document("v1", "leaflet.txt", "1" * 64, 1,
                        [chunk("v1", 0, TEXTS["dose"]), chunk("v1", 1, TEXTS["visit"])])
    other = writer.add_document("o", "other.txt", "2" * 64, 1,
                                [chunk("o", 0, TEXTS["dose"]), chunk("o", 1, TEXTS["park"])])
    assert other.duplicates == 1 and stores.vectors.ids() == {"v1-0", "v1-1", "o-1"}
    writer.add_document("v2", "leaflet.txt", "3" * 64, 1, [chunk("v2", 0, TEXTS["visit"])])
    # v1 is gone: its visit chunk now lives in v2, its dose chunk passed to "o" (promoted)
    assert [d.doc_id for d in stores.catalog.documents()] == ["o", "v2"]
    assert stores.vectors.ids() == {"o-0", "o-1", "v2-0"}
    assert_consistent(stores)
    writer.delete_document("o")
    assert stores.vectors.ids() == {"v2-0"}
    with pytest.raises(KnowledgeError, match="No document 'o' in knowledge base 'clinic'"):
        writer.delete_document("o")


def test_an_interrupted_write_and_delete_are_undone_or_finished_on_open(stores, client):
    writer = Writer(stores, Originals(stores.root))
    writer.add_document("kept", "kept.txt", "1" * 64, 1, [chunk("kept", 0, TEXTS["visit"])])
    writer.add_document("gone", "gone.txt", "2" * 64, 1, [chunk("gone", 0, TEXTS["park"])])
    # a crash after a new document's vectors were written, before its commit...
    half = [chunk("half", 0, TEXTS["dose"])]
    stores.catalog.add_pending("half", "half.txt", "", "3" * 64, 1, half, [[]], ["h"], [None], {})
    stores.vectors.upsert(half, stores.vectors.embedder.embed_passages([TEXTS["dose"]]))
    # ...and one after a delete committed, before its vectors went
    stores.catalog.delete_document("gone")
    assert stores.vectors.ids() == {"kept-0", "gone-0", "half-0"}
    stores.close()
    again = open_stores(stores.root, client)
    Writer(again, Originals(again.root)).recover()
    assert [d.doc_id for d in again.catalog.documents()] == ["kept"]
    assert again.vectors.ids() == {"kept-0"}
    assert_consistent(again)
    again.close()


def test_an_interrupted_reembed_is_undone_on_open(stores, client):
    store_directly(stores, "d", [chunk("d", i, t) for i, t in enumerate(TEXTS.values())])
    old = stores.manifest.collection
    new = HashEmbedder("hash-32", 32)
    steps = reembed.change_embedder(stores, new, batch=1)
    assert next(steps) == (0, 3) and next(steps) == (1, 3)
    marker = json.loads((stores.root / reembed.REEMBED).read_text(encoding="utf-8"))
    assert marker["from"] == old and marker["embedder"] == "hash-32"
    steps.close()  # the process dies here
    stores.close()
    again = open_stores(stores.root, client)
    Writer(again, Originals(again.root)).recover()
    assert again.manifest.collection == old and again.manifest.embedder == "hash-embedder"
    names = {c.name for c in client.list_collections()}
    assert old in names and marker["to"] not in names
    assert not (again.root / reembed.REEMBED).exists()
    assert_consistent(again)
    again.close()


def test_vectors_made_elsewhere_are_installed_and_the_switch_is_finished_on_open(
        stores, client, monkeypatch):
    store_directly(stores, "d", [chunk("d", i, t, "Leaflet") for i, t in enumerate(TEXTS.values())])
    stores.heading_vectors({"Leaflet"})
    old = stores.manifest.collection
    new = HashEmbedder("hash-32", 32)
    ids = stores.catalog.canonical_ids()
    made = list(reembed.embed_chunks(stores.catalog, new, ids, batch=2))  # "in a worker"
    assert [len(b[0]) for b in made] == [2, 1] and made[0][1].shape == (2, 32)
    # one batch holds a passage deleted meanwhile: it is skipped
    batches = [made[0], (made[1][0] + ["gone-0"], made[1][1].repeat(2, axis=0))]
    # the process dies just after the manifest is switched, before the old collection goes
    monkeypatch.setattr(reembed, "finish", lambda s: None)
    assert list(reembed.install(stores, new, batches, len(ids)))[-1] == (3, 3)
    monkeypatch.undo()
    m = Manifest.load(stores.root / MANIFEST)
    assert m.embedder == "hash-32" and m.embedder_dim == 32 and m.collection != old
    assert old in {c.name for c in client.list_collections()}
    stores.close()
    again = open_stores(stores.root, client, new)
    Writer(again, Originals(again.root)).recover()
    assert old not in {c.name for c in client.list_collections()}
    assert again.catalog.heading_vectors(["Leaflet"]) == {}  # they belonged to the old embedder
    assert_consistent(again)
    hits = Searcher(again).search("car park blue badge", 1, mode="dense")
    assert hits[0].chunk.chunk_id == "d-2"
    again.close()


# --- stored originals ------------------------------------------------------------------
def test_an_original_is_kept_with_its_document_and_swept_without_it(tmp_path):
    pdf = tmp_path / "in.pdf"
    pdf.write_bytes(b"%PDF-1.4 leaflet")
    originals = Originals(tmp_path / "kb")
    with originals.keeping("a", pdf, stored=lambda d: False):
        assert originals.path("a").read_bytes() == pdf.read_bytes()
    with pytest.raises(RuntimeError), originals.keeping("b", pdf, stored=lambda d: False):
        raise RuntimeError("storing failed")
    assert not originals.path("b").exists()  # the failed document's copy went with it
    cache = tmp_path / "kb" / PAGE_CACHE
    cache.mkdir()
    (cache / "a-1.png").write_bytes(b"png")
    (tmp_path / "kb" / ORIGINALS / "c.1234.tmp").write_bytes(b"half")
    originals.sweep(["other"])  # "a" is no longer in the catalog
    assert list((tmp_path / "kb" / ORIGINALS).iterdir()) == [] and list(cache.iterdir()) == []
