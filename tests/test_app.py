"""The real app in a subprocess: the page over HTTP, and one chat round via the Gradio client."""
import urllib.request

import pytest

pytestmark = pytest.mark.slow


def test_page_is_served_on_loopback(app_server):
    assert app_server.url.startswith("http://127.0.0.1:")
    with urllib.request.urlopen(app_server.url, timeout=30) as resp:
        body = resp.read().decode()
    assert resp.status == 200 and "Docent" in body
    # the default knowledge base was opened for search while the model loaded, not later
    log = app_server.log.read_text(errors="replace")
    assert log.index("Knowledge base default open for search") < log.index("Docent is ready")


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


def test_uploads_a_crashed_run_left_are_removed_at_start(tmp_path):
    import app as docent_app

    uploads = tmp_path / "uploads"
    (uploads / "a1b2").mkdir(parents=True)
    (uploads / "a1b2" / "handbook.pdf").write_bytes(b"%PDF-1.4")
    (uploads / "notes.txt").write_text("left behind", encoding="utf-8")
    assert docent_app.clear_uploads(uploads) == 2
    assert uploads.is_dir() and not list(uploads.iterdir())
    assert docent_app.clear_uploads(tmp_path / "never-made") == 0
