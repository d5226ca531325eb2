"""The OpenAI-compatible API, driven by the official ``openai`` client over real HTTP,
and the remote OpenAI-compatible LLM backend (against llama-cpp-python's own server)."""
from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.parse
import urllib.request

import httpx
import openai
import pytest
import uvicorn
from fastapi import FastAPI

import app as docent_app
from assistant.api import build_api
from assistant.core import Assistant
from assistant.errors import BackendUnavailable
from assistant.llm import OpenAICompatLLM
from assistant.types import Answer, AnswerDelta
from ingest.pipeline import drain
from tests.conftest import ROOT, free_port, make_settings, shared_models_dir
from tests.fakes import HashEmbedder, ScriptedLLM
from tests.helpers.docs import make_clinic_docs

REPLY = "Adults take 500 mg every 8 hours [1]. See also [7]."
SHOWN = "Adults take 500 mg every 8 hours [1]. See also."
QUESTION = "What is the amoxicillin dose for adults?"
BASE = "qwen2.5-coder-1.5b"  # the configured model name (settings.llm.model)


class GatedLLM(ScriptedLLM):
    """A scripted LLM that, after its first piece, waits for ``gate`` when set and
    raises ``fail`` when set."""

    gate: threading.Event | None = None
    fail: Exception | None = None

    def stream_chat(self, messages, max_tokens, temperature):
        for i, piece in enumerate(super().stream_chat(messages, max_tokens, temperature)):
            yield piece
            if i == 0 and self.gate is not None:
                assert self.gate.wait(30), "the test never opened the gate"
            if i == 0 and self.fail is not None:
                raise self.fail


@contextlib.contextmanager
def serve(app: FastAPI, port: int | None = None):
    """``app`` on ``port`` (default: a free one) of loopback in a background thread;
    yields its base URL."""
    port = port or free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.time() + 30
    while not server.started:
        assert thread.is_alive() and time.time() < deadline, "the test server did not start"
        time.sleep(0.05)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=30)


@pytest.fixture(scope="module")
def api(tmp_path_factory):
    """The real composition (``app.build_app``: API at /v1, Gradio at /) over an
    Assistant with a scripted LLM; handbook.pdf in "default", visitors.txt in "visitors"."""
    base = tmp_path_factory.mktemp("api")
    llm = GatedLLM(REPLY)
    a = Assistant(make_settings(base), llm=llm, embedder=HashEmbedder())
    docs = make_clinic_docs(base / "docs")
    drain(a.documents.ingest([docs["pdf"]]))
    a.documents.create_knowledge_base("visitors")
    drain(a.documents.ingest([docs["txt"]], kb="visitors"))
    with serve(docent_app.build_app(a)) as url:
        yield url, a, llm
    a.close()


def client(url: str, key: str = "unused") -> openai.OpenAI:
    return openai.OpenAI(base_url=url + "/v1", api_key=key, max_retries=0, timeout=60)


def ask(url: str, question: str = QUESTION, **kwargs):
    return client(url).chat.completions.create(
        model=BASE, messages=[{"role": "user", "content": question}], **kwargs)


def test_models_lists_the_base_model(api):
    url, _, _ = api
    models = client(url).models.list()
    assert [m.id for m in models] == [BASE]
    assert models.data[0].object == "model" and models.data[0].owned_by == "docent"


def test_answer_keeps_markers_and_returns_sources(api):
    url, _, _ = api
    resp = ask(url)
    assert resp.object == "chat.completion" and resp.model == BASE
    assert resp.choices[0].message.content == SHOWN  # [1] kept, the unknown [7] dropped
    assert resp.choices[0].finish_reason == "stop"
    sources = resp.model_extra["sources"]
    first = sources[0]
    assert (first["number"], first["source"], first["page"], first["cited"]) == (
        1, "handbook.pdf", 2, True)
    assert "500 mg every 8 hours" in first["quote"] and first["knowledge_base"] == "default"
    assert len(sources) > 1 and not any(s["cited"] for s in sources[1:])
    assert {s["number"] for s in sources} == set(range(1, len(sources) + 1))
    assert resp.usage.prompt_tokens > 50 and resp.usage.completion_tokens > 0
    assert resp.to_dict()["sources"] == sources


def test_streamed_deltas_add_up_to_the_answer_and_end_with_sources(api):
    url, _, _ = api
    whole = ask(url)
    chunks = list(ask(url, stream=True))
    assert all(c.object == "chat.completion.chunk" for c in chunks)
    text = "".join(c.choices[0].delta.content or "" for c in chunks)
    assert text == whole.choices[0].message.content
    assert len([c for c in chunks if c.choices[0].delta.content]) > 3  # really streamed
    last = chunks[-1]
    assert last.choices[0].finish_reason == "stop"
    assert last.model_extra["sources"] == whole.model_extra["sources"]
    assert all(c.choices[0].finish_reason is None for c in chunks[:-1])


def test_knowledge_base_field_and_history(api):
    url, _, llm = api
    messages = [{"role": "system", "content": "Be brief."},
                {"role": "user", "content": "Where do visitors register?"},
                {"role": "assistant", "content": "At the front desk [1]."},
                {"role": "user", "content": "And the visiting hours?"}]
    before = len(llm.calls)
    resp = client(url).chat.completions.create(
        model=BASE, messages=messages, extra_body={"knowledge_base": "visitors"})
    assert {s["source"] for s in resp.model_extra["sources"]} == {"visitors.txt"}
    condense_prompt, answer_prompt = llm.calls[before:]  # the follow-up was condensed first
    assert "Where do visitors register?" in condense_prompt[-1]["content"]
    assert "Question: And the visiting hours?" in answer_prompt[-1]["content"]
    assert "Be brief." not in json.dumps(answer_prompt)  # Docent's own prompt applies

    both = ask(url, extra_body={"knowledge_base": ["default", "visitors"]})
    assert {s["knowledge_base"] for s in both.model_extra["sources"]} == {"default", "visitors"}


def test_plain_chat_without_retrieval(api):
    url, _, llm = api
    messages = [{"role": "system", "content": "You are terse."},
                {"role": "user", "content": [{"type": "text", "text": "Say hello."}]}]
    resp = client(url).chat.completions.create(model=BASE, messages=messages,
                                               extra_body={"rag": False})
    assert resp.choices[0].message.content == REPLY  # markers are not filtered: no sources
    assert resp.model_extra["sources"] == []
    assert llm.calls[-1] == [{"role": "system", "content": "You are terse."},
                             {"role": "user", "content": "Say hello."}]


def test_errors_come_back_in_openai_shape(api):
    url, _, _ = api
    c = client(url)
    with pytest.raises(openai.NotFoundError) as err:
        c.chat.completions.create(model="gpt-4o", messages=[{"role": "user", "content": "hi"}])
    assert err.value.body["code"] == "model_not_found" and BASE in err.value.body["message"]
    with pytest.raises(openai.NotFoundError) as err:
        ask(url, extra_body={"knowledge_base": "nope"})
    assert err.value.body["code"] == "knowledge_base_not_found"
    with pytest.raises(openai.BadRequestError):
        c.chat.completions.create(model=BASE, messages=[])
    with pytest.raises(openai.BadRequestError) as err:
        c.chat.completions.create(model=BASE, messages=[{"role": "system", "content": "x"}])
    assert "user message" in err.value.body["message"]
    with pytest.raises(openai.BadRequestError) as err:
        ask(url, extra_body={"rag": "maybe"})
    assert "rag" in err.value.body["message"]


def test_server_stays_responsive_while_an_answer_streams(api):
    url, _, llm = api
    llm.gate = threading.Event()
    try:
        stream = ask(url, stream=True)
        first = next(iter(stream))  # the model is now stuck after its first piece
        t0 = time.perf_counter()
        assert [m.id for m in client(url).models.list()] == [BASE]
        assert time.perf_counter() - t0 < 5
        llm.gate.set()
        rest = list(stream)
    finally:
        llm.gate.set()
        llm.gate = None
    assert first.choices[0].delta.role == "assistant"
    assert rest[-1].choices[0].finish_reason == "stop"


def test_a_client_that_leaves_mid_answer_ends_the_generation(tmp_path):
    """The model's stream is closed when the client disconnects (freeing its slot on a
    model server), not run to its end."""
    class Watched(GatedLLM):
        pieces, finished, closed = 0, False, False

        def stream_chat(self, messages, max_tokens, temperature):
            try:
                for piece in super().stream_chat(messages, max_tokens, temperature):
                    self.pieces += 1
                    yield piece
                self.finished = True
            finally:
                self.closed = True

    llm = Watched(REPLY * 20)
    a = Assistant(make_settings(tmp_path), llm=llm, embedder=HashEmbedder())
    drain(a.documents.ingest([make_clinic_docs(tmp_path / "docs")["pdf"]]))
    llm.gate = threading.Event()
    try:
        with serve(docent_app.build_app(a)) as url:
            stream = ask(url, stream=True)
            next(iter(stream))
            stream.close()  # the client leaves while the model is writing
            time.sleep(0.5)
            llm.gate.set()
            deadline = time.time() + 30
            while not llm.closed and time.time() < deadline:
                time.sleep(0.05)
            assert llm.closed and not llm.finished  # while the app still runs
    finally:
        llm.gate.set()
        a.close()


def test_past_the_queue_limit_a_request_gets_429_with_retry_after(tmp_path):
    llm = GatedLLM(REPLY)
    a = Assistant(make_settings(tmp_path, server={"max_queued_requests": 1}), llm=llm,
                  embedder=HashEmbedder())
    drain(a.documents.ingest([make_clinic_docs(tmp_path / "docs")["pdf"]]))
    llm.gate = threading.Event()
    try:
        with serve(docent_app.build_app(a)) as url:
            stream = ask(url, stream=True)
            next(iter(stream))  # one answer holds the only place
            body = json.dumps({"messages": [{"role": "user", "content": QUESTION}]}).encode()
            req = urllib.request.Request(url + "/v1/chat/completions", data=body,
                                         headers={"Content-Type": "application/json"})
            with pytest.raises(urllib.error.HTTPError) as refused:
                urllib.request.urlopen(req, timeout=30)
            assert refused.value.code == 429 and refused.value.headers["Retry-After"] == "2"
            assert json.loads(refused.value.read())["error"]["code"] == "rate_limit_exceeded"
            llm.gate.set()
            assert list(stream)[-1].choices[0].finish_reason == "stop"
            assert ask(url).choices[0].finish_reason == "stop"  # the place is free again
            health = json.loads(urllib.request.urlopen(url + "/health", timeout=10).read())
            assert health["status"] == "ok" and health["model"]["state"] == "ready"
    finally:
        llm.gate.set()
        a.close()


def test_a_failure_is_an_http_error_before_the_first_token_and_in_the_stream_after(api):
    url, _, llm = api
    with pytest.raises(openai.BadRequestError, match="question"):
        ask(url, question="   ", stream=True)  # refused before any event was sent
    llm.fail = BackendUnavailable("Cannot reach the LLM server at http://gpu-box/v1")
    try:
        with pytest.raises(openai.InternalServerError, match="gpu-box"):
            ask(url)  # nothing streamed yet: a 502
        stream = ask(url, stream=True)
        with pytest.raises(openai.APIError, match="gpu-box") as err:
            list(stream)  # headers already sent: the error comes as the last event
        assert err.value.body["code"] == "backend_unavailable"
    finally:
        llm.fail = None
    assert ask(url).choices[0].message.content == SHOWN  # the model was released


def test_web_page_is_served_beside_the_api(api):
    url, _, _ = api
    with urllib.request.urlopen(url + "/", timeout=30) as resp:
        assert resp.status == 200 and "Docent" in resp.read().decode()


def test_token_auth(tmp_path):
    s = make_settings(tmp_path, server={"api_token": "s3cret-token-0123456"})
    a = Assistant(s, llm=ScriptedLLM(REPLY), embedder=HashEmbedder())
    app = FastAPI()
    app.include_router(build_api(a))
    try:
        with serve(app) as url:
            with pytest.raises(openai.AuthenticationError) as err:
                client(url, "wrong").models.list()
            assert err.value.body["code"] == "invalid_api_key"
            with pytest.raises(urllib.error.HTTPError) as raw:  # no Authorization header
                urllib.request.urlopen(url + "/v1/models", timeout=30)
            assert raw.value.code == 401
            assert json.loads(raw.value.read())["error"]["type"] == "invalid_request_error"
            assert [m.id for m in client(url, "s3cret-token-0123456").models.list()] == [BASE]
    finally:
        a.close()


def test_page_asks_for_the_token_when_bound_beyond_loopback(tmp_path):
    """Settings say 0.0.0.0 (the test itself still listens on loopback only)."""
    s = make_settings(tmp_path, server={"host": "0.0.0.0", "api_token": "s3cret-token-0123456"})
    a = Assistant(s, llm=ScriptedLLM(REPLY), embedder=HashEmbedder())
    try:
        with serve(docent_app.build_app(a)) as url:
            with pytest.raises(urllib.error.HTTPError) as raw:
                urllib.request.urlopen(url + "/config", timeout=30)
            assert raw.value.code == 401
            for password, ok in (("wrong", False), ("s3cret-token-0123456", True)):
                form = urllib.parse.urlencode({"username": "me", "password": password})
                try:
                    with urllib.request.urlopen(url + "/login", form.encode(), timeout=30) as r:
                        logged_in = json.loads(r.read())["success"]
                except urllib.error.HTTPError:
                    logged_in = False
                assert logged_in is ok
    finally:
        a.close()


def test_remote_backend_over_an_openai_compatible_server(api):
    """OpenAICompatLLM against Docent's own API in plain-chat mode (fast); the real
    llama.cpp server is in the slow test below."""
    url, _, _ = api
    llm = OpenAICompatLLM(url + "/v1", api_key="unused")
    assert llm.name == BASE  # empty model: the server's first
    pieces = list(llm.stream_chat([{"role": "user", "content": "hi"}], 64, 0.0))
    assert "".join(pieces).startswith("Adults take 500 mg")  # Docent answered it with RAG
    assert llm.count_tokens("abcdef 你好") == 5


def test_remote_backend_unreachable_names_the_url():
    url = f"http://127.0.0.1:{free_port()}/v1"
    with pytest.raises(BackendUnavailable, match=f"Cannot reach the LLM server at {url}"):
        OpenAICompatLLM(url, timeout=5)


def test_app_refuses_a_public_bind_without_a_token(tmp_path, monkeypatch, capsys):
    monkeypatch.delenv("DOCENT_SERVER__API_TOKEN", raising=False)

    def no_models(*args, **kwargs):
        raise AssertionError("the app loaded its models before refusing")

    monkeypatch.setattr(docent_app, "Assistant", no_models)
    assert docent_app.main(["--host", "0.0.0.0", "--data-dir", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert "cannot start" in err and "0.0.0.0" in err and "api_token" in err


# --- slow: real models --------------------------------------------------------------
@pytest.mark.slow
def test_remote_backend_with_llama_cpp_server(tmp_path):
    gguf = shared_models_dir() / "qwen2.5-coder-0.5b-instruct-q4_k_m.gguf"
    port = free_port()
    log = tmp_path / "llama-server.log"
    proc = subprocess.Popen(
        [sys.executable, "-m", "llama_cpp.server", "--model", str(gguf), "--host", "127.0.0.1",
         "--port", str(port), "--n_ctx", "2048", "--model_alias", "tiny-qwen"],
        cwd=ROOT, env=os.environ.copy(), stdout=log.open("w"), stderr=subprocess.STDOUT)
    base_url = f"http://127.0.0.1:{port}/v1"
    try:
        _wait_for(base_url + "/models", proc, log)
        s = make_settings(tmp_path, llm={"backend": "openai", "base_url": base_url,
                                         "n_ctx": 2048, "max_tokens": 96, "temperature": 0})
        a = Assistant(s, embedder=HashEmbedder())
        try:
            drain(a.documents.ingest([make_clinic_docs(tmp_path / "docs")["txt"]]))
            assert a.serving.model_ids() == ["tiny-qwen"]  # the server's first model
            events = list(a.chat.ask("What are the visiting hours on the ward?"))
        finally:
            a.close()
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
    deltas = [e.text for e in events if isinstance(e, AnswerDelta)]
    final = events[-1]
    assert isinstance(final, Answer) and final.model == "tiny-qwen"
    assert len(deltas) > 1 and "".join(deltas).strip() == final.text
    assert "2" in final.text and "7" in final.text  # 2 pm to 7 pm
    assert final.sources[0].source == "visitors.txt"


def _wait_for(url: str, proc: subprocess.Popen, log, timeout: float = 180) -> None:
    deadline = time.time() + timeout
    while time.time() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"llama_cpp.server exited: {log.read_text()}")
        try:
            with urllib.request.urlopen(url, timeout=5) as resp:
                if resp.status == 200:
                    return
        except OSError:
            time.sleep(0.5)
    raise RuntimeError(f"llama_cpp.server did not start: {log.read_text()}")


@pytest.mark.slow
def test_real_app_serves_the_api(app_server):
    """The app subprocess (the default 1.5B, visitors.txt ingested): /v1 next to the page."""
    c = client(app_server.url)
    assert [m.id for m in c.models.list()] == ["qwen2.5-coder-1.5b"]
    chunks = list(c.chat.completions.create(
        model="qwen2.5-coder-1.5b", stream=True,
        messages=[{"role": "user", "content": "What are the visiting hours on the ward?"}]))
    text = "".join(ch.choices[0].delta.content or "" for ch in chunks)
    assert "2" in text and "7" in text
    assert chunks[-1].model_extra["sources"][0]["source"] == "visitors.txt"


def test_a_body_over_the_limit_is_refused_before_it_is_read(tmp_path):
    import http.client

    s = make_settings(tmp_path, server={"max_request_mb": 1})
    a = Assistant(s, llm=ScriptedLLM(REPLY), embedder=HashEmbedder())
    try:
        with serve(docent_app.build_app(a)) as url:
            port = int(url.rsplit(":", 1)[1])
            # 20 MB announced, 1 MB sent: the answer comes without the rest
            t0 = time.perf_counter()
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
            conn.putrequest("POST", "/v1/chat/completions")
            conn.putheader("Content-Type", "application/json")
            conn.putheader("Content-Length", str(20 * 2**20))
            conn.endheaders()
            conn.send(b"x" * 2**20)
            resp = conn.getresponse()
            body = json.loads(resp.read())
            assert resp.status == 413 and time.perf_counter() - t0 < 5
            assert body["error"]["code"] == "request_too_large"
            assert "server.max_request_mb" in body["error"]["message"]
            conn.close()
            # no length given (chunked): read up to the limit, then refused
            chunks = (b"y" * 2**16 for _ in range(40))  # 2.5 MB
            reply = httpx.post(url + "/v1/chat/completions", content=chunks, timeout=30)
            assert reply.status_code == 413
            # under the limit, chunked or not, the request goes through as before
            ok = json.dumps({"model": BASE, "messages": [{"role": "user", "content": "hi"}],
                             "stream": False}).encode()
            assert httpx.post(url + "/v1/chat/completions", content=ok, timeout=60,
                              headers={"Content-Type": "application/json"}).status_code == 200
            assert httpx.post(url + "/v1/chat/completions", content=iter([ok]), timeout=60,
                              headers={"Content-Type": "application/json"}).status_code == 200
    finally:
        a.close()


def test_a_short_token_is_refused_beyond_loopback(tmp_path, monkeypatch, capsys):
    monkeypatch.delenv("DOCENT_SERVER__API_TOKEN", raising=False)
    monkeypatch.setenv("DOCENT_SERVER__API_TOKEN", "x")

    def no_models(*args, **kwargs):
        raise AssertionError("the app loaded its models before refusing")

    monkeypatch.setattr(docent_app, "Assistant", no_models)
    assert docent_app.main(["--host", "0.0.0.0", "--data-dir", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert "at least 16 characters (it has 1)" in err and "secrets.token_urlsafe(32)" in err
    assert docent_app._token_problem(make_settings(
        tmp_path, server={"host": "0.0.0.0", "api_token": "k" * 16}).server) == ""
    assert docent_app._token_problem(make_settings(tmp_path, server={"api_token": "x"}).server) == ""


def test_an_upload_over_the_file_limit_is_refused_while_it_arrives(tmp_path):
    s = make_settings(tmp_path, ingest={"max_file_mb": 1})
    a = Assistant(s, llm=ScriptedLLM(REPLY), embedder=HashEmbedder())
    try:
        with serve(docent_app.build_app(a)) as url:
            files = {"files": ("big.txt", b"z" * (2 * 2**20), "text/plain")}
            big = httpx.post(url + "/gradio_api/upload", files=files, timeout=60)
            assert big.status_code == 413, big.text
            small = {"files": ("small.txt", b"fine", "text/plain")}
            assert httpx.post(url + "/gradio_api/upload", files=small, timeout=60).status_code == 200
    finally:
        a.close()
