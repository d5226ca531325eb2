"""The real app in a subprocess: the page over HTTP, and one chat round via the Gradio client."""
import urllib.request

import pytest

pytestmark = pytest.mark.slow


def test_page_is_served_on_loopback(app_server):
    assert app_server.url.startswith("http://127.0.0.1:")
    with urllib.request.urlopen(app_server.url, timeout=30) as resp:
        body = resp.read().decode()
    assert resp.status == 200 and "Docent" in body


def test_one_chat_round_through_the_gradio_client(app_server):
    from gradio_client import Client

    client = Client(app_server.url, verbose=False)
    history, cleared, retrieval = client.predict(
        "What are the visiting hours on the ward?", [], "default", api_name="/chat")
    assert cleared == ""
    rows = retrieval["data"]
    assert rows and rows[0][3] == "visitors.txt"  # the inspector lists the sources and scores
    assert rows[0][5] != "" and rows[0][7] != ""
    assert history[0]["role"] == "user"
    reply = history[-1]
    assert reply["role"] == "assistant"
    text = reply["content"] if isinstance(reply["content"], str) else str(reply["content"])
    assert "Sources" in text and "visitors.txt" in text
    assert "2" in text and "7" in text  # 2 pm to 7 pm
