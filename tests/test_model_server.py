"""The chat model in its own supervised process: a crash there costs one answer, the
question stays stored, the server comes back, and the next question is answered.

Fast tests run the supervisor over a stand-in server (tests/helpers/fake_llama_server.py);
the slow ones kill the real ``llama-server`` with the real 0.5B model mid-answer."""
from __future__ import annotations

import os
import signal
import sys
import threading
import time
from pathlib import Path

import pytest

from assistant.errors import BackendUnavailable
from assistant.llm import ServedLLM
from assistant.model_server import ModelServer, ServerConfig
from tests.conftest import make_settings

FAKE = Path(__file__).parent / "helpers" / "fake_llama_server.py"


def fake_binary(tmp_path: Path) -> Path:
    script = tmp_path / "llama-server"
    script.write_text(f"#!/bin/sh\nexec {sys.executable} {FAKE} \"$@\"\n")
    script.chmod(0o755)
    return script


def wait_for(predicate, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.05)
    raise AssertionError("condition not reached in time")


@pytest.fixture
def fake_server(tmp_path):
    server = ModelServer(ServerConfig(fake_binary(tmp_path), tmp_path / "model.gguf",
                                      log_path=tmp_path / "server.log", startup_timeout_s=30))
    server.start()
    server.wait_ready(30)
    yield server
    server.stop()


def kill_after_first_piece(llm, server) -> tuple[list[str], Exception | None]:
    pieces: list[str] = []
    try:
        for piece in llm.stream_chat([{"role": "user", "content": "hi"}], 64, 0.0):
            pieces.append(piece)
            if len(pieces) == 2:
                os.kill(server.pid, signal.SIGKILL)
    except BackendUnavailable as exc:
        return pieces, exc
    return pieces, None


def test_a_killed_server_is_restarted_and_reported(fake_server):
    first = fake_server.status()
    assert first["state"] == "ready" and isinstance(first["pid"], int)
    os.kill(first["pid"], signal.SIGKILL)
    wait_for(lambda: fake_server.status()["state"] != "ready" or
             fake_server.status()["pid"] != first["pid"])
    fake_server.wait_ready(30)
    now = fake_server.status()
    assert now["state"] == "ready" and now["pid"] not in (None, first["pid"])
    assert now["restarts"] == 1 and "SIGKILL" in now["last_exit"]


def test_an_answer_cut_by_a_crash_fails_with_a_reason_and_the_next_one_works(fake_server):
    llm = ServedLLM(fake_server, "fake", 4096, ready_timeout=30)
    pieces, error = kill_after_first_piece(llm, fake_server)
    assert pieces and error is not None
    assert "was killed by signal SIGKILL" in str(error) and "restarted" in str(error)
    text = "".join(llm.stream_chat([{"role": "user", "content": "again"}], 64, 0.0))
    assert text.startswith("Wash your hands") and text.endswith("dirty")


def test_a_slow_answer_is_not_reported_as_a_crash(fake_server):
    """A timeout (a busy machine) says the process is still running, not restarted."""
    llm = ServedLLM(fake_server, "fake", 4096, request_timeout=0.02, ready_timeout=30)
    with pytest.raises(BackendUnavailable) as err:
        list(llm.stream_chat([{"role": "user", "content": "hi"}], 64, 0.0))
    assert "still running" in str(err.value) and "restarted" not in str(err.value)
    assert fake_server.status()["restarts"] == 0


def test_token_counts_come_from_the_server_and_survive_its_absence(fake_server):
    llm = ServedLLM(fake_server, "fake", 4096, ready_timeout=30)
    assert llm.count_tokens("one two three") == 3  # the stand-in counts words
    fake_server.stop()
    assert llm.count_tokens("one two three") > 0  # the estimate while it is down


def test_a_server_that_cannot_start_is_down_with_its_exit_and_a_clear_error(tmp_path,
                                                                             monkeypatch):
    monkeypatch.setenv("FAKE_LLAMA_CRASH_AT_START", "1")
    server = ModelServer(ServerConfig(fake_binary(tmp_path), tmp_path / "m.gguf"))
    server.start()
    try:
        with pytest.raises(BackendUnavailable, match="exited with code 3"):
            wait_for(lambda: server.status()["restarts"] >= 1, 30) or server.wait_ready(0.5)
        assert server.status()["state"] in ("down", "starting")
    finally:
        server.stop()


def test_a_missing_binary_says_how_to_build_it(tmp_path):
    with pytest.raises(BackendUnavailable, match="make setup"):
        ModelServer(ServerConfig(tmp_path / "nope", tmp_path / "m.gguf"))


# --- the facade: nothing is lost -------------------------------------------------------
@pytest.fixture
def docent(tmp_path, fake_server):
    from assistant.core import Assistant
    from tests.fakes import HashEmbedder

    settings = make_settings(tmp_path, answers={"default_profile": "general", "gate": False})
    llm = ServedLLM(fake_server, "fake", 4096, ready_timeout=30)
    assistant = Assistant(settings, llm=llm, embedder=HashEmbedder())
    note = tmp_path / "hands.txt"
    note.write_text("Wash your hands with soap and water for twenty seconds.\n", "utf-8")
    for _ in assistant.documents.ingest([note]):
        pass
    yield assistant
    assistant.close()


def test_a_crash_mid_answer_stores_the_question_as_failed_and_retry_answers_it(docent,
                                                                              fake_server):
    from assistant.types import AnswerDelta

    cid = docent.conversations.create().conversation_id
    with pytest.raises(BackendUnavailable):
        for event in docent.conversations.send(cid, "How long should I wash my hands?"):
            if isinstance(event, AnswerDelta) and fake_server.pid:
                os.kill(fake_server.pid, signal.SIGKILL)
    [turn] = docent.conversations.turns(cid)
    assert turn.status == "failed" and turn.question == "How long should I wash my hands?"
    assert turn.error
    assert "(no answer:" in docent.conversations.export(cid)
    answer = [e for e in docent.conversations.retry(cid)][-1]
    [turn] = docent.conversations.turns(cid)
    assert turn.status == "done" and turn.answer == answer.text and "Wash" in turn.answer


def test_the_question_is_stored_before_the_model_answers(docent):
    seen_by_model = []
    served = docent.serving._llm

    class Watching(ServedLLM):
        def stream_chat(self, messages, max_tokens, temperature):
            seen_by_model.extend(docent.conversations.turns(cid))
            return served.stream_chat(messages, max_tokens, temperature)

    docent.serving._llm = Watching(served.server, "fake", 4096, ready_timeout=30)
    cid = docent.conversations.create().conversation_id
    events = docent.conversations.send(cid, "How long should I wash my hands?")
    while not seen_by_model:
        next(events)
    events.close()  # the page or the client went away
    [stored] = seen_by_model
    assert stored.status == "pending" and stored.question.startswith("How long")
    assert docent.conversations.turns(cid)[0].status == "stopped"


def test_stop_keeps_what_was_streamed_marked_stopped(docent):
    from assistant.types import Answer, AnswerDelta

    cid = docent.conversations.create().conversation_id
    seen, final = [], None
    for event in docent.conversations.send(cid, "How long should I wash my hands?"):
        if isinstance(event, AnswerDelta):
            seen.append(event.text)
            if len(seen) == 3:
                assert docent.conversations.stop(cid)
        final = event if isinstance(event, Answer) else final
    assert final is None and len(seen) == 3
    [turn] = docent.conversations.turns(cid)
    assert turn.status == "stopped" and turn.answer == "".join(seen)
    assert not docent.conversations.stop(cid)  # nothing is being written any more
    final = list(docent.conversations.retry(cid))[-1]  # a stopped answer can be asked again
    [turn] = docent.conversations.turns(cid)
    assert isinstance(final, Answer) and turn.status == "done" and turn.answer == final.text


def test_health_reports_the_model_process(docent, fake_server):
    from fastapi import FastAPI
    from fastapi.testclient import TestClient

    from assistant.api import build_health

    docent.serving._model_server = fake_server  # as the facade does when it starts the server
    app = FastAPI()
    app.include_router(build_health(docent))
    body = TestClient(app).get("/health").json()
    assert body["status"] == "ok"
    assert body["model"]["state"] == "ready" and body["model"]["pid"] == fake_server.pid
    fake_server.stop()
    body = TestClient(app).get("/health").json()
    assert body == {"status": "degraded", "model": {**body["model"], "pid": None,
                                                    "state": "down"}}


# --- the real llama-server and model --------------------------------------------------
@pytest.mark.slow
def test_the_real_server_killed_mid_answer_comes_back_and_answers(tmp_path):
    from assistant.canary import server_binary
    from common.models import DEFAULT_MODELS
    from tests.conftest import shared_models_dir

    binary = server_binary()
    gguf = shared_models_dir() / DEFAULT_MODELS["qwen2.5-coder-0.5b"].filename
    if binary is None or not gguf.is_file():
        pytest.skip("llama-server or the 0.5B GGUF is not built (run make setup models)")
    server = ModelServer(ServerConfig(binary, gguf, n_ctx=1024, parallel=2,
                                      log_path=tmp_path / "server.log"))
    try:
        server.wait_ready()
        llm = ServedLLM(server, gguf.name, 1024, ready_timeout=120)
        assert llm.count_tokens("Wash your hands.") >= 3
        pieces, error = kill_after_first_piece(llm, server)
        assert pieces and isinstance(error, BackendUnavailable)
        server.wait_ready()
        assert server.status()["restarts"] == 1
        # two slots: two answers stream at once
        replies: list[str] = []
        ask = lambda: replies.append("".join(llm.stream_chat(  # noqa: E731
            [{"role": "user", "content": "Name one fruit."}], 8, 0.0)))
        threads = [threading.Thread(target=ask) for _ in range(2)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(120)
        assert len(replies) == 2 and all(r.strip() for r in replies)
    finally:
        server.stop()
    assert server.status()["pid"] is None
