"""The consistency check: the catalog against the vector store and BM25, and one file
stored twice; each disagreement reported, then repaired."""
from __future__ import annotations

from dataclasses import replace

from assistant.core import Assistant
from assistant.status_text import consistency
from ingest.pipeline import drain
from tests.conftest import make_settings
from tests.fakes import HashEmbedder, ScriptedLLM
from tests.helpers.docs import make_clinic_docs


def test_check_reports_every_disagreement_and_repair_mends_them(tmp_path):
    a = Assistant(make_settings(tmp_path), llm=ScriptedLLM("x"), embedder=HashEmbedder())
    docs = make_clinic_docs(tmp_path / "docs")
    drain(a.documents.ingest([docs["pdf"], docs["txt"], docs["docx"]]))
    kb = a.library.get("default")
    (clean,) = a.documents.check()
    assert clean.consistent and clean.passages == kb.chunk_count() > 3
    # break it: vectors lost and one left over, BM25 drifted, one file stored twice
    ids = sorted(kb.catalog.canonical_ids())
    kb.vectors.collection.delete(ids=ids[:2])
    stray = replace(kb.document_chunks(kb.documents()[0].doc_id)[0], chunk_id="stray-1")
    kb.vectors.upsert([stray], HashEmbedder().embed_passages([stray.text]))
    kb.search("visitors", 1)  # builds BM25
    kb.bm25.remove(ids[2])
    txt = next(d for d in kb.documents() if d.source == "visitors.txt")
    chunks = [replace(c, chunk_id="copy-" + c.chunk_id, doc_id="copy", source="copy.txt")
              for c in kb.document_chunks(txt.doc_id)]
    kb.add_document("copy", "copy.txt", txt.sha256, txt.pages, chunks, origin=txt.origin)
    (found,) = a.documents.check()
    assert not found.consistent
    assert set(found.missing_vectors) == set(ids[:2]) and found.orphan_vectors == ("stray-1",)
    assert found.missing_bm25 == (ids[2],) and found.duplicate_documents == ("copy.txt",)
    text = consistency(found)
    assert "2 missing from the vector store" in text and "kb check --repair --kb default" in text
    (fixed,) = a.documents.check(repair=True)
    assert fixed.repaired and "repaired." in consistency(fixed)
    (after,) = a.documents.check(every=True)
    assert after.consistent and after.passages == kb.chunk_count()
    assert {d.source for d in a.documents.list()} == {"handbook.pdf", "visitors.txt",
                                                       "pharmacy.docx"}
    assert kb.vectors.count() == kb.chunk_count()
    assert a.chat.search("amoxicillin dose for adults")[0].chunk.source == "handbook.pdf"
    a.close()
