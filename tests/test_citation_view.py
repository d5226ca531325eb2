"""Citations shown in full: the quote's span in the passage, the stored original PDF and
its page rendered to PNG (scripted LLM, hash embedder, real PDFs and pypdfium2)."""
import pytest
from PIL import Image

import assistant.citation_view as cv
from assistant.citation_view import quote_span
from assistant.core import Assistant
from ingest.pipeline import drain
from knowledge.errors import KnowledgeError
from tests.conftest import make_settings
from tests.fakes import HashEmbedder, ScriptedLLM
from tests.helpers.docs import make_clinic_docs
from tests.helpers.pdfgen import write_pdf

DOSE = "For adults, the usual dose of amoxicillin is 500 mg every 8 hours."


@pytest.fixture
def docs(tmp_path):
    return make_clinic_docs(tmp_path / "docs")


@pytest.fixture
def assistant(tmp_path):
    a = Assistant(make_settings(tmp_path), llm=ScriptedLLM("x"), embedder=HashEmbedder())
    yield a
    a.close()


def _doc(assistant, source):
    return next(d for d in assistant.documents.list() if d.source == source)


def _chunk_on_page(assistant, source, page):
    kb = assistant.library.get("default")
    return next(c for c in kb.document_chunks(_doc(assistant, source).doc_id) if c.page == page)


# --- the quote's span -----------------------------------------------------------------
def test_a_shortened_quote_spans_from_its_first_piece_to_its_last():
    text = "Chapter 2. Antibiotic dosing.\n" + DOSE + "\nThe course lasts 7 days."
    start = text.index("For adults")
    # best_quote cuts long sentences to "...…"; the model's sentence may skip words too
    assert quote_span(text, "For adults, the usual dose of amoxi…") == (start, start + 35)
    span = quote_span(text, "for adults, the usual dose … every 8 hours")
    assert text[span[0]:span[1]] == DOSE[:-1]
    # a quote whose words were re-spaced across the line break still finds the sentence
    assert quote_span(text, "dosing. For   adults") == (text.index("dosing."), start + 10)


def test_a_slightly_different_quote_finds_the_closest_passage():
    text = "Visitors must register at the front desk and wear a visitor badge."
    span = quote_span(text, "Visitors must register at the front desk and wear a badge.")
    assert span is not None and text[span[0]:span[1]].startswith("Visitors must register")
    assert quote_span(text, "") is None and quote_span("", "anything") is None


# --- stored originals and page images ---------------------------------------------------
def test_a_pdf_citation_shows_its_page_rendered_and_the_quote_marked(assistant, docs):
    drain(assistant.documents.ingest([docs["pdf"], docs["txt"]]))
    kb = assistant.library.get("default")
    pdf = _doc(assistant, "handbook.pdf")
    original = kb.root / "originals" / f"{pdf.doc_id}.pdf"
    assert original.read_bytes() == docs["pdf"].read_bytes()
    assert list((kb.root / "originals").iterdir()) == [original]  # the .txt is not kept

    chunk = _chunk_on_page(assistant, "handbook.pdf", 2)
    view = assistant.chat.citation(chunk.chunk_id, "default", DOSE[:30] + "…")
    assert (view.source, view.page, view.label) == ("handbook.pdf", 2, "handbook.pdf, p. 2")
    assert view.quote == DOSE[:29] and view.text == chunk.text
    assert view.page_image.parent == kb.root / "page-cache"
    with Image.open(view.page_image) as image:
        assert image.format == "PNG"
        assert image.size == (918, 1188)  # Letter at 1.5 x 72 dpi
        assert len(set(image.convert("L").getdata())) > 2  # text was drawn on the page


def test_the_rendered_page_is_cached_and_reused(assistant, docs, monkeypatch):
    drain(assistant.documents.ingest([docs["pdf"]]))
    chunk = _chunk_on_page(assistant, "handbook.pdf", 1)
    first = assistant.chat.citation(chunk.chunk_id, "default").page_image
    stamp = first.stat().st_mtime_ns

    def no_render(*args, **kwargs):
        raise AssertionError("the page was rendered again")

    monkeypatch.setattr(cv.subprocess, "run", no_render)
    again = assistant.chat.citation(chunk.chunk_id, "default")
    assert again.page_image == first and first.stat().st_mtime_ns == stamp
    assert again.span is None  # no quote given


def test_text_files_and_missing_originals_have_no_page_image(assistant, docs):
    drain(assistant.documents.ingest([docs["pdf"], docs["txt"]]))
    txt = assistant.documents.list()[-1]
    kb = assistant.library.get("default")
    chunk = kb.document_chunks(txt.doc_id)[0]
    view = assistant.chat.citation(chunk.chunk_id, "default", "Visiting hours on the ward")
    assert view.page_image is None and view.source == "visitors.txt"
    assert view.quote == "Visiting hours on the ward"
    pdf_chunk = _chunk_on_page(assistant, "handbook.pdf", 3)
    kb.original_path(pdf_chunk.doc_id).unlink()  # e.g. ingested before originals were kept
    assert assistant.chat.citation(pdf_chunk.chunk_id, "default").page_image is None


def test_an_unreadable_original_gives_no_image_and_no_error(assistant, docs):
    drain(assistant.documents.ingest([docs["pdf"]]))
    chunk = _chunk_on_page(assistant, "handbook.pdf", 2)
    kb = assistant.library.get("default")
    kb.original_path(chunk.doc_id).write_bytes(b"%PDF-1.4 truncated")
    view = assistant.chat.citation(chunk.chunk_id, "default")
    assert view.page_image is None and view.text == chunk.text
    assert not list((kb.root / "page-cache").glob("*.tmp"))


def test_an_unknown_passage_is_a_knowledge_error(assistant):
    with pytest.raises(KnowledgeError, match="deleted or replaced"):
        assistant.chat.citation("no-such-chunk", "default")


# --- originals follow their document ----------------------------------------------------
def test_deleting_a_document_removes_its_original_and_rendered_pages(assistant, docs):
    drain(assistant.documents.ingest([docs["pdf"]]))
    kb = assistant.library.get("default")
    chunk = _chunk_on_page(assistant, "handbook.pdf", 2)
    image = assistant.chat.citation(chunk.chunk_id, "default").page_image
    assert image.is_file() and kb.original_path(chunk.doc_id).is_file()
    assistant.documents.delete(chunk.doc_id)
    assert not image.exists() and not kb.original_path(chunk.doc_id).exists()
    with pytest.raises(KnowledgeError):
        assistant.chat.citation(chunk.chunk_id, "default")


def test_a_replaced_pdf_keeps_only_the_new_original(assistant, docs):
    drain(assistant.documents.ingest([docs["pdf"]]))
    old = _doc(assistant, "handbook.pdf").doc_id
    write_pdf(docs["pdf"], [["Riverside Clinic Handbook, second edition."],
                            ["For adults, the usual dose of amoxicillin is 250 mg."]])
    report = drain(assistant.documents.ingest([docs["pdf"]]))
    assert report.results[0].status == "replaced"
    new = _doc(assistant, "handbook.pdf").doc_id
    kb = assistant.library.get("default")
    assert sorted(p.name for p in (kb.root / "originals").iterdir()) == [f"{new}.pdf"]
    assert new != old


def test_folder_sync_removes_the_original_of_a_deleted_file(assistant, docs):
    folder = docs["pdf"].parent
    drain(assistant.documents.sync_folder(folder))
    kb = assistant.library.get("default")
    pdf = _doc(assistant, "handbook.pdf")
    assert kb.original_path(pdf.doc_id).is_file()
    docs["pdf"].unlink()
    report = drain(assistant.documents.sync_folder(folder))
    assert "deleted" in [r.status for r in report.results]
    assert not list((kb.root / "originals").glob("*.pdf"))


def test_a_failed_ingest_leaves_no_original(assistant, docs, monkeypatch):
    kb = assistant.library.get("default")

    def broken(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(kb, "add_document", broken)
    report = drain(assistant.documents.ingest([docs["pdf"]]))
    assert report.results[0].status == "failed" and "disk full" in report.results[0].reason
    assert not list((kb.root / "originals").iterdir())


def test_reopening_removes_what_a_crash_left_in_originals(tmp_path, docs):
    a = Assistant(make_settings(tmp_path), llm=ScriptedLLM("x"), embedder=HashEmbedder())
    drain(a.documents.ingest([docs["pdf"]]))
    kb = a.library.get("default")
    kept = kb.original_path(a.documents.list()[0].doc_id)
    folder = kb.root / "originals"
    (folder / "0123456789abcdef.pdf").write_bytes(b"%PDF of a document never committed")
    (folder / "0123456789abcdef.1a2b3c4d.tmp").write_bytes(b"half a copy")
    a.close()
    b = Assistant(make_settings(tmp_path), llm=ScriptedLLM("x"), embedder=HashEmbedder())
    try:
        b.library.get("default")
        assert list(folder.iterdir()) == [kept]
    finally:
        b.close()
