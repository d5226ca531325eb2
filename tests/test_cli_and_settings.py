import os
import subprocess
import sys
from pathlib import Path

import pytest

from assistant.settings import Settings, load_settings
from tests.conftest import ROOT, shared_models_dir


def test_settings_from_file_env_and_overrides(tmp_path, monkeypatch):
    cfg = tmp_path / "docent.toml"
    cfg.write_text('data_dir = "/tmp/x"\n[retrieval]\ntop_k = 7\n[llm]\nn_ctx = 2048\n')
    monkeypatch.setenv("DOCENT_LLM__N_CTX", "8192")
    s = load_settings(cfg, retrieval={"top_k": 3})
    assert s.llm.n_ctx == 8192          # env beats file
    assert s.retrieval.top_k == 3       # keyword override beats env and file
    assert str(s.data_dir) == "/tmp/x"
    assert s.paths.models_dir == Path("/tmp/x/models").resolve()


def test_bad_settings_are_refused_with_the_field_named():
    with pytest.raises(ValueError, match="chunk_overlap"):
        Settings(chunking={"chunk_size": 100, "chunk_overlap": 200})
    with pytest.raises(ValueError, match="top_k"):
        Settings(retrieval={"top_k": 0})


def test_every_setting_is_described():
    def walk(model):
        for name, field in model.model_fields.items():
            assert field.description, f"{model.__name__}.{name} has no description"
            ann = field.annotation
            if isinstance(ann, type) and hasattr(ann, "model_fields"):
                walk(ann)
    walk(Settings)


def _cli(tmp_path, *args, timeout=600):
    env = {**os.environ, "DOCENT_DATA_DIR": str(tmp_path / "data"),
           "DOCENT_MODELS_DIR": str(shared_models_dir())}
    return subprocess.run([sys.executable, "-m", "assistant", *args], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=timeout)


@pytest.mark.slow
def test_doctor_reports_models_versions_and_data_dir(tmp_path):
    out = _cli(tmp_path, "doctor")
    assert str(tmp_path / "data") in out.stdout
    assert "qwen2.5-coder-1.5b (selected)" in out.stdout and "sha256 OK" in out.stdout
    assert "chromadb" in out.stdout and "No problems found." in out.stdout, out.stdout
    assert out.returncode == 0


@pytest.mark.slow
def test_doctor_says_what_is_missing(tmp_path):
    env_model = tmp_path / "nope.gguf"
    out = subprocess.run([sys.executable, "-m", "assistant", "doctor"], cwd=ROOT,
                         env={**os.environ, "DOCENT_DATA_DIR": str(tmp_path),
                              "DOCENT_LLM__MODEL": str(env_model)},
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 1 and "does not exist" in out.stdout


@pytest.mark.slow
def test_cli_ingest_then_ask_streams_and_prints_sources(tmp_path):
    from tests.helpers.docs import make_clinic_docs

    make_clinic_docs(tmp_path / "docs")
    bad = tmp_path / "docs" / "broken.pdf"
    bad.write_bytes(b"%PDF-1.4 garbage")
    out = _cli(tmp_path, "ingest", str(tmp_path / "docs"))
    assert out.returncode == 0, out.stderr
    assert "3 ingested, 0 unchanged, 1 failed" in out.stdout
    assert "failed    broken.pdf" in out.stdout
    out = _cli(tmp_path, "--kb", "default", "kb", "docs")
    assert "handbook.pdf" in out.stdout
    out = _cli(tmp_path, "kb", "reread")  # all read by this Docent's readers
    assert out.returncode == 0 and "0 ingested, 0 unchanged, 0 failed" in out.stdout, out.stderr
    ask = ["ask", "When does the pharmacy close on Saturdays?"]
    out = subprocess.run(
        [sys.executable, "-m", "assistant", *ask], cwd=ROOT, capture_output=True, text=True,
        timeout=600, env={**os.environ, "DOCENT_DATA_DIR": str(tmp_path / "data"),
                          "DOCENT_MODELS_DIR": str(shared_models_dir()),
                          "DOCENT_LLM__TEMPERATURE": "0"})  # the default 1.5B
    assert out.returncode == 0, out.stderr
    assert "9" in out.stdout and "Sources:" in out.stdout and "pharmacy.docx" in out.stdout


def test_cli_errors_are_clear(tmp_path):
    out = _cli(tmp_path, "--kb", "no-such-kb", "kb", "docs", timeout=120)
    assert out.returncode == 2 and "No knowledge base named 'no-such-kb'" in out.stderr


@pytest.mark.slow
def test_cli_sync_rename_and_password(tmp_path):
    folder = tmp_path / "watched"
    folder.mkdir()
    (folder / "a.txt").write_text("Insulin pens are stored in the fridge before first use.", encoding="utf-8")
    (folder / "b.md").write_text("# Flu\n\nThe flu vaccine is given every autumn.", encoding="utf-8")
    out = _cli(tmp_path, "sync", str(folder))
    assert out.returncode == 0 and "2 ingested, 0 unchanged, 0 failed" in out.stdout, out.stderr
    (folder / "b.md").unlink()
    out = _cli(tmp_path, "sync", str(folder))
    assert "1 deleted" in out.stdout and "deleted   b.md" in out.stdout
    out = _cli(tmp_path, "kb", "rename", "default", "clinic")
    assert out.returncode == 0
    out = _cli(tmp_path, "--kb", "clinic", "kb", "docs")
    assert "a.txt" in out.stdout and "b.md" not in out.stdout
    pdf = ROOT / "tests" / "fixtures" / "pdf" / "password_unstructured.pdf"
    out = _cli(tmp_path, "--kb", "clinic", "ingest", str(pdf))
    assert "password required" in out.stdout and out.returncode == 1
    out = _cli(tmp_path, "--kb", "clinic", "ingest", str(pdf), "--password", "password")
    assert out.returncode == 0 and "added" in out.stdout
