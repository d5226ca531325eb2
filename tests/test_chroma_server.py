"""Knowledge bases on a real Chroma server (`chroma run` on a free loopback port).

The ingest, search, delete, rename, check and crash-consistency tests of
tests/test_ingest_consistency.py and tests/test_kb_check.py run again here with
``DOCENT_VECTOR_STORE__URL`` pointing at the server (the CLI subprocesses they start
read it too); the tests below them cover what only a server has: vectors off the data
dir, several data dirs on one server, a server that is down or never answers.
"""
from __future__ import annotations

import logging
import socket
import subprocess
import sys
import time
from pathlib import Path

import chromadb
import httpx
import pytest
from chromadb.config import Settings as ChromaSettings

import tests.test_ingest_consistency as consistency
import tests.test_kb_check as kb_check
from assistant.core import Assistant
from ingest.pipeline import drain
from knowledge.chroma import VectorStoreConfig, VectorStoreUnreachable
from knowledge.embedders import EmbedderPool
from knowledge.errors import KnowledgeError
from knowledge.library import Library
from tests.conftest import free_port, make_settings
from tests.fakes import HashEmbedder, ScriptedLLM

CHROMA = Path(sys.executable).parent / "chroma"


def _wait_for_heartbeat(url: str, proc: subprocess.Popen, log: Path, timeout: float = 60) -> None:
    deadline = time.time() + timeout
    while time.time() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"chroma run exited: {log.read_text(errors='replace')}")
        try:
            if httpx.get(url + "/api/v2/heartbeat", timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    raise RuntimeError(f"chroma run did not answer in {timeout} s: {log.read_text(errors='replace')}")


@pytest.fixture(scope="module")
def chroma_server(tmp_path_factory):
    """The URL of a real Chroma server, started once for this module, stopped after it."""
    base = tmp_path_factory.mktemp("chroma-server")
    port = free_port()
    log = base / "server.log"
    with log.open("w") as out:
        proc = subprocess.Popen([str(CHROMA), "run", "--path", str(base / "data"), "--host",
                                 "127.0.0.1", "--port", str(port)],
                                stdout=out, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    try:
        _wait_for_heartbeat(url, proc, log)
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()


@pytest.fixture
def server(chroma_server, monkeypatch):
    """Settings and the CLI use the server (through the environment, as a user sets it)."""
    monkeypatch.setenv("DOCENT_VECTOR_STORE__URL", chroma_server)
    return chroma_server


def server_collections(url: str) -> dict[str, int]:
    """Every collection on the server and how many vectors it holds, as Chroma sees them."""
    host, port, ssl = VectorStoreConfig(url).address
    client = chromadb.HttpClient(host=host, port=port, ssl=ssl,
                                 settings=ChromaSettings(anonymized_telemetry=False))
    try:
        return {c.name: c.count() for c in client.list_collections()}
    finally:
        client.close()


def library(root: Path, url: str, prefix: str = "docent") -> Library:
    return Library(root, HashEmbedder(), 220, 40,
                   vector_store=VectorStoreConfig(url, collection_prefix=prefix))


# --- the tests a user relies on, again against the server ------------------------
SHARED_TESTS = [
    consistency.test_exact_and_near_duplicates_are_recorded_not_embedded,
    consistency.test_folder_sync_adds_changes_and_deletes,
    consistency.test_rename_keeps_the_index,
    consistency.test_interrupted_writes_are_undone_or_finished_on_open,
    consistency.test_a_second_process_on_the_same_data_dir_is_refused,
    kb_check.test_check_reports_every_disagreement_and_repair_mends_them,
]


@pytest.mark.parametrize("case", SHARED_TESTS, ids=lambda case: case.__name__[5:])
def test_the_write_protocol_holds_on_a_server(server, tmp_path, case):
    case(tmp_path)
    assert not (tmp_path / "data" / "knowledge" / "chroma").exists()  # nothing embedded


@pytest.mark.slow
def test_kill_9_during_ingest_loses_nothing_on_a_server(server, tmp_path):
    consistency.test_kill_9_during_ingest_loses_nothing_and_duplicates_nothing(tmp_path)
    assert not (tmp_path / "data" / "knowledge" / "chroma").exists()


# --- what only a server has ----------------------------------------------------------
def test_vectors_live_on_the_server_and_go_with_their_knowledge_base(server, tmp_path):
    a = Assistant(make_settings(tmp_path), llm=ScriptedLLM("x"), embedder=HashEmbedder())
    files = consistency.write_corpus(tmp_path / "docs", n=2, paragraphs=3)
    drain(a.documents.ingest(files, kb="default"))
    kb = a.library.get("default")
    name = "docent_" + kb.manifest.collection
    assert server_collections(server)[name] == kb.chunk_count() > 0
    assert a.chat.search("drug1x2 dose")[0].chunk.source == "leaflet01.txt"
    a.documents.delete(a.documents.list()[0].doc_id)
    assert server_collections(server)[name] == kb.chunk_count() > 0
    a.documents.create_knowledge_base("spare")
    drain(a.documents.ingest(files[:1], kb="spare"))
    spare = "docent_" + a.library.get("spare").manifest.collection
    a.documents.delete_knowledge_base("spare")
    assert spare not in server_collections(server) and name in server_collections(server)
    a.close()


def test_two_data_dirs_share_one_server_without_seeing_each_other(chroma_server, tmp_path):
    first, second = library(tmp_path / "one", chroma_server), library(tmp_path / "two", chroma_server)
    other = library(tmp_path / "three", chroma_server, prefix="ward7")
    texts = {first: "Visiting hours are from two to eight.",
             second: "The pharmacy opens at nine on Saturdays.",
             other: "Blue badge holders park for free."}
    for lib, text in texts.items():
        kb = lib.get("default", create=True)
        chunks = [_chunk("d1", text)]
        kb.add_document("d1", "note.txt", "0" * 64, 1, chunks)
    names = {lib: lib.vector_store.collection(lib.get("default").manifest.collection)
             for lib in texts}
    assert len(set(names.values())) == 3 and names[other].startswith("ward7_kb_")
    on_server = server_collections(chroma_server)
    assert all(on_server[n] == 1 for n in names.values())
    for lib, text in texts.items():  # each finds only its own passage, by vector too
        hits = lib.get("default").search(text, 5, mode="dense")
        assert [h.chunk.text for h in hits] == [text]
    first.delete("default")
    assert names[first] not in server_collections(chroma_server)
    assert second.get("default").search("pharmacy", 1)[0].chunk.text == texts[second]
    for lib in (first, second, other):
        lib.close()


def test_a_change_of_embedder_on_a_server_drops_the_old_collection(chroma_server, tmp_path):
    pool = EmbedderPool("hash-a", loader=lambda name: HashEmbedder(name))
    lib = Library(tmp_path / "kb", pool, 220, 40,
                  vector_store=VectorStoreConfig(chroma_server, "reembed"))
    kb = lib.get("default", create=True)
    kb.add_document("d1", "note.txt", "0" * 64, 1, [_chunk("d1", "Insulin pens stay cold.")])
    old = lib.vector_store.collection(kb.manifest.collection)
    assert list(kb.reembed("hash-b"))[-1] == (1, 1)
    new = lib.vector_store.collection(kb.manifest.collection)
    on_server = server_collections(chroma_server)
    assert old not in on_server and on_server[new] == 1 and kb.check().consistent
    lib.close()


def test_a_data_dir_moved_onto_a_server_is_filled_from_its_catalog(chroma_server, tmp_path,
                                                                   caplog):
    embedded = Library(tmp_path / "kb", HashEmbedder(), 220, 40)
    text = "Flu vaccines are given in the autumn."
    embedded.get("default", create=True).add_document("d1", "a.txt", "0" * 64, 1,
                                                      [_chunk("d1", text)])
    embedded.close()
    lib = library(tmp_path / "kb", chroma_server, prefix="moved")
    with caplog.at_level(logging.WARNING, logger="knowledge.library"):
        kb = lib.get("default")
    assert "kb check" not in caplog.text  # opening reads nothing: the first search checks
    with caplog.at_level(logging.WARNING, logger="knowledge.library"):
        assert lib.warm("default") is kb
    assert "kb check --repair --kb default" in caplog.text
    assert kb.check(repair=True).missing_vectors == ("d1-0",)
    assert kb.check().consistent
    assert [h.chunk.text for h in kb.search(text, 1, mode="dense")] == [text]
    lib.close()


def test_an_unreachable_server_is_a_clear_error_at_open(tmp_path):
    port = free_port()
    url = f"http://127.0.0.1:{port}"  # nothing listens there
    started = time.monotonic()
    with pytest.raises(VectorStoreUnreachable) as err:
        library(tmp_path / "kb", url)
    message = str(err.value)
    assert url in message and "chroma run --path" in message and f"--port {port}" in message
    assert "vector_store.url" in message and time.monotonic() - started < 10
    # the data dir is not left locked: the embedded store opens it at once
    Library(tmp_path / "kb", HashEmbedder(), 220, 40).close()


def test_a_server_that_never_answers_times_out(tmp_path):
    with socket.socket() as silent:  # accepts connections, never replies
        silent.bind(("127.0.0.1", 0))
        silent.listen()
        url = f"http://127.0.0.1:{silent.getsockname()[1]}"
        config = VectorStoreConfig(url, connect_timeout_s=0.5)
        started = time.monotonic()
        with pytest.raises(VectorStoreUnreachable, match="does not answer"):
            Library(tmp_path / "kb", HashEmbedder(), 220, 40, vector_store=config)
        assert time.monotonic() - started < 5


def test_a_server_that_stops_mid_session_is_a_clear_error_and_nothing_is_lost(tmp_path):
    base = tmp_path / "server"
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    command = [str(CHROMA), "run", "--path", str(base / "data"), "--host", "127.0.0.1",
               "--port", str(port)]
    base.mkdir()
    proc = subprocess.Popen(command, stdout=(base / "log").open("w"), stderr=subprocess.STDOUT)
    _wait_for_heartbeat(url, proc, base / "log")
    lib = library(tmp_path / "kb", url)
    kb = lib.get("default", create=True)
    kb.add_document("d1", "a.txt", "0" * 64, 1, [_chunk("d1", "Visiting hours end at eight.")])
    proc.terminate()
    proc.wait(timeout=20)
    with pytest.raises(VectorStoreUnreachable, match="stopped answering"):
        kb.add_document("d2", "b.txt", "1" * 64, 1, [_chunk("d2", "Parking is free.")])
    assert kb.catalog.pending_doc_ids() == ["d2"]  # the catalog knows it is half-stored
    lib.close()
    proc = subprocess.Popen(command, stdout=(base / "log").open("a"), stderr=subprocess.STDOUT)
    try:
        _wait_for_heartbeat(url, proc, base / "log")
        lib = library(tmp_path / "kb", url)
        kb = lib.get("default")  # recovery on open drops the half-stored document
        assert [d.source for d in kb.documents()] == ["a.txt"]
        assert kb.catalog.pending_doc_ids() == [] and kb.check().consistent
        lib.close()
    finally:
        proc.terminate()
        proc.wait(timeout=20)


def test_doctor_reports_the_vector_store_and_whether_it_answers(chroma_server, tmp_path):
    from assistant.doctor import Report, _vector_store

    rep = Report()
    _vector_store(make_settings(tmp_path, vector_store={"url": chroma_server}), rep)
    assert rep.lines == [f"Vector store: Chroma server at {chroma_server} (collections "
                         f"docent_*): answers (Chroma {httpx.get(chroma_server + '/api/v2/version').json()})"]
    assert rep.problems == []
    dead = f"http://127.0.0.1:{free_port()}"
    rep = Report()
    _vector_store(make_settings(tmp_path, vector_store={"url": dead}), rep)
    assert rep.lines == [f"Vector store: {dead}: NOT USABLE"] and "chroma run" in rep.problems[0]
    rep = Report()
    _vector_store(make_settings(tmp_path), rep)
    assert rep.lines == [f"Vector store: embedded Chroma under {tmp_path / 'data' / 'knowledge' / 'chroma'}"]


def test_a_collection_prefix_chroma_cannot_name_is_refused():
    with pytest.raises(KnowledgeError, match="collection_prefix"):
        VectorStoreConfig("http://127.0.0.1:8000", collection_prefix="-docent")
    with pytest.raises(KnowledgeError, match="http://HOST:PORT"):
        VectorStoreConfig("127.0.0.1:8000")


def _chunk(doc_id: str, text: str):
    from knowledge.types import Chunk

    return Chunk(f"{doc_id}-0", doc_id, f"{doc_id}.txt", text, 1, 0, len(text), 0, "")
