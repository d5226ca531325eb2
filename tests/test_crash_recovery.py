"""The real app with the real model server: kill -9 the model process in the middle of
an answer; the page, the API and the stored conversations stay up, the answer fails
with a reason (its question kept), the model comes back and the next question is
answered."""
from __future__ import annotations

import json
import os
import signal
import time
import urllib.request

import openai
import pytest

pytestmark = pytest.mark.slow


def get_json(url: str) -> dict:
    with urllib.request.urlopen(url, timeout=30) as resp:
        return json.loads(resp.read())


def wait_ready(url: str, timeout: float = 180) -> dict:
    deadline = time.time() + timeout
    while time.time() < deadline:
        health = get_json(url + "/health")
        if health["model"]["state"] == "ready":
            return health
        time.sleep(0.5)
    raise AssertionError(f"the model did not come back: {health}")


def test_killing_the_model_mid_answer_costs_one_answer_not_the_app(app_server):
    url = app_server.url
    before = wait_ready(url)
    assert before["status"] == "ok" and isinstance(before["model"]["pid"], int)
    client = openai.OpenAI(base_url=url + "/v1", api_key="unused", max_retries=0, timeout=120)
    stream = client.chat.completions.create(
        model=client.models.list().data[0].id, stream=True, max_tokens=400, temperature=0,
        messages=[{"role": "user", "content": "Count from one to two hundred in words."}],
        extra_body={"rag": False})
    chunks = iter(stream)
    next(chunks)  # the role chunk
    next(chunks)  # the model is writing
    os.kill(before["model"]["pid"], signal.SIGKILL)
    with pytest.raises(openai.APIError, match="model|LLM server"):
        for _ in chunks:
            pass
    # the app is up while the model restarts: its page, its API, its conversations
    with urllib.request.urlopen(url + "/", timeout=30) as page:
        assert page.status == 200
    assert [m.id for m in client.models.list()]
    after = wait_ready(url)
    assert after["model"]["pid"] != before["model"]["pid"]
    assert after["model"]["restarts"] >= 1 and "SIGKILL" in after["model"]["last_exit"]
    reply = client.chat.completions.create(
        model=client.models.list().data[0].id, max_tokens=16, temperature=0,
        messages=[{"role": "user", "content": "Say hello."}], extra_body={"rag": False})
    assert reply.choices[0].message.content.strip()


def test_a_crash_mid_answer_in_a_conversation_is_stored_failed_and_retry_answers(tmp_path):
    from assistant.core import Assistant
    from assistant.errors import BackendUnavailable
    from assistant.types import Answer, AnswerDelta
    from ingest.pipeline import drain
    from tests.conftest import make_settings
    from tests.fakes import HashEmbedder
    from tests.helpers.docs import make_clinic_docs

    settings = make_settings(tmp_path, llm={"model": "qwen2.5-coder-0.5b", "temperature": 0,
                                            "max_tokens": 120, "n_ctx": 2048},
                             answers={"default_profile": "general", "gate": False})
    a = Assistant(settings, embedder=HashEmbedder())
    try:
        drain(a.documents.ingest([make_clinic_docs(tmp_path / "docs")["txt"]]))
        a.serving.warm_up()
        pid = a.serving.status()["pid"]
        cid = a.conversations.create().conversation_id
        with pytest.raises(BackendUnavailable):
            for event in a.conversations.send(cid, "What are the visiting hours on the ward?"):
                if isinstance(event, AnswerDelta):
                    os.kill(pid, signal.SIGKILL)
        [turn] = a.conversations.turns(cid)
        assert turn.status == "failed" and turn.error
        assert turn.question == "What are the visiting hours on the ward?"
        final = list(a.conversations.retry(cid))[-1]  # waits for the restarted model
        assert isinstance(final, Answer) and final.text
        [turn] = a.conversations.turns(cid)
        assert turn.status == "done" and a.serving.status()["pid"] != pid
    finally:
        a.close()
