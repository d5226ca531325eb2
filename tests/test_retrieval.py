"""Retrieval pieces: modes, fusion choice, embedding cache, and the evaluation harness."""
import json

import pytest

from knowledge.embed_cache import CachedEmbedder
from benchmarks.retrieval import build_kb, evaluate, load_beir
from knowledge.retrievers import FusionConfig
from tests.fakes import HashEmbedder

DOCS = {
    "d1": "Metformin is the first medicine for type 2 diabetes; take 500 mg with meals.",
    "d2": "Influenza vaccine is given every autumn to adults and children.",
    "d3": "High blood pressure is treated with lifestyle change and medicines like amlodipine.",
    "d4": "Metformin is the first medicine for type 2 diabetes; take 500 mg with meals.",  # duplicate of d1
}
QUERIES = {"q1": "metformin dose for diabetes", "q2": "when to get the flu vaccine", "q3": "amlodipine blood pressure"}
QRELS = {"q1": {"d1": 2, "d4": 1}, "q2": {"d2": 2}, "q3": {"d3": 1}}


@pytest.fixture
def beir(tmp_path):
    folder = tmp_path / "set"
    (folder / "qrels").mkdir(parents=True)
    (folder / "corpus.jsonl").write_text(
        "\n".join(json.dumps({"_id": k, "title": "", "text": v}) for k, v in DOCS.items()))
    (folder / "queries.jsonl").write_text(
        "\n".join(json.dumps({"_id": k, "text": v}) for k, v in QUERIES.items()))
    rows = ["query-id\tcorpus-id\tscore"] + [f"{q}\t{d}\t{s}" for q, ds in QRELS.items() for d, s in ds.items()]
    (folder / "qrels" / "test.tsv").write_text("\n".join(rows))
    return folder


def test_harness_scores_a_tiny_set_perfectly_and_credits_duplicates(beir, tmp_path):
    corpus, queries, qrels = load_beir(beir, "test")
    assert len(corpus) == 4 and set(queries) == {"q1", "q2", "q3"}
    lib, kb = build_kb(corpus, tmp_path / "work", HashEmbedder(), 100, 0)
    assert kb.chunk_count() == 3  # d4 is recorded as a duplicate of d1
    for config in ("bm25", "dense", "hybrid", "hybrid-weighted"):
        metrics, latency = evaluate(kb, queries, qrels, config)
        assert metrics["R@100"] == 1.0, config  # d4 found through its duplicate
        assert metrics["MRR@10"] == 1.0, config
        assert "retrieve" in latency
    lib.close()


def test_modes_and_fusion_config(beir, tmp_path):
    corpus, _, _ = load_beir(beir, "test")
    lib, kb = build_kb(corpus, tmp_path / "work", HashEmbedder(), 100, 0)
    for mode in ("bm25", "dense", "hybrid"):
        assert kb.search("amlodipine", 1, mode=mode)[0].chunk.source == "d3"
    hit = kb.search("amlodipine", 1, fusion=FusionConfig("weighted", dense_weight=0.3))[0]
    assert hit.chunk.source == "d3" and {"bm25", "dense", "fused"} <= set(hit.scores)
    with pytest.raises(ValueError):
        FusionConfig(dense_weight=1.5)
    lib.close()


def test_embedding_cache_hits_on_the_second_call(tmp_path):
    cached = CachedEmbedder(HashEmbedder(), tmp_path / "cache.sqlite3")
    first = cached.embed_passages(["a b c", "d e f"])
    again = CachedEmbedder(HashEmbedder(), tmp_path / "cache.sqlite3").embed_passages(["d e f", "a b c"])
    assert (first[::-1] == again).all()
    assert cached.misses == 2


def test_pseudo_relevance_feedback_adds_weighted_terms_from_top_hits():
    from knowledge.bm25 import BM25Index
    from knowledge.tokenize import tokenize
    from knowledge.types import Chunk

    idx = BM25Index()
    texts = {"a": "metformin lowers glucose in type 2 diabetes",
             "b": "metformin may upset the stomach; glucose checks are advised",
             "c": "asthma inhalers open the airways",
             "d": "diabetes diet advice"}
    for cid, t in texts.items():
        idx.add(Chunk(cid, cid, cid, t, 0, 0, len(t), 0), tokenize(t))
    weights = idx.expand("metformin", docs=2, terms=10, weight=0.3)
    assert weights["metformin"] == 1.0
    assert "diabet" in weights and all(0 < w <= 0.3 for t, w in weights.items() if t != "metformin")
    hits = idx.search_terms(weights, 4)
    assert [h.chunk.chunk_id for h in hits[:2]] in (["a", "b"], ["b", "a"])
    assert "d" in [h.chunk.chunk_id for h in hits]  # found only through the expansion
    assert "c" not in [h.chunk.chunk_id for h in hits]
