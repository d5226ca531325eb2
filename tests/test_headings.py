"""The heading field: chunks re-scored by their section heading, vectors kept per heading."""
import numpy as np

from benchmarks.retrieval import build_kb, evaluate
from knowledge.headings import rescore
from knowledge.retrievers import FusionConfig
from knowledge.types import Chunk, Hit
from tests.fakes import HashEmbedder

CORPUS = [
    {"_id": "dose", "title": "Dosage of amoxicillin",
     "text": "Adults take 500 mg of amoxicillin three times a day for seven days."},
    {"_id": "side", "title": "Side effects of amoxicillin",
     "text": "Some people taking amoxicillin get diarrhoea or a rash; call a doctor if it spreads."},
    {"_id": "store", "title": "Storage of amoxicillin",
     "text": "Keep amoxicillin capsules dry, below 25 degrees, in the original pack."},
    {"_id": "plain", "title": "", "text": "Amoxicillin is a penicillin antibiotic."},
]


def _kb(tmp_path):
    return build_kb(CORPUS, tmp_path / "work", HashEmbedder(), 100, 0)


def test_a_matching_heading_lifts_its_chunk_and_is_shown(tmp_path):
    lib, kb = _kb(tmp_path)
    hits = kb.search("amoxicillin side effects", 4)
    assert hits[0].chunk.source == "side"
    assert hits[0].scores["heading"] == 1.0  # the best heading among the candidates
    assert kb.search("amoxicillin side effects", 4, fusion=FusionConfig(heading_weight=0.0))[0] \
        .scores.keys() == {"bm25", "dense", "fused"}
    metrics, latency = evaluate(kb, {"q": "amoxicillin storage"}, {"q": {"store": 1}}, "hybrid-weighted")
    assert metrics["MRR@10"] == 1.0 and "heading" in latency
    lib.close()


def test_heading_vectors_are_stored_at_ingestion_pruned_on_delete_and_backfilled(tmp_path):
    lib, kb = _kb(tmp_path)
    titles = [d["title"] for d in CORPUS if d["title"]]
    assert set(kb.catalog.heading_vectors(titles)) == set(titles)
    kb.delete_document(kb.find_document("store").doc_id)
    assert set(kb.catalog.heading_vectors(titles)) == set(titles) - {"Storage of amoxicillin"}
    # a knowledge base built before headings were scored has none: the first search adds them
    with kb.catalog.transaction() as db:
        db.execute("DELETE FROM heading_vectors")
    assert kb.search("amoxicillin side effects", 3)[0].chunk.source == "side"
    stored = kb.catalog.heading_vectors(titles)
    assert set(stored) == set(titles) - {"Storage of amoxicillin"}
    expected = kb.embedder.embed_passages(["Side effects of amoxicillin"])[0]
    assert np.allclose(stored["Side effects of amoxicillin"], expected, atol=1e-6)
    lib.close()


def test_rescore_leaves_headingless_candidates_alone():
    c = lambda i: Chunk(i, "d", "f.pdf", "text", 1, 0, 4, 0)  # noqa: E731
    hits = [Hit(c("a"), 0.4, "kb", {"fused": 0.4}), Hit(c("b"), 0.2, "kb", {"fused": 0.2})]
    assert rescore(hits, "q", np.ones(2), lambda h: None, lambda t: 1.0, 0.3) == hits
    assert rescore(hits, "q", np.ones(2), lambda h: None, lambda t: 1.0, 0.0) == hits
