"""Incremental, deduplicated and crash-safe ingestion on real Chroma + SQLite.

The kill -9 test runs the real CLI (`python -m assistant ingest`, real e5 embedder) in
a subprocess, kills it at several moments, and checks after each restart that Chroma,
BM25 and the catalog agree: no lost, orphaned or duplicate chunks, and the interrupted
file is ingested on the next run.
"""
import os
import signal
import subprocess
import sys
import threading
import time

import pytest

from assistant.core import Assistant
from assistant.status_text import knowledge_base_status
from ingest.pipeline import drain
from tests.conftest import ROOT, make_settings, shared_models_dir
from tests.fakes import HashEmbedder, ScriptedLLM

PARA = ("Patients with {0} should take their medicine with food. The usual adult dose of "
        "{0} is {1} mg twice a day. Report any rash, fever or swelling to the clinic at once. "
        "Keep {0} away from children and store it below 25 degrees.")


def write_corpus(folder, n=8, paragraphs=12):
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(n):
        body = "\n\n".join(PARA.format(f"drug{i}x{j}", 100 + i * 10 + j) for j in range(paragraphs))
        (folder / f"leaflet{i:02d}.txt").write_text(body, encoding="utf-8")
    return sorted(folder.iterdir())


def assistant_for(tmp_path, embedder=None):
    return Assistant(make_settings(tmp_path), llm=ScriptedLLM("x"), embedder=embedder or HashEmbedder())


def assert_consistent(kb):
    """Chroma holds exactly the catalog's canonical chunks; nothing pending; one
    document per source."""
    canonical = set(kb.catalog.canonical_ids())
    assert (kb.vectors.ids() if kb.vectors else set()) == canonical
    assert kb.catalog.pending_doc_ids() == []
    assert kb.catalog.tombstones() == []
    sources = [d.source for d in kb.documents()]
    assert len(sources) == len(set(sources))
    kb._refresh_bm25()
    assert len(kb.bm25) == len(canonical) and all(cid in kb.bm25 for cid in canonical)


def test_exact_and_near_duplicates_are_recorded_not_embedded(tmp_path):
    a = assistant_for(tmp_path)
    docs = tmp_path / "docs"
    docs.mkdir()
    base = "\n\n".join(PARA.format(f"med{j}", 200 + j) for j in range(6))
    (docs / "a.txt").write_text(base, encoding="utf-8")
    (docs / "copy.txt").write_text(base, encoding="utf-8")  # exact copy
    near = base.replace("store it below 25 degrees", "store it below 25 degrees Celsius")
    (docs / "near.txt").write_text(near, encoding="utf-8")
    report = drain(a.documents.ingest([docs / "a.txt", docs / "copy.txt", docs / "near.txt"]))
    by = {r.source: r for r in report.results}
    assert by["a.txt"].duplicates == 0
    assert by["copy.txt"].duplicates == by["copy.txt"].chunks > 0
    assert by["near.txt"].duplicates == by["near.txt"].chunks
    kb = a.library.get("default")
    assert kb.vectors.count() == by["a.txt"].chunks
    assert_consistent(kb)
    # deleting the original promotes its duplicates: nothing becomes unfindable
    a.documents.delete(by["a.txt"].doc_id)
    assert_consistent(kb)
    assert kb.vectors.count() == by["copy.txt"].chunks
    hit = a.chat.search("med3 usual adult dose")[0]
    assert hit.chunk.source in ("copy.txt", "near.txt") and "med3" in hit.chunk.text
    a.close()


def test_repeated_chunks_within_one_file_are_embedded_once(tmp_path):
    a = assistant_for(tmp_path)
    f = tmp_path / "dup.txt"
    block = PARA.format("aspirin", 300)
    f.write_text("\n\n".join([block, "Unique middle paragraph about insulin storage and pens.", block] * 3),
                 encoding="utf-8")
    (r,) = drain(a.documents.ingest([f])).results
    assert r.duplicates >= 1
    assert a.library.get("default").vectors.count() == r.chunks - r.duplicates
    a.close()


def test_folder_sync_adds_changes_and_deletes(tmp_path):
    a = assistant_for(tmp_path)
    folder = tmp_path / "watched"
    files = write_corpus(folder, n=3, paragraphs=3)
    first = drain(a.documents.sync_folder(folder))
    assert [r.status for r in first.results] == ["added"] * 3
    files[0].write_text("Leaflet zero was rewritten: take drugZ 5 mg at night.", encoding="utf-8")
    files[1].unlink()
    (folder / "sub").mkdir()
    (folder / "sub" / "new.md").write_text("# New\n\nA new leaflet about drugN.", encoding="utf-8")
    second = drain(a.documents.sync_folder(folder))
    status = {r.source: r.status for r in second.results}
    assert status == {"leaflet00.txt": "replaced", "leaflet02.txt": "unchanged",
                      "sub/new.md": "added", "leaflet01.txt": "deleted"}
    assert sorted(d.source for d in a.documents.list()) == ["leaflet00.txt", "leaflet02.txt", "sub/new.md"]
    assert "drugZ" in a.chat.search("drugZ at night")[0].chunk.text
    assert_consistent(a.library.get("default"))
    a.close()


def test_rename_keeps_the_index(tmp_path):
    a = assistant_for(tmp_path)
    a.documents.create_knowledge_base("clinic")
    drain(a.documents.ingest(write_corpus(tmp_path / "d", n=2, paragraphs=2), kb="clinic"))
    a.documents.rename_knowledge_base("clinic", "clinic-2026")
    assert a.documents.knowledge_bases() == ["clinic-2026", "default"]
    assert a.chat.search("drug1x1 dose", kb="clinic-2026")[0].chunk.source == "leaflet01.txt"
    a.close()
    b = assistant_for(tmp_path)  # and after a restart
    assert len(b.documents.list("clinic-2026")) == 2
    b.close()


def test_a_second_process_on_the_same_data_dir_is_refused(tmp_path):
    a = assistant_for(tmp_path)
    out = subprocess.run([sys.executable, "-m", "assistant", "kb", "list"], cwd=ROOT,
                         env=_cli_env(tmp_path / "data"), capture_output=True, text=True, timeout=120)
    assert out.returncode == 2 and "Another Docent process" in out.stderr
    a.close()
    out = subprocess.run([sys.executable, "-m", "assistant", "kb", "list"], cwd=ROOT,
                         env=_cli_env(tmp_path / "data"), capture_output=True, text=True, timeout=120)
    # released on close: now the only complaint is the (fake) embedder this KB was built with
    assert "Another Docent process" not in out.stderr and "re-index" in out.stderr


def test_interrupted_writes_are_undone_or_finished_on_open(tmp_path):
    a = assistant_for(tmp_path)
    files = write_corpus(tmp_path / "d", n=2, paragraphs=2)
    drain(a.documents.ingest(files))
    kb = a.library.get("default")
    done = a.documents.list()[0]
    # simulate a crash after the new version's vectors were written, before commit
    chunks = [c for c, _ in kb.catalog.ready_chunks_with_tokens() if c.doc_id == done.doc_id]
    ghost = [c.__class__(**{**c.__dict__, "chunk_id": "ghost-" + c.chunk_id, "doc_id": "ghost"})
             for c in chunks]
    kb.catalog.add_pending("ghost", "ghost.txt", "", "0" * 64, 0, ghost, [[]] * len(ghost),
                           ["h"] * len(ghost), [None] * len(ghost), {})
    kb.vectors.upsert(ghost, kb.vectors.embedder.embed_passages([c.text for c in ghost]))
    # ...and a crash after a delete committed, before its vectors were removed
    with kb.catalog.transaction() as db:
        db.execute("DELETE FROM documents WHERE doc_id = ?", (done.doc_id,))
        db.execute("INSERT INTO tombstones VALUES (?)", (done.doc_id,))
    a.close()
    b = assistant_for(tmp_path)
    kb = b.library.get("default")
    assert_consistent(kb)
    assert [d.source for d in b.documents.list()] == [files[1].name]
    b.close()


# --- kill -9 ---------------------------------------------------------------------
def _cli_env(data_dir):
    return {**os.environ, "DOCENT_DATA_DIR": str(data_dir), "DOCENT_MODELS_DIR": str(shared_models_dir())}


def _ingest_until(data_dir, folder, marker: str, extra_delay: float, timeout=300):
    """Run the CLI ingest; kill -9 once ``marker`` appears in its progress output."""
    proc = subprocess.Popen([sys.executable, "-m", "assistant", "ingest", str(folder)], cwd=ROOT,
                            env=_cli_env(data_dir), stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    seen = bytearray()

    def read():
        for chunk in iter(lambda: proc.stderr.read1(256), b""):
            seen.extend(chunk)
    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    deadline = time.time() + timeout
    while marker.encode() not in seen and proc.poll() is None and time.time() < deadline:
        time.sleep(0.01)
    time.sleep(extra_delay)
    killed = proc.poll() is None
    if killed:
        os.kill(proc.pid, signal.SIGKILL)
    proc.wait(timeout=30)
    return killed


@pytest.mark.slow
def test_kill_9_during_ingest_loses_nothing_and_duplicates_nothing(tmp_path):

    folder = tmp_path / "docs"
    files = write_corpus(folder, n=8, paragraphs=14)
    data = tmp_path / "data"
    kills = 0
    for marker, delay in [("2/8 embedding", 0.0), ("4/8 embedding", 0.4), ("6/8 chunking", 0.05),
                          ("7/8 embedding", 0.8)]:
        kills += _ingest_until(data, folder, marker, delay)
        a = Assistant(make_settings(tmp_path), llm=ScriptedLLM("x"))  # the embedder it recorded
        assert_consistent(a.library.get("default"))
        a.close()
    assert kills >= 3
    # change one file and kill while it is replaced: old or new version, never both
    files[3].write_text(PARA.format("renamedrug", 999), encoding="utf-8")
    _ingest_until(data, folder, "4/8 embedding", 0.1)
    out = subprocess.run([sys.executable, "-m", "assistant", "ingest", str(folder)], cwd=ROOT,
                         env=_cli_env(data), capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr
    a = Assistant(make_settings(tmp_path), llm=ScriptedLLM("x"))
    kb = a.library.get("default")
    assert_consistent(kb)
    assert sorted(d.source for d in a.documents.list()) == [f.name for f in files]
    assert "renamedrug" in a.chat.search("renamedrug dose")[0].chunk.text
    a.close()


def test_an_unchanged_file_read_by_an_older_reader_is_read_again(tmp_path, monkeypatch):
    """A knowledge base built before the PDF reader found headings gets them when the
    same file is ingested again; then it is unchanged."""
    from ingest import loaders
    from tests.helpers.pdfgen import write_pdf

    a = assistant_for(tmp_path)
    body = [f"Line {i} of the leaflet says what the syrup is for and how to take it."
            for i in range(6)]
    pdf = write_pdf(tmp_path / "leaflet.pdf", [[("Dosing in children", 16), *body],
                                               [("Storage", 16), *body]])
    with monkeypatch.context() as m:  # an older Docent, whose PDF reader found no headings
        m.setitem(loaders._READERS, ".pdf", "pdf/1")
        drain(a.documents.ingest([pdf]))
    kb = a.library.get("default")
    (old,) = a.documents.list()
    assert old.reader == "pdf/1"
    with kb.catalog.transaction() as db:
        db.execute("UPDATE chunks SET heading = ''")
    (r,) = drain(a.documents.ingest([pdf])).results
    assert r.status == "replaced" and "read again" in r.reason
    (new,) = a.documents.list()
    assert new.reader == "pdf/2" and new.doc_id != old.doc_id
    assert {c.heading for c in kb.document_chunks(new.doc_id)} == {"Dosing in children", "Storage"}
    assert kb.original_path(new.doc_id).is_file() and not kb.original_path(old.doc_id).exists()
    assert_consistent(kb)
    assert drain(a.documents.ingest([pdf])).results[0].status == "unchanged"
    # documents stored before readers were recorded: only types whose loader changed
    txt = tmp_path / "note.txt"
    txt.write_text("Visitors may stay until 8 pm.", encoding="utf-8")
    drain(a.documents.ingest([txt]))
    with kb.catalog.transaction() as db:
        db.execute("UPDATE documents SET reader = ''")
    assert [r.status for r in drain(a.documents.ingest([txt, pdf])).results] == ["unchanged", "replaced"]
    assert_consistent(kb)
    a.close()


def test_a_catalog_from_before_readers_were_recorded_opens(tmp_path):
    import sqlite3

    from knowledge.catalog import SCHEMA, Catalog

    path = tmp_path / "catalog.sqlite3"
    db = sqlite3.connect(path)
    db.executescript(SCHEMA.replace(",\n    reader TEXT NOT NULL DEFAULT ''", ""))
    db.execute("INSERT INTO documents VALUES ('d1', 'a.txt', '', 'abc', 1, 10, 'ready', 'now')")
    db.commit()
    db.close()
    catalog = Catalog(path)
    (doc,) = catalog.documents()
    assert (doc.source, doc.sha256, doc.reader) == ("a.txt", "abc", "")
    catalog.close()


def test_reread_documents_uses_the_kept_originals(tmp_path, monkeypatch):
    """Uploaded PDFs (no folder to sync) are read again from the copy the knowledge base
    keeps; one whose copy is gone keeps its passages and says to add the file again."""
    from ingest import loaders
    from tests.helpers.pdfgen import write_pdf

    a = assistant_for(tmp_path)
    body = [f"Line {i} says how to store the vaccine and when to give it." for i in range(6)]
    pdfs = [write_pdf(tmp_path / f"{name}.pdf", [[(title, 16), *body]])
            for name, title in (("vaccine", "Vaccine storage"), ("gone", "Old leaflet"))]
    with monkeypatch.context() as m:
        m.setitem(loaders._READERS, ".pdf", "pdf/1")
        drain(a.documents.ingest(pdfs))
    for p in pdfs:
        p.unlink()  # uploaded from a temporary folder: only the kept originals remain
    kb = a.library.get("default")
    gone = next(d for d in a.documents.list() if d.source == "gone.pdf")
    kb.original_path(gone.doc_id).unlink()
    assert a.documents.status().outdated == 2
    assert "2 document(s) were read by an earlier Docent" in knowledge_base_status(
        a.documents.status())
    report = drain(a.documents.reread())
    by = {r.source: r for r in report.results}
    assert by["vaccine.pdf"].status == "replaced" and "read again" in by["vaccine.pdf"].reason
    assert by["gone.pdf"].status == "failed" and "add the file again" in by["gone.pdf"].reason
    readers = {d.source: d.reader for d in a.documents.list()}
    assert readers == {"vaccine.pdf": "pdf/2", "gone.pdf": "pdf/1"}
    new = next(d for d in a.documents.list() if d.source == "vaccine.pdf")
    assert {c.heading for c in kb.document_chunks(new.doc_id)} == {"Vaccine storage"}
    assert_consistent(kb)
    assert [r.source for r in drain(a.documents.reread()).results] == ["gone.pdf"]
    assert a.documents.status().outdated == 1
    assert "1 document(s) were read by an earlier Docent" in knowledge_base_status(
        a.documents.status())
    a.close()
