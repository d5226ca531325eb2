"""A person's path through the UI, in Debian's chromium driven by Playwright."""
import shutil
from contextlib import contextmanager
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
QUESTION = "What is the usual amoxicillin dose for adults?"


@contextmanager
def browser_page():
    from playwright.sync_api import sync_playwright

    if not shutil.which("chromium"):
        pytest.fail("Debian chromium is not installed: run `make test` as root, or "
                    "`apt-get install chromium`.")
    with sync_playwright() as p:
        browser = p.chromium.launch(
            executable_path=CHROMIUM, headless=True,
            args=["--no-sandbox", "--disable-gpu", "--disable-background-networking",
                  "--disable-component-update", "--disable-sync", "--no-first-run"])
        try:
            yield browser.new_page(viewport={"width": 1280, "height": 1400})
        finally:
            browser.close()


def test_upload_then_ask_shows_answer_and_citation(app_server, tmp_path):
    from playwright.sync_api import expect

    with browser_page() as page:
        page.goto(app_server.url)
        page.get_by_role("tab", name="Knowledge").click()
        broken = tmp_path / "broken.pdf"
        broken.write_bytes(b"%PDF-1.4 not really a PDF")
        page.locator("#upload input[type=file]").set_input_files(
            [str(app_server.docs["pdf"]), str(broken)])
        expect(page.locator("#upload")).to_contain_text("broken", timeout=30_000)
        page.locator("#ingest").click()
        expect(page.locator("#ingest-summary")).to_contain_text("1 ingested", timeout=180_000)
        expect(page.locator("#ingest-summary")).to_contain_text("1 failed")
        expect(page.locator("#ingest-results")).to_contain_text("FAILED")
        expect(page.locator("#ingest-results")).to_contain_text("Not a readable PDF")
        expect(page.locator("#documents")).to_contain_text("handbook.pdf")
        # the page's copy of an upload stays in the data dir, not the shared temp dir
        assert list((app_server.data_dir / "uploads").rglob("handbook.pdf"))
        expect(page.locator("#kb-status")).to_contain_text("Reranker: none")
        expect(page.locator("#train-reranker")).to_be_visible()
        page.screenshot(path=str(tmp_path / "knowledge.png"), full_page=True)
        page.locator("#reread").click()  # every document was read by this Docent's readers
        expect(page.locator("#ingest-summary")).to_contain_text("Nothing to do", timeout=60_000)
        expect(page.locator("#documents")).to_contain_text("handbook.pdf")

        page.get_by_role("tab", name="Chat").click()
        page.locator("#question textarea").fill(QUESTION)
        page.locator("#ask").click()
        chat = page.locator("#chat")
        # while the model reads its sources (seconds on a CPU), the chat says which
        expect(chat).to_contain_text("before answering", timeout=60_000)
        expect(chat).to_contain_text("handbook.pdf, p. 2")
        page.screenshot(path=str(tmp_path / "reading.png"), full_page=True)
        expect(chat).to_contain_text("Sources", timeout=180_000)
        expect(chat).to_contain_text("handbook.pdf")
        expect(chat).to_contain_text("500")
        page.get_by_text("Show retrieval").click()
        expect(page.locator("#retrieval")).to_contain_text("handbook.pdf")
        # query words are rendered in bold (Markdown), never as literal asterisks
        expect(page.locator("#retrieval")).not_to_contain_text("**amoxicillin**")

        # a citation opens its passage, the quote highlighted, and the PDF page it is on
        citations = page.locator("#citations")
        expect(citations).to_contain_text("handbook.pdf, p.", timeout=30_000)
        citations.get_by_text("handbook.pdf, p.").first.click()
        expect(page.locator("#citation-text")).to_contain_text("handbook.pdf, p.", timeout=60_000)
        mark = page.locator("#citation-text mark")
        expect(mark).to_be_visible()
        assert len(mark.inner_text().strip()) > 10
        page_image = page.locator("#citation-page img")
        expect(page_image).to_be_visible(timeout=60_000)
        assert page_image.evaluate("img => img.naturalWidth") > 500  # a readable page
        page.screenshot(path=str(tmp_path / "chat.png"), full_page=True)

        _reopen_and_export(page, QUESTION, "handbook.pdf", tmp_path)
    assert (tmp_path / "chat.png").stat().st_size > 10_000


def _reopen_and_export(page, question: str, source: str, tmp_path) -> None:
    """After a reload the chat is empty; the stored conversation reopens from the list
    with its answer and citations, and exports as Markdown."""
    from playwright.sync_api import expect

    page.reload()
    expect(page.locator("#conversations")).to_contain_text(question, timeout=30_000)
    expect(page.locator("#chat")).not_to_contain_text(source)
    page.locator("#conversations").get_by_text(question).first.click()
    chat = page.locator("#chat")
    expect(chat).to_contain_text(question, timeout=30_000)
    expect(chat).to_contain_text("Sources")
    expect(page.locator("#citations")).to_contain_text(source)
    expect(page.locator("#conversation-title textarea, #conversation-title input").first
           ).to_have_value(question)

    page.locator("#export-conversation").click()
    link = page.locator("#export-file a").first
    expect(link).to_be_visible(timeout=30_000)
    with page.expect_download() as download:
        link.click()
    assert download.value.suggested_filename.endswith(".md")
    exported = Path(download.value.path()).read_text(encoding="utf-8")
    assert exported.startswith(f"# {question}")
    assert f"## 1. {question}" in exported and f"] {source}" in exported
    page.screenshot(path=str(tmp_path / "reopened.png"), full_page=True)


def test_summarize_a_document_cites_its_pages(app_server, tmp_path):
    from playwright.sync_api import expect

    with browser_page() as page:
        page.goto(app_server.url)
        page.get_by_role("tab", name="Knowledge").click()
        page.locator("#task-docs input").click()
        page.get_by_role("option", name="leaflet.pdf").first.click()
        page.locator("#task-kind").get_by_text("Summarize", exact=True).click()
        page.locator("#run-task").click()
        result = page.locator("#task-result")
        expect(result).to_contain_text("Summary of leaflet.pdf", timeout=300_000)
        expect(result).to_contain_text("Sources")
        expect(result).to_contain_text("leaflet.pdf, p. ")
        expect(page.locator("#task-status")).to_contain_text("Done")
        page.screenshot(path=str(tmp_path / "summary.png"), full_page=True)


def test_finetune_tab_imports_previews_and_estimates(app_server, tmp_path):
    """Fine-tune tab: upload a JSONL dataset, see it imported and previewed, then an
    estimate for LoRA on the default 0.5B; the chat's model menu offers the base model."""
    import json
    import re

    from playwright.sync_api import expect

    rows = [{"prompt": "What are the visiting hours on the ward?",
             "response": "Visiting hours are 2 pm to 7 pm."},
            {"instruction": "How long should I wash my hands?", "input": "",
             "output": "At least 20 seconds, with soap and water."}]
    data = tmp_path / "clinic-faq.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    with browser_page() as page:
        page.goto(app_server.url)
        expect(page.locator("#chat-model input")).to_have_value(re.compile(r"\(base\)$"),
                                                             timeout=30_000)
        page.get_by_role("tab", name="Fine-tune").click()
        page.locator("#ft-upload input[type=file]").set_input_files(str(data))
        expect(page.locator("#ft-upload")).to_contain_text("clinic-faq", timeout=30_000)
        page.locator("#ft-import").click()
        status = page.locator("#ft-data-status")
        expect(status).to_contain_text("Imported", timeout=60_000)
        expect(status).to_contain_text("2 training")
        preview = page.locator("#ft-preview")
        expect(preview).to_contain_text("visiting hours on the ward", timeout=30_000)
        expect(preview).to_contain_text("At least 20 seconds")
        expect(page.locator("#ft-dataset input")).to_have_value(re.compile("^clinic-faq"))

        page.get_by_role("tab", name="Train", exact=True).click()
        page.locator("#ft-estimate").click()
        estimate = page.locator("#ft-estimate-result")
        expect(estimate).to_contain_text("630M parameters", timeout=120_000)
        expect(estimate).to_contain_text("GB")
        expect(estimate).to_contain_text("s per step")
        # each method brings its own defaults for the shared fields
        epochs, accum = page.locator("#ft-epochs input"), page.locator("#ft-grad-accum input")
        expect(epochs).to_have_value("3")
        page.locator("#ft-method").get_by_text("Continued pretraining").click()
        expect(epochs).to_have_value("1", timeout=30_000)
        expect(accum).to_have_value("4")
        expect(page.locator("#ft-lr input")).to_have_value("0.0001")
        page.locator("#ft-method").get_by_text("LoRA").click()
        expect(epochs).to_have_value("3", timeout=30_000)
        expect(accum).to_have_value("1")
        page.get_by_role("tab", name="Jobs", exact=True).click()
        expect(page.locator("#ft-job-details")).to_contain_text("No training jobs yet",
                                                                timeout=30_000)
        page.screenshot(path=str(tmp_path / "finetune.png"), full_page=True)


def test_stop_crash_retry_and_new_conversation_while_streaming(app_server, tmp_path):
    """Stop keeps what streamed, marked stopped; killing the model mid-answer says so with
    a Retry that answers once the model is back; New conversation while an answer streams
    starts a new conversation that gets the next question."""
    import json
    import os
    import signal
    import time
    import urllib.request

    from playwright.sync_api import expect

    def health() -> dict:
        with urllib.request.urlopen(app_server.url + "/health", timeout=30) as resp:
            return json.loads(resp.read())

    def ready() -> dict:
        deadline = time.time() + 180
        while time.time() < deadline:
            h = health()
            if h["model"]["state"] == "ready":
                return h
            time.sleep(0.5)
        raise AssertionError(f"model not ready: {h}")

    with browser_page() as page:
        page.goto(app_server.url)
        chat = page.locator("#chat")
        ask = lambda q: (page.locator("#question textarea").fill(q),  # noqa: E731
                         page.locator("#ask").click())
        ask("What are the visiting hours on the ward?")
        expect(chat).to_contain_text("before answering", timeout=60_000)
        page.locator("#stop").click()
        expect(chat).to_contain_text("Stopped", timeout=120_000)
        page.screenshot(path=str(tmp_path / "stopped.png"), full_page=True)

        pid = ready()["model"]["pid"]
        ask("How long should I wash my hands?")
        expect(chat).to_contain_text("before answering", timeout=60_000)
        os.kill(pid, signal.SIGKILL)
        expect(chat).to_contain_text("The answer failed", timeout=120_000)
        expect(chat).to_contain_text("Retry")
        page.screenshot(path=str(tmp_path / "failed.png"), full_page=True)
        assert ready()["model"]["pid"] != pid  # restarted while the page stayed up
        page.locator("#retry").click()
        expect(chat).to_contain_text("Sources", timeout=240_000)
        expect(chat).not_to_contain_text("The answer failed")

        ask("What are the visiting hours on the ward?")
        expect(chat).to_contain_text("before answering", timeout=60_000)
        page.locator("#new-conversation").click()
        expect(chat).not_to_contain_text("visiting hours", timeout=30_000)
        ask("Which soap should I use to wash my hands?")
        expect(chat).to_contain_text("Which soap", timeout=30_000)
        expect(chat).not_to_contain_text("visiting hours")
        expect(page.locator("#conversations")).to_contain_text("Which soap", timeout=240_000)
        page.screenshot(path=str(tmp_path / "new-while-streaming.png"), full_page=True)


def test_accounts_log_in_and_users_see_no_administration(tmp_path):
    """With accounts the page asks for a login; a user gets chat only, an admin logs in
    at /admin/ for the whole page."""
    from playwright.sync_api import expect

    import app as docent_app
    from assistant.accounts import AccountStore
    from assistant.core import Assistant
    from tests.conftest import make_settings
    from tests.fakes import HashEmbedder, ScriptedLLM
    from tests.test_api import serve

    store = AccountStore(tmp_path / "data" / "accounts.sqlite3")
    store.add("alice", "alice's password", "admin")
    store.add("bob", "bob's password", "user")
    store.close()
    a = Assistant(make_settings(tmp_path), llm=ScriptedLLM("Hello [1]."), embedder=HashEmbedder())
    try:
        with serve(docent_app.build_app(a)) as url, browser_page() as page:
            page.goto(url + "/")
            page.get_by_label("username").fill("bob")
            page.get_by_label("password").fill("bob's password")
            page.get_by_role("button", name="Login").click()
            expect(page.locator("#signed-in")).to_contain_text("Signed in as bob",
                                                                timeout=30_000)
            expect(page.get_by_role("tab", name="Chat")).to_be_visible()
            expect(page.get_by_role("tab", name="Knowledge")).to_have_count(0)
            expect(page.locator("#signed-in")).not_to_contain_text("Administration")
            page.goto(url + "/admin/")
            page.get_by_label("username").fill("alice")
            page.get_by_label("password").fill("alice's password")
            page.get_by_role("button", name="Login").click()
            expect(page.get_by_role("tab", name="Knowledge")).to_be_visible(timeout=30_000)
            expect(page.locator("#signed-in")).to_contain_text("Signed in as alice")
    finally:
        a.close()
