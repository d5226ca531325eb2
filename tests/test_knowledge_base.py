"""Ingest, search, replace and delete with real Chroma and BM25 on tmp dirs (hash embedder)."""
import pytest

from assistant.core import Assistant
from ingest.pipeline import drain
from knowledge.errors import IndexMismatch, KnowledgeError
from tests.conftest import make_settings
from tests.fakes import HashEmbedder, ScriptedLLM
from tests.helpers.docs import make_clinic_docs


@pytest.fixture
def docs(tmp_path):
    return make_clinic_docs(tmp_path / "docs")


@pytest.fixture
def assistant(tmp_path):
    a = Assistant(make_settings(tmp_path), llm=ScriptedLLM("x"), embedder=HashEmbedder())
    yield a
    a.close()


def test_ingest_reports_each_file_and_lists_documents(assistant, docs, tmp_path):
    bad = tmp_path / "bad.pdf"
    bad.write_bytes(b"not a pdf")
    events = []
    report = drain(assistant.documents.ingest([docs["pdf"], bad, docs["docx"], docs["txt"]]), events.append)
    assert [r.status for r in report.results] == ["added", "failed", "added", "added"]
    assert "PDF" in report.failed[0].reason
    assert events[-1].fraction == 1.0
    assert {e.stage for e in events} >= {"loading", "chunking", "embedding", "done", "failed"}
    listed = {d.source: (d.pages, d.chunks) for d in assistant.documents.list()}
    assert listed["handbook.pdf"][0] == 3 and listed["handbook.pdf"][1] >= 1
    assert set(listed) == {"handbook.pdf", "pharmacy.docx", "visitors.txt"}


def test_hybrid_search_finds_the_right_page(assistant, docs):
    drain(assistant.documents.ingest(list(docs.values())))
    hits = assistant.chat.search("amoxicillin dose for adults")
    assert (hits[0].chunk.source, hits[0].chunk.page) == ("handbook.pdf", 2)
    assert {"bm25", "dense", "fused"} <= set(hits[0].scores)
    assert hits[0].kb == "default"


def test_reingest_unchanged_is_a_noop_and_changed_file_replaces(assistant, docs):
    drain(assistant.documents.ingest([docs["txt"]]))
    again = drain(assistant.documents.ingest([docs["txt"]]))
    assert again.results[0].status == "unchanged"
    docs["txt"].write_text("Visitors must leave by 8 pm.", encoding="utf-8")
    changed = drain(assistant.documents.ingest([docs["txt"]]))
    assert changed.results[0].status == "replaced"
    (doc,) = assistant.documents.list()
    kb = assistant.library.get("default")
    assert kb.vectors.count() == doc.chunks
    assert "8 pm" in assistant.chat.search("when must visitors leave")[0].chunk.text


def test_one_file_reached_through_its_folder_and_by_its_path_is_one_document(assistant, docs,
                                                                              tmp_path):
    folder = docs["txt"].parent
    synced = drain(assistant.documents.sync_folder(folder))
    stored = {d.source: d for d in assistant.documents.list()}
    chunks = assistant.library.get("default").chunk_count()
    # the same file by its own path, and through a symlink with '..' in it
    (tmp_path / "elsewhere").mkdir()
    (tmp_path / "elsewhere" / "link.txt").symlink_to(docs["txt"])
    for path in (docs["txt"], tmp_path / "elsewhere" / ".." / "elsewhere" / "link.txt"):
        again = drain(assistant.documents.ingest([path]))
        assert again.results[0].status == "unchanged"
        assert again.results[0].source == "visitors.txt"
    assert {d.source for d in assistant.documents.list()} == set(stored)
    assert assistant.library.get("default").chunk_count() == chunks
    # changed, then added by its path: it replaces the one document, under its first name
    docs["txt"].write_text("Visitors must leave by 8 pm.", encoding="utf-8")
    changed = drain(assistant.documents.ingest([docs["txt"]]))
    assert changed.results[0].status == "replaced"
    assert len(assistant.documents.list()) == len(stored)
    # and the folder's next sync keeps it (its file is still there)
    resync = drain(assistant.documents.sync_folder(folder))
    assert {r.status for r in resync.results} == {"unchanged"}
    assert len(synced.results) == len(resync.results)


def test_delete_removes_vectors_bm25_and_catalog(assistant, docs):
    drain(assistant.documents.ingest([docs["pdf"], docs["txt"]]))
    pdf = next(d for d in assistant.documents.list() if d.source == "handbook.pdf")
    assistant.documents.delete(pdf.doc_id)
    kb = assistant.library.get("default")
    assert [d.source for d in assistant.documents.list()] == ["visitors.txt"]
    assert kb.vectors.count() == kb.chunk_count()
    assert all(h.chunk.source != "handbook.pdf" for h in assistant.chat.search("amoxicillin"))
    with pytest.raises(KnowledgeError):
        assistant.documents.delete(pdf.doc_id)


def test_index_survives_restart(tmp_path, docs):
    a = Assistant(make_settings(tmp_path), llm=ScriptedLLM("x"), embedder=HashEmbedder())
    drain(a.documents.ingest([docs["pdf"]]))
    a.close()
    b = Assistant(make_settings(tmp_path), llm=ScriptedLLM("x"), embedder=HashEmbedder())
    assert b.chat.search("amoxicillin")[0].chunk.page == 2
    b.close()


def test_a_knowledge_base_opens_for_search_once_and_lazily(tmp_path, docs):
    a = Assistant(make_settings(tmp_path), llm=ScriptedLLM("x"), embedder=HashEmbedder())
    drain(a.documents.ingest([docs["pdf"]]))
    chunks = a.library.get("default").chunk_count()
    a.close()
    b = Assistant(make_settings(tmp_path), llm=ScriptedLLM("x"), embedder=HashEmbedder())
    kb = b.library.get("default")
    assert len(kb.bm25) == 0  # starting reads neither BM25 nor the vectors
    assert kb.warm() == chunks and len(kb.bm25) == chunks
    assert kb.warm() is None  # once
    assert b.library.warm("default") is kb
    assert b.chat.search("amoxicillin")[0].chunk.page == 2
    b.close()


def test_opening_with_another_embedder_is_a_clear_error(tmp_path, docs):
    a = Assistant(make_settings(tmp_path), llm=ScriptedLLM("x"), embedder=HashEmbedder())
    a.close()
    with pytest.raises(IndexMismatch, match="re-index"):
        Assistant(make_settings(tmp_path), llm=ScriptedLLM("x"), embedder=HashEmbedder("other"))


def test_knowledge_bases_are_separate(assistant, docs):
    assistant.documents.create_knowledge_base("pharmacy")
    drain(assistant.documents.ingest([docs["docx"]], kb="pharmacy"))
    assert assistant.documents.knowledge_bases() == ["default", "pharmacy"]
    assert assistant.documents.list("default") == []
    assert assistant.chat.search("pharmacy Saturday", kb="pharmacy")[0].kb == "pharmacy"
    with pytest.raises(KnowledgeError):
        assistant.documents.create_knowledge_base("bad name!")
    assistant.documents.delete_knowledge_base("pharmacy")
    assert assistant.documents.knowledge_bases() == ["default"]


def test_files_over_the_size_limit_are_refused_up_front(tmp_path, docs):
    s = make_settings(tmp_path, ingest={"max_file_mb": 0.0001})
    a = Assistant(s, llm=ScriptedLLM("x"), embedder=HashEmbedder())
    report = drain(a.documents.ingest([docs["pdf"]]))
    assert report.results[0].status == "failed" and "limit" in report.results[0].reason
    a.close()


def test_one_question_searches_several_knowledge_bases(assistant, docs):
    assistant.documents.create_knowledge_base("pharmacy")
    drain(assistant.documents.ingest([docs["pdf"]]))
    drain(assistant.documents.ingest([docs["docx"]], kb="pharmacy"))
    hits = assistant.chat.search("amoxicillin dose and pharmacy Saturday hours", kb=["default", "pharmacy"], top_k=6)
    assert {h.kb for h in hits} == {"default", "pharmacy"}
    assert {h.chunk.source for h in hits} == {"handbook.pdf", "pharmacy.docx"}
    assert all("fused" in h.scores for h in hits)


def test_dense_search_scores_as_the_llama_index_store_did(tmp_path):
    """The dense search asks Chroma for ids and distances only; its scores must stay the
    ones llama-index's Chroma store gave (the evidence thresholds are calibrated on
    them), in the same order."""
    import chromadb
    from llama_index.core.vector_stores.types import VectorStoreQuery

    from knowledge.types import Chunk
    from knowledge.vectors import VectorIndex

    embedder = HashEmbedder()
    index = VectorIndex(chromadb.PersistentClient(str(tmp_path / "chroma")), "kb-test", embedder)
    texts = [f"passage {i} about {w}" for i, w in enumerate(
        ["asthma", "insulin", "fever", "hepatitis", "vaccines", "sleep", "diet", "pain"])]
    chunks = [Chunk(chunk_id=f"c{i}", doc_id=f"d{i}", source=f"f{i}.txt", text=t, page=1,
                    start=0, end=len(t), ordinal=0) for i, t in enumerate(texts)]
    index.upsert(chunks, embedder.embed_passages(texts))
    got = index.search("insulin for diabetes", 5)
    old = index._store.query(VectorStoreQuery(
        query_embedding=index.query_vector("insulin for diabetes").tolist(), similarity_top_k=5))
    assert [i for i, _ in got] == old.ids
    assert [s for _, s in got] == pytest.approx(old.similarities)
    assert len(got) == 5 and all(0 < s <= 1.0001 for _, s in got)
