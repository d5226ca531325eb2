from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from common.offline import go_offline

go_offline()

from assistant.settings import Settings, load_settings  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
SHARED = ROOT.parent / "shared"


def shared_models_dir() -> Path:
    """Read-only: the default models assembled by `make models` (the user's models dir)."""
    return Path(os.environ.get("DOCENT_TEST_MODELS_DIR") or load_settings().paths.models_dir)


def make_settings(tmp_path: Path, **overrides) -> Settings:
    """Settings on a temp data dir. Knowledge bases get the "general" profile (no scope,
    no medical rules) unless a test asks for another: most tests check mechanics, and
    the medical rules have tests of their own (tests/test_guard.py)."""
    values = {"data_dir": tmp_path / "data", "models_dir": shared_models_dir(),
              "answers": {"default_profile": "general"},
              # no knowledge base moves to EmbeddingGemma in the background unless a test
              # asks: the shared models dir may hold it, and a worker loading it is slow
              "embedder": {"across": ""}}
    values.update(overrides)
    return Settings(**values)


@pytest.fixture
def settings(tmp_path):
    return make_settings(tmp_path)


@pytest.fixture(scope="session")
def e5():
    from knowledge.embedders import E5Embedder

    return E5Embedder()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class AppServer:
    def __init__(self, proc: subprocess.Popen, url: str, data_dir: Path, log: Path):
        self.proc, self.url, self.data_dir, self.log = proc, url, data_dir, log


LEAFLET_PAGES = [
    ["Hand hygiene leaflet",
     "Wash your hands with soap and water for at least 20 seconds.",
     "Dry your hands with a clean paper towel."],
    ["Hand rub",
     "Use an alcohol-based hand rub when your hands are not visibly dirty.",
     "Rub the gel over all surfaces of your hands until they are dry."],
]


@pytest.fixture(scope="session")
def app_server(tmp_path_factory):
    """The real app with the default 1.5B model, as a user runs it, in a subprocess, with
    visitors.txt and a two-page leaflet.pdf (hand hygiene) ingested beforehand through
    the CLI."""
    from tests.helpers.docs import make_clinic_docs
    from tests.helpers.pdfgen import write_pdf

    base = tmp_path_factory.mktemp("app")
    docs = make_clinic_docs(base / "docs")
    docs["leaflet"] = write_pdf(base / "docs" / "leaflet.pdf", LEAFLET_PAGES)
    inherited = {k: v for k, v in os.environ.items() if k != "GRADIO_TEMP_DIR"}  # the app's own
    env = {**inherited, "DOCENT_DATA_DIR": str(base / "data"),
           "DOCENT_MODELS_DIR": str(shared_models_dir()),
           "DOCENT_LLM__MODEL": "qwen2.5-coder-1.5b", "DOCENT_LLM__TEMPERATURE": "0"}
    subprocess.run([sys.executable, "-m", "assistant", "ingest", str(docs["txt"]),
                    str(docs["leaflet"])],
                   cwd=ROOT, env=env, check=True, capture_output=True, timeout=300)
    port = free_port()
    log = base / "app.log"
    proc = subprocess.Popen([sys.executable, "app.py", "--port", str(port)], cwd=ROOT, env=env,
                            stdout=log.open("w"), stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    deadline = time.time() + 300
    while time.time() < deadline:
        if "Docent is ready" in log.read_text(errors="replace"):
            break
        if proc.poll() is not None:
            raise RuntimeError(f"app exited: {log.read_text()}")
        time.sleep(0.5)
    else:
        proc.kill()
        raise RuntimeError(f"app did not start: {log.read_text()}")
    server = AppServer(proc, url, base / "data", log)
    server.docs = docs
    yield server
    proc.terminate()
    try:
        proc.wait(timeout=20)
    except subprocess.TimeoutExpired:
        proc.kill()
