from knowledge.fusion import reciprocal_rank_fusion
from knowledge.types import Chunk, Hit


def c(cid, text="same text"):
    return Chunk(cid, "d", "f.txt", text, 1, 0, 1, 0)


def test_rrf_worked_example():
    bm25 = [Hit(c("a"), 9.0), Hit(c("b"), 5.0), Hit(c("c"), 1.0)]
    dense = [Hit(c("c"), 0.9), Hit(c("a"), 0.8)]
    fused = reciprocal_rank_fusion({"bm25": bm25, "dense": dense}, k=1)
    # a: 1/2 + 1/3 = .8333, c: 1/4 + 1/2 = .75, b: 1/3
    assert [h.chunk.chunk_id for h in fused] == ["a", "c", "b"]
    assert round(fused[0].score, 4) == 0.8333
    assert fused[0].scores == {"bm25": 9.0, "dense": 0.8, "fused": fused[0].score}
    assert fused[2].scores == {"bm25": 5.0, "fused": fused[2].score}


def test_rrf_dedups_by_id_not_text_and_does_not_mutate_inputs():
    a, b = Hit(c("a"), 1.0), Hit(c("b"), 0.5)  # same text, different chunks
    fused = reciprocal_rank_fusion({"x": [a, b]}, k=60, limit=5)
    assert [h.chunk.chunk_id for h in fused] == ["a", "b"]
    assert a.score == 1.0 and a.scores == {}


def test_rrf_limit_and_empty():
    assert reciprocal_rank_fusion({"x": [], "y": []}) == []
    hits = [Hit(c(str(i)), 1.0) for i in range(10)]
    assert len(reciprocal_rank_fusion({"x": hits}, limit=3)) == 3


def test_rrf_keeps_the_detail_of_hits_fused_again():
    kb_a = [Hit(c("a"), 0.03, "A", {"bm25": 4.0, "dense": 0.8, "fused": 0.03})]
    kb_b = [Hit(c("b"), 0.02, "B", {"bm25": 2.0, "fused": 0.02})]
    fused = reciprocal_rank_fusion({"A": kb_a, "B": kb_b}, k=60)
    assert [(h.chunk.chunk_id, h.kb) for h in fused] == [("a", "A"), ("b", "B")]
    assert fused[0].scores == {"bm25": 4.0, "dense": 0.8, "A": 0.03, "fused": 1 / 61}
