"""The BM25 kept on disk (knowledge.bm25_live) against the in-memory BM25Index it replaces:
the same scores on a fixture corpus through adds, removals, flushes, merges and restarts;
a saved index that is missing, stale, corrupt or from another catalog is rebuilt, never
searched; the catalog logs every change to the searchable passages."""
from __future__ import annotations

import json
import logging
import random
import shutil

import pytest

from knowledge import bm25_live, dedup
from knowledge.bm25 import BM25Index
from knowledge.bm25_live import STATE, LiveBM25
from knowledge.catalog import Catalog
from knowledge.tokenize import tokenize
from knowledge.types import Chunk

WORDS = ("insulin dose metformin diabetes kidney blood pressure aspirin fever child vaccine "
         "rash tablet daily morning night water food pregnancy heart asthma inhaler allergy "
         "penicillin amoxicillin 500mg E11.9 liver test clinic nurse ward visit hours pain "
         "糖尿病 患者 血压 治疗 bệnh tiểu đường").split()
QUERIES = ["insulin dose", "blood pressure at night", "metformin 500mg kidney", "糖尿病患者",
           "child fever rash", "asthma inhaler allergy penicillin", "bệnh tiểu đường",
           "vaccine", "clinic ward visit hours", "nothing matches zzz"]


def texts(rng: random.Random, n: int) -> list[str]:
    weights = [1 / (i + 1) for i in range(len(WORDS))]  # a few common words, many rare ones
    return [" ".join(rng.choices(WORDS, weights, k=rng.randint(2, 40))) for _ in range(n)]


class Corpus:
    """The same documents in a catalog (with its live BM25) and in a BM25Index."""

    def __init__(self, tmp_path):
        self.folder = tmp_path / "kb"
        self.catalog = Catalog(self.folder / "catalog.sqlite3")
        self.live = LiveBM25(self.catalog, self.folder / "bm25")
        self.ref = BM25Index()
        self.rng = random.Random(5)

    def reopen(self) -> LiveBM25:
        self.live = LiveBM25(self.catalog, self.folder / "bm25")
        return self.live

    def add(self, doc_id: str, n: int) -> None:
        chunks = [Chunk(f"{doc_id}-{i}", doc_id, f"{doc_id}.txt", t, 1, 0, len(t), i)
                  for i, t in enumerate(texts(self.rng, n))]
        tokens = [tokenize(c.index_text) for c in chunks]
        self.catalog.add_pending(doc_id, f"{doc_id}.txt", "", "0" * 64, 1, chunks, tokens,
                                 [dedup.content_hash(c.text) for c in chunks], [None] * n, {})
        self.catalog.commit_document(doc_id, None)
        self.live.apply([], [c.chunk_id for c in chunks])
        for c, t in zip(chunks, tokens):
            self.ref.add(c, t)

    def delete(self, doc_id: str) -> None:
        removed = self.catalog.canonical_ids(doc_id)
        self.catalog.delete_document(doc_id)
        self.live.apply(removed, [])
        for cid in removed:
            self.ref.remove(cid)

    def assert_same(self) -> None:
        live, ref = self.live.refresh(), self.ref
        assert len(live) == len(ref) and live.ids() == ref.ids()
        for q in QUERIES:
            every = {h.chunk.chunk_id: h.score for h in live.search(q, 10 ** 6)}
            assert every == {h.chunk.chunk_id: h.score for h in ref.search(q, 10 ** 6)}, q
            assert [h.score for h in live.search(q, 5)] == [h.score for h in ref.search(q, 5)]
            assert live.expand(q) == ref.expand(q)
        assert [live.idf(t) for t in tokenize(" ".join(WORDS))] == \
               [ref.idf(t) for t in tokenize(" ".join(WORDS))]


@pytest.fixture
def small(monkeypatch):
    """Tiny flush, fanout and rebuild blocks, so a few documents exercise them all."""
    monkeypatch.setattr(bm25_live, "FLUSH", 15)
    monkeypatch.setattr(bm25_live, "FANOUT", 2)
    monkeypatch.setattr(bm25_live, "BLOCK", 20)


def segment_files(corpus: Corpus) -> set[str]:
    return {p.name for p in (corpus.folder / "bm25").glob("seg-*.bm25")}


def test_scores_match_bm25index_through_adds_removals_merges_and_restarts(tmp_path, small):
    c = Corpus(tmp_path)
    for d in range(12):
        c.add(f"d{d}", 6 + d % 5)
        if d % 4 == 3:
            c.delete(f"d{d - 2}")
    c.assert_same()  # segments, tombstones and the delta together
    assert len(segment_files(c)) >= 2
    c.reopen()
    c.assert_same()  # a restart: the saved segments plus the log since
    for d in range(12, 20):
        c.add(f"d{d}", 9)
    c.delete("d0")
    c.assert_same()
    c.live.load(c.catalog.ready_chunks_with_tokens())  # a rebuild (kb check --repair)
    c.assert_same()
    assert len(segment_files(c)) == 1  # one merged segment; the blocks were swept
    c.catalog.close()


def test_a_restart_uses_the_saved_index_and_only_replays_the_log(tmp_path, small, monkeypatch):
    c = Corpus(tmp_path)
    for d in range(6):
        c.add(f"d{d}", 8)
    c.add("late", 3)  # below the flush size: only in the log and in memory
    c.catalog.delete_document("d1")  # a change whose process died before BM25 saw it
    for cid in [f"d1-{i}" for i in range(8)]:
        c.ref.remove(cid)
    files = segment_files(c)
    monkeypatch.setattr(LiveBM25, "_rebuild", lambda self: pytest.fail("rebuilt"))
    c.reopen()
    c.assert_same()
    assert segment_files(c) == files
    c.catalog.close()


def _corrupt_segment(folder):
    path = next(folder.glob("seg-*.bm25"))
    data = bytearray(path.read_bytes())
    header = json.loads(data[16:16 + int.from_bytes(data[8:16], "little")])
    data[header["arrays"]["ids"]["offset"] + 1] ^= 0xFF  # a chunk id: checked at each open
    path.write_bytes(bytes(data))


def _future_state(folder):
    state = json.loads((folder / STATE).read_text())
    (folder / STATE).write_text(json.dumps({**state, "generation": state["generation"] + 99}))


def _other_catalog(folder):
    state = json.loads((folder / STATE).read_text())
    (folder / STATE).write_text(json.dumps({**state, "catalog": "someone-else"}))


@pytest.mark.parametrize("damage", [
    lambda folder: (folder / STATE).unlink(),
    lambda folder: (folder / STATE).write_text("{not json"),
    _corrupt_segment,
    lambda folder: next(folder.glob("seg-*.bm25")).write_bytes(b"DOCBM25\n" + b"\0" * 40),
    _future_state,
    _other_catalog,
], ids=["missing", "unreadable", "corrupt", "cut-short", "from-the-future", "other-catalog"])
def test_a_damaged_or_stale_saved_index_is_rebuilt_never_searched(tmp_path, small, damage, caplog):
    c = Corpus(tmp_path)
    for d in range(5):
        c.add(f"d{d}", 8)
    damage(c.folder / "bm25")
    with caplog.at_level(logging.INFO, logger="knowledge.bm25_live"):
        c.reopen()
        c.assert_same()
    assert "building it from the catalog" in caplog.text
    c.catalog.close()


def test_a_saved_index_older_than_the_log_reaches_back_is_rebuilt(tmp_path, small, caplog):
    c = Corpus(tmp_path)
    for d in range(3):
        c.add(f"d{d}", 8)
    old = tmp_path / "old-bm25"
    shutil.copytree(c.folder / "bm25", old)  # a backup of the index...
    for d in range(3, 8):
        c.add(f"d{d}", 8)  # ...whose later changes were trimmed from the log by saves
    shutil.rmtree(c.folder / "bm25")
    shutil.copytree(old, c.folder / "bm25")
    c.reopen()
    c.assert_same()
    assert "log cannot bring it up to date" in caplog.text
    c.catalog.close()


def test_files_no_saved_state_names_are_swept(tmp_path, small):
    c = Corpus(tmp_path)
    for d in range(3):
        c.add(f"d{d}", 8)
    stray = c.folder / "bm25" / "seg-0123456789abcdef.bm25"
    stray.write_bytes(b"written by a merge that was killed")
    (c.folder / "bm25" / "state.json.tmp").write_text("{}")
    c.reopen().refresh()
    assert not stray.exists() and not (c.folder / "bm25" / "state.json.tmp").exists()
    c.assert_same()
    c.catalog.close()


def test_the_catalog_logs_every_change_to_the_searchable_passages(tmp_path):
    catalog = Catalog(tmp_path / "catalog.sqlite3")
    chunks = [Chunk(f"a-{i}", "a", "a.txt", t, 1, 0, 1, i) for i, t in enumerate("xyz")]
    args = (["t"] * 3, ["h"] * 3, [None] * 3)
    catalog.add_pending("a", "a.txt", "", "0" * 64, 1, chunks, *args, {})
    assert catalog.generation() == 0  # pending: not searchable yet
    catalog.commit_document("a", None)
    assert catalog.changes_since(0, 100) == (3, [("a-0", True), ("a-1", True), ("a-2", True)])
    dups = [Chunk(f"b-{i}", "b", "b.txt", t, 1, 0, 1, i) for i, t in enumerate("xyz")]
    catalog.add_pending("b", "b.txt", "", "1" * 64, 1, dups, *args, {0: "a-0", 1: "a-1", 2: "a-2"})
    catalog.commit_document("b", None)
    assert catalog.generation() == 3  # duplicates are not searchable
    catalog.delete_document("a")  # its duplicates in b are promoted in the same transaction
    _, changes = catalog.changes_since(3, 100)
    assert sorted(changes) == sorted([(f"a-{i}", False) for i in range(3)]
                                     + [(f"b-{i}", True) for i in range(3)])
    catalog.trim_changes(6)
    assert catalog.changes_since(5, 100) is None  # trimmed past it: the log cannot tell
    assert catalog.changes_since(6, 100) == (9, changes[3:])
    assert catalog.changes_since(6, 2) is None and catalog.changes_since(99, 100) is None
    catalog.close()


def test_a_merge_keeps_the_live_rows_in_order_with_their_postings(tmp_path):
    import numpy as np
    from collections import Counter

    from knowledge.bm25_segment import Segment, merge, write_segment

    rng = random.Random(1)
    parts, rows = [], {}
    for name, n in (("a", 300), ("b", 200), ("c", 40)):
        rows[name] = [(f"{name}{i}", Counter(t), len(t))
                      for i, t in enumerate(rng.choices(WORDS, k=rng.randint(1, 30)) for _ in range(n))]
        write_segment(tmp_path / name, rows[name])
        parts.append(Segment(tmp_path / name))
    dead_a = np.arange(300) % 3 == 0
    merge(tmp_path / "m", [(parts[0], dead_a), (parts[1], None), (parts[2], np.ones(40, bool))])
    merged = Segment(tmp_path / "m")
    merged.verify()
    live = [r for r, d in zip(rows["a"], dead_a) if not d] + rows["b"]  # all of c is dead
    assert merged.chunk_ids() == [cid for cid, _, _ in live]
    assert merged.total == sum(n for _, _, n in live)
    for term in set(WORDS):
        found = merged.postings(term)
        got = list(zip(*(a.tolist() for a in found))) if found else []
        assert got == [(i, c[term]) for i, (_, c, _) in enumerate(live) if term in c], term
    assert all(merged.row_of(cid) == i for i, (cid, _, _) in enumerate(live))
