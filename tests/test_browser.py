"""A person's path through the UI, in Debian's chromium driven by Playwright."""
import shutil

import pytest

pytestmark = pytest.mark.slow

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"


def test_upload_then_ask_shows_answer_and_citation(app_server, tmp_path):
    from playwright.sync_api import expect, sync_playwright

    if not shutil.which("chromium"):
        pytest.fail("Debian chromium is not installed: run `make test` as root, or "
                    "`apt-get install chromium`.")
    with sync_playwright() as p:
        browser = p.chromium.launch(
            executable_path=CHROMIUM, headless=True,
            args=["--no-sandbox", "--disable-gpu", "--disable-background-networking",
                  "--disable-component-update", "--disable-sync", "--no-first-run"])
        page = browser.new_page(viewport={"width": 1280, "height": 1400})
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
        expect(page.locator("#kb-status")).to_contain_text("Reranker: none")
        expect(page.locator("#train-reranker")).to_be_visible()
        page.screenshot(path=str(tmp_path / "knowledge.png"), full_page=True)

        page.get_by_role("tab", name="Chat").click()
        page.locator("#question textarea").fill("What is the usual amoxicillin dose for adults?")
        page.locator("#ask").click()
        chat = page.locator("#chat")
        expect(chat).to_contain_text("Sources", timeout=180_000)
        expect(chat).to_contain_text("handbook.pdf")
        expect(chat).to_contain_text("500")
        page.get_by_text("Show retrieval").click()
        expect(page.locator("#retrieval")).to_contain_text("handbook.pdf")
        page.screenshot(path=str(tmp_path / "chat.png"), full_page=True)
        # query words are rendered in bold (Markdown), never as literal asterisks
        expect(page.locator("#retrieval")).not_to_contain_text("**amoxicillin**")
        browser.close()
    assert (tmp_path / "chat.png").stat().st_size > 10_000
