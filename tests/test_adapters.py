"""Adapters: the registry, ReFT save/reload/generate, LoRA -> GGUF LoRA -> llama.cpp chat
switched at run time through the facade, merged exports, and GET /v1/models.

Everything runs on a tiny random Qwen2 (hidden 64, 2 layers) with the real Qwen
tokenizer (tests/helpers/tiny_model.py), and llama.cpp's converters installed by
``make convert-tools``.
"""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from assistant.core import Assistant
from finetune.registry import AdapterError, AdapterRegistry
from tests.conftest import make_settings
from tests.fakes import HashEmbedder, ScriptedLLM
from tests.helpers.tiny_model import tiny_qwen2

PROMPT = [{"role": "user", "content": "What are the visiting hours of the clinic?"}]


# --- fixtures -------------------------------------------------------------------------
@pytest.fixture(scope="module")
def tiny(tmp_path_factory) -> Path:
    return tiny_qwen2(tmp_path_factory.mktemp("tiny") / "qwen2-tiny")


@pytest.fixture(scope="module")
def tiny_gguf(tiny, tmp_path_factory) -> Path:
    from finetune.gguf import hf_to_gguf

    return hf_to_gguf(tiny, tmp_path_factory.mktemp("gguf") / "tiny-f16.gguf", "f16")


@pytest.fixture(scope="module")
def lora_dir(tiny, tmp_path_factory) -> Path:
    """A peft LoRA on the default targets (attention and MLP projections) with random,
    clearly non-zero B weights (as after training)."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    from finetune.specs import LoraSpec

    model = AutoModelForCausalLM.from_pretrained(str(tiny))
    targets = list(LoraSpec().target_modules)
    assert "down_proj" in targets
    peft_model = get_peft_model(model, LoraConfig(r=4, lora_alpha=8, target_modules=targets))
    gen = torch.Generator().manual_seed(1)
    for name, weight in peft_model.named_parameters():
        if "lora_B" in name:
            weight.data = torch.randn(weight.shape, generator=gen) * 0.5
    out = tmp_path_factory.mktemp("lora") / "adapter"
    peft_model.save_pretrained(str(out))
    return out


def _fake_adapter(folder: Path, payload: bytes = b"weights", method: str = "lora") -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    config = "adapter_config.json" if method != "reft" else "reft_config.json"
    (folder / config).write_text("{}")
    (folder / "adapter_model.safetensors").write_bytes(payload)
    return folder


# --- registry -------------------------------------------------------------------------
def test_registry_round_trip_and_refusals(tmp_path):
    root = tmp_path / "adapters"
    reg = AdapterRegistry(root)
    src = _fake_adapter(tmp_path / "out")
    rec = reg.register(src, method="lora", base_model="qwen2.5-coder-0.5b",
                       dataset_hash="d1", spec={"r": 8}, metrics={"f1": 0.5}, name="faq")
    assert rec.path == root / rec.adapter_id and rec.adapter_id.startswith("lora-")
    assert src.is_dir()  # copied, not moved
    again = AdapterRegistry(root).get(rec.adapter_id)  # a fresh registry reads the manifest
    assert (again.name, again.method, again.base_model, again.spec, again.metrics) == (
        "faq", "lora", "qwen2.5-coder-0.5b", {"r": 8}, {"f1": 0.5})
    manifest = json.loads((rec.path / "manifest.json").read_text())
    assert manifest["format_version"] == 1 and manifest["dataset_hash"] == "d1"
    assert manifest["files"] == ["adapter_config.json", "adapter_model.safetensors"]
    assert reg.find("faq") == again

    updated = reg.update_metrics(rec.adapter_id, {"adapter_f1": 0.7})
    assert updated.metrics == {"f1": 0.5, "adapter_f1": 0.7}
    (rec.path / "adapter-f16.gguf").write_bytes(b"gguf")
    assert reg.set_gguf(rec.adapter_id, rec.path / "adapter-f16.gguf").gguf_path == (
        rec.path / "adapter-f16.gguf")
    assert reg.set_gguf(rec.adapter_id, None, "boom").gguf_error == "boom"

    with pytest.raises(AdapterError, match="already registered"):  # the same weights
        reg.register(src, method="lora", base_model="b", dataset_hash="", spec={}, metrics={})
    other = _fake_adapter(tmp_path / "other", b"other weights")
    with pytest.raises(AdapterError, match="named 'faq' exists"):
        reg.register(other, method="lora", base_model="b", dataset_hash="", spec={},
                     metrics={}, name="faq")
    with pytest.raises(AdapterError, match="No adapter 'nope'.*" + rec.adapter_id):
        reg.get("nope")
    with pytest.raises(AdapterError, match="No adapter"):
        reg.get("../etc")
    (other / "optimizer.pt").write_bytes(b"pickle")
    with pytest.raises(AdapterError, match="pickled"):
        reg.register(other, method="lora", base_model="b", dataset_hash="", spec={}, metrics={})
    with pytest.raises(AdapterError, match="no reft_config.json"):
        reg.register(_fake_adapter(tmp_path / "third", b"3"), method="reft", base_model="b",
                     dataset_hash="", spec={}, metrics={})
    with pytest.raises(AdapterError, match="Unknown adapter method"):
        reg.register(src, method="qlora?", base_model="b", dataset_hash="", spec={}, metrics={})

    moved = reg.register(_fake_adapter(tmp_path / "fourth", b"4"), method="dpo",
                         base_model="b", dataset_hash="", spec={}, metrics={}, move=True)
    assert not (tmp_path / "fourth").exists()
    assert {r.adapter_id for r in reg.list()} == {rec.adapter_id, moved.adapter_id}
    reg.delete(rec.adapter_id)
    assert [r.adapter_id for r in reg.list()] == [moved.adapter_id]
    with pytest.raises(AdapterError):
        reg.delete(rec.adapter_id)

    manifest = json.loads((moved.path / "manifest.json").read_text())
    manifest["format_version"] = 99
    (moved.path / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(AdapterError, match="format 99"):
        reg.get(moved.adapter_id)
    assert reg.list() == []  # an unreadable manifest is skipped, not fatal


# --- ReFT -----------------------------------------------------------------------------
def _intervened_logits(reft_model, tok):
    import torch

    from finetune.reft import locations

    cfg = reft_model.docent_config
    prompt = tok.apply_chat_template(PROMPT, add_generation_prompt=True, tokenize=False)
    enc = tok(prompt, return_tensors="pt", add_special_tokens=False)
    locs = locations(enc["input_ids"].shape[-1], cfg["positions"], len(cfg["layers"]))
    with torch.no_grad():
        _, edited = reft_model(dict(enc), unit_locations={"sources->base": (
            None, [[loc] for loc in locs])})
        base = reft_model.model(**enc)
    return base.logits, edited.logits


def test_reft_save_reload_generate_round_trip(tiny, tmp_path):
    import torch

    from finetune import reft as R

    model, tok = R.load_base(tiny)
    trained = R.build_reft(model, [0, 1], rank=4)
    gen = torch.Generator().manual_seed(0)
    for value in trained.interventions.values():  # as if trained: far from the init
        module = R._module(value)
        module.learned_source.weight.data = torch.randn(
            module.learned_source.weight.shape, generator=gen)
    trained.eval()
    trained.docent_config = {"positions": "f1+l1", "layers": [0, 1]}
    base_logits, before = _intervened_logits(trained, tok)
    assert not torch.allclose(base_logits, before, atol=1e-3)  # the edit matters
    text_before = R.generate(trained, tok, PROMPT, max_new_tokens=8)

    out = R.save_reft(trained, tmp_path / "reft", base_dir=tiny, layers=[0, 1], rank=4,
                      positions="f1+l1")
    assert sorted(p.name for p in out.iterdir()) == ["interventions.safetensors",
                                                      "reft_config.json"]
    reloaded = R.load_reft(out)  # the base comes from reft_config.json
    _, after = _intervened_logits(reloaded, tok)
    assert torch.allclose(before, after, atol=1e-5)
    assert R.generate(reloaded, tok, PROMPT, max_new_tokens=8) == text_before

    # served through the facade: the chat model menu lists it, llm_for gives a ReftLLM
    a = Assistant(make_settings(tmp_path), llm=ScriptedLLM("base reply"),
                  embedder=HashEmbedder())
    record = a.serving.adapters.register(out, method="reft", base_model=str(tiny), dataset_hash="",
                                 spec={"layers": [0, 1]}, metrics={}, name="reft-test")
    assert [m.method for m in a.serving.models()] == ["base", "reft"]
    llm = a.serving.llm_for("reft-test")
    pieces = list(llm.stream_chat(PROMPT, 8, 0.0))
    assert "".join(pieces) == text_before and llm.count_tokens("hello world") == 2
    assert llm.name == record.adapter_id and a.serving.llm_for(None).name == "scripted"
    a.close()

    from finetune.specs import ReftSpec

    # the default layers (8, 16) suit the default models, not this 2-layer one: a clear error
    with pytest.raises(R.ReftError, match=r"layer\(s\) \[8, 16\] do not exist: the model has "
                                          r"layers 0..1. Choose layers in that range"):
        R.build_reft(R.load_base(tiny)[0], list(ReftSpec().layers), rank=2)


def test_train_reft_reports_steps_and_saves_safetensors(tiny, tmp_path):
    from finetune.reft import load_reft, train_reft
    from finetune.specs import ReftSpec

    examples = [(("user", "Where is the clinic?"), ("assistant", "On Elm Street.")),
                (("user", "Clinic address?"), ("assistant", "On Elm Street."))] * 2
    steps = []
    spec = ReftSpec(layers=(0, 1), rank=2, max_steps=3, micro_batch_size=2, grad_accum=1,
                    lr=1e-2)
    result = train_reft(tiny, examples, spec, tmp_path / "reft",
                        on_step=lambda *a: steps.append(a))
    assert [s[0] for s in steps] == [1, 2, 3] and all(s[1] == 3 for s in steps)
    assert steps[-1][2] < steps[0][2]  # the loss goes down
    assert result.trainable_params == 2 * (64 * 2 + 2 + 64 * 2)  # W, b and R per layer
    assert sorted(p.name for p in (tmp_path / "reft").iterdir()) == [
        "interventions.safetensors", "reft_config.json"]
    assert load_reft(tmp_path / "reft").docent_config["positions"] == "f1+l1"


# --- LoRA in llama.cpp, through the facade ----------------------------------------------
@pytest.fixture(scope="module")
def served(tiny, tiny_gguf, lora_dir, tmp_path_factory):
    """An Assistant whose chat model is the tiny GGUF, with the LoRA registered."""
    settings = make_settings(tmp_path_factory.mktemp("served"), llm={
        "model": str(tiny_gguf), "n_ctx": 512, "max_tokens": 16, "temperature": 0.0,
        "n_threads": 2, "backend": "llama-cpp"})
    a = Assistant(settings, embedder=HashEmbedder())
    record = a.serving.adapters.register(lora_dir, method="lora", base_model=str(tiny_gguf),
                                 dataset_hash="h", spec={"r": 4}, metrics={}, name="clinic")
    yield a, record
    a.close()


def _reply(llm) -> str:
    return "".join(llm.stream_chat(PROMPT, 12, 0.0))


def test_lora_gguf_switches_without_reloading(served):
    from finetune.gguf import to_gguf_lora

    a, record = served
    gguf = to_gguf_lora(record)  # what the training job does when it ends
    assert gguf.stat().st_size > 0 and a.serving.adapter(record.adapter_id).gguf == gguf.name

    base = a.serving.llm_for(None)
    plain = _reply(base)
    adapted_llm = a.serving.llm_for(record.adapter_id)
    assert adapted_llm.base is base  # the same loaded model, with the adapter switched on
    adapted = _reply(adapted_llm)
    assert adapted != plain
    assert _reply(a.serving.llm_for(a.serving.model_ids()[0])) == plain  # back to the base
    assert _reply(a.serving.llm_for("clinic")) == adapted  # by name too, and again identical

    choice = a.serving.use_model(record.adapter_id)
    assert (choice.model_id, choice.method) == (record.adapter_id, "lora")
    assert _reply(a.serving.llm_for(None)) == adapted and a.serving.chat_model() == record.adapter_id
    a.serving.use_model(None)
    assert _reply(a.serving.llm_for(None)) == plain
    assert [m.model_id for m in a.serving.models()] == [a.serving.model_ids()[0], record.adapter_id]
    with pytest.raises(AdapterError, match="No adapter"):
        a.serving.llm_for("missing-adapter")


def test_llama_server_loads_the_lora_and_applies_it_per_request(served, tiny_gguf,
                                                                tmp_path):
    """The default backend: the model server loads the adapter (one restart) and each
    request picks it or not, so the base and the adapter answer side by side."""
    from finetune.gguf import to_gguf_lora

    _, record = served
    gguf = to_gguf_lora(record)
    settings = make_settings(tmp_path, llm={"model": str(tiny_gguf), "n_ctx": 512,
                                            "max_tokens": 16, "temperature": 0.0,
                                            "n_threads": 2, "backend": "llama-server"})
    a = Assistant(settings, embedder=HashEmbedder())
    try:
        record = a.serving.adapters.register(record.path, method="lora", base_model=str(tiny_gguf),
                                     dataset_hash="h", spec={"r": 4}, metrics={},
                                     name="clinic")
        plain = _reply(a.serving.llm_for(None))
        adapted = _reply(a.serving.llm_for(record.adapter_id))
        [loaded] = a.serving._model_server.config.loras
        assert loaded.name == gguf.name
        assert adapted != plain
        assert _reply(a.serving.llm_for(None)) == plain  # per request: the base is untouched
        assert _reply(a.serving.llm_for("clinic")) == adapted
        assert a.serving._model_server.status()["restarts"] == 0  # a reload, not a crash
    finally:
        a.close()


def test_export_merged_safetensors_and_gguf_q8(served, lora_dir, tiny):
    import torch
    from llama_cpp import Llama
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    a, record = served
    merged = a.serving.export_adapter(record.adapter_id, "merged-safetensors")
    config = json.loads((merged / "config.json").read_text())
    assert config["architectures"] == ["Qwen2ForCausalLM"]
    assert "quantization_config" not in config
    assert not [p for p in merged.iterdir() if p.suffix in (".bin", ".pt", ".pth")]
    ids = torch.tensor([[151644, 872, 198, 9707, 151645]])
    with torch.no_grad():
        got = AutoModelForCausalLM.from_pretrained(str(merged))(ids).logits
        peft = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(str(tiny)),
                                         str(lora_dir))
        want = peft(ids).logits
    assert torch.allclose(got, want, atol=1e-4)

    q8 = a.serving.export_adapter(record.adapter_id, "gguf", "Q8_0")
    assert q8.name.endswith("-Q8_0.gguf") and q8.parent == a.paths.data_dir / "exports"
    llm = Llama(model_path=str(q8), n_ctx=256, verbose=False, n_threads=2)
    assert llm.create_completion("Hello", max_tokens=4, temperature=0)["choices"][0]["text"]

    reft_like = a.serving.adapters.register(_fake_adapter(a.paths.data_dir / "r", b"r", "reft"),
                                    method="reft", base_model=str(tiny), dataset_hash="",
                                    spec={}, metrics={})
    with pytest.raises(AdapterError, match="cannot be merged"):
        a.serving.export_adapter(reft_like.adapter_id, "gguf")
    a.serving.delete_adapter(reft_like.adapter_id)


# --- GET /v1/models ---------------------------------------------------------------------
def test_v1_models_lists_adapters(tmp_path):
    from fastapi import FastAPI

    from assistant.api import build_api
    from tests.test_api import client, serve

    a = Assistant(make_settings(tmp_path), llm=ScriptedLLM("ok"), embedder=HashEmbedder())
    record = a.serving.adapters.register(_fake_adapter(tmp_path / "lora"), method="lora",
                                 base_model="qwen2.5-coder-0.5b", dataset_hash="",
                                 spec={}, metrics={}, name="faq")
    app = FastAPI()
    app.include_router(build_api(a))
    with serve(app) as url:
        ids = [m.id for m in client(url).models.list()]
        assert ids == [a.settings.llm.model, record.adapter_id]
        a.serving.delete_adapter(record.adapter_id)
        assert [m.id for m in client(url).models.list()] == [a.settings.llm.model]
    a.close()
