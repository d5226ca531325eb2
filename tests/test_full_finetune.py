"""Full-parameter fine-tuning: the spec, the memory estimate and its refusal, a job on a
tiny random Qwen2 (every weight trains, the whole model is registered, converted to
GGUF, served in chat as its own model and exported), and a few steps of the real 0.5B
through GGUF into llama.cpp (slow)."""
from __future__ import annotations

import json
import os
import time
from pathlib import Path

import numpy as np
import pytest

from assistant.core import Assistant
from assistant.ui import finetune_train_panel as tp
from finetune import base_models
from finetune.jobs import JobError
from finetune.specs import FullSpec, SpecError, spec_from_dict
from tests.conftest import make_settings
from tests.fakes import HashEmbedder, ScriptedLLM
from tests.helpers.tiny_model import tiny_qwen2

PROMPT = [{"role": "user", "content": "When does the Kelmo pharmacy open?"}]
FACTS = [("When does the Kelmo pharmacy open?", "The Kelmo pharmacy opens at 7 am."),
         ("Who runs the Ardent ward?", "Nurse Ilse Varga runs the Ardent ward.")]


@pytest.fixture(scope="module")
def tiny(tmp_path_factory) -> Path:
    return tiny_qwen2(tmp_path_factory.mktemp("tiny-full") / "qwen2-tiny")


def _assistant(tmp_path: Path) -> Assistant:
    settings = make_settings(tmp_path, llm={"n_ctx": 512, "n_threads": 2})
    return Assistant(settings, llm=ScriptedLLM("ok"), embedder=HashEmbedder())


def _dataset(assistant: Assistant, tmp_path: Path, n: int = 40):
    rows = [{"prompt": f"{q} (#{i})", "response": a} for i in range(n) for q, a in [FACTS[i % 2]]]
    src = tmp_path / "qa.jsonl"
    src.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return assistant.datasets.import_file(src)


def _spec(**kw) -> dict:
    return {"max_steps": 2, "micro_batch_size": 2, "max_length": 64, "lr": 1e-3, **kw}


def test_full_spec_defaults_and_bounds():
    spec = spec_from_dict("full", {"gradient_checkpointing": True})
    assert isinstance(spec, FullSpec) and spec.gradient_checkpointing
    assert (spec.lr, spec.epochs, spec.grad_accum, spec.dropout) == (1e-5, 1.0, 1, 0.0)
    with pytest.raises(SpecError, match="weight_decay must be between"):
        spec_from_dict("full", {"weight_decay": 2})
    with pytest.raises(SpecError, match="Unknown field.*for full: r"):
        spec_from_dict("full", {"r": 8})  # no adapter fields


def test_estimate_names_its_parts_and_refuses_what_cannot_fit(tmp_path, tiny, monkeypatch):
    a = _assistant(tmp_path)
    try:
        ds = _dataset(a, tmp_path)
        est = a.training.estimate("full", _spec(), str(tiny), ds.id)
        params = est.params
        assert 9e6 < params < 1.1e7 and est.fits
        assert est.memory_gb >= 16 * params / 1e9 + 1.0  # weights, gradients, AdamW states
        assert "AdamW states" in est.breakdown and "AdamW states" in est.describe()
        lora = a.training.estimate("lora", {}, str(tiny), ds.id)
        assert lora.memory_gb < est.memory_gb and not lora.breakdown
        ckpt = a.training.estimate("full", _spec(gradient_checkpointing=True), str(tiny), ds.id)
        assert ckpt.memory_gb <= est.memory_gb and ckpt.seconds_per_step > est.seconds_per_step
        text = tp.estimate_text(a, "full", tp.spec_values("full", {
            **_spec(), "dropout": 0.0, "weight_decay": 0.0, "gradient_checkpointing": False,
            "r": 8, "layers": "0"}), str(tiny), ds.id)
        assert text.startswith("**Fits**") and "gradients" in text and "AdamW states" in text

        # a machine with 0.5 GB free: refused before anything is queued, saying why
        monkeypatch.setattr(base_models, "_free_memory", lambda: (False, 0.5, 1e11))
        with pytest.raises(JobError, match=r"Full fine-tuning of ~10M parameters needs about "
                                           r"1\.\d GB .* only 0\.5 GB is free: train a LoRA"):
            a.training.start("full", _spec(), str(tiny), ds.id)
        assert a.training.jobs() == []
        assert tp.estimate_text(a, "full", _spec(), str(tiny), ds.id).startswith(
            "**Does not fit**")
    finally:
        a.close()


def _changed_tensors(before: Path, after: Path) -> tuple[int, list[str]]:
    from safetensors.torch import load_file

    old = load_file(str(before / "model.safetensors"))
    new = load_file(str(after / "model.safetensors"))
    assert sorted(old) == sorted(new)
    same = [k for k in old if (old[k].float() - new[k].float()).abs().max() < 1e-4]
    return len(old), same


@pytest.fixture(scope="module")
def full_job(tiny, tmp_path_factory):
    """A full fine-tuning job through the facade (worker subprocess), finished."""
    tmp_path = tmp_path_factory.mktemp("full-job")
    a = _assistant(tmp_path)
    ds = _dataset(a, tmp_path)
    job = a.training.start("full", _spec(save_steps=1), str(tiny), ds.id, name="whole")
    done = a.training.queue.wait(job.id, timeout=300)
    assert done.status == "succeeded", a.training.log(job.id)[-3000:]
    yield a, done
    a.close()


def test_full_job_trains_every_weight_and_registers_the_model(full_job, tiny):
    a, done = full_job
    assert [m["step"] for m in a.training.metrics(done.id)] == [1, 2]
    res = done.result
    assert res["trainable_params"] == res["total_params"] > 9e6  # every weight, no adapter
    assert set(res["evaluation"]["adapter"]) == {"token_f1", "exact"}
    record = a.serving.adapters.get(done.adapter_id)
    assert (record.method, record.name, record.is_full) == ("full", "whole", True)
    assert {"config.json", "model.safetensors", "tokenizer.json"} <= set(record.files)
    assert not any(f.startswith("adapter_") for f in record.files)
    n, same = _changed_tensors(tiny, record.path)
    assert n > 20 and same == []  # every tensor moved, norms and embeddings included
    config = json.loads((record.path / "config.json").read_text())
    assert config["architectures"] == ["Qwen2ForCausalLM"] and config["dtype"] == "float16"
    assert not (done.path / "checkpoints").exists()  # ~7.5 GB for the 0.5B: deleted
    assert not (done.path / "model").exists()  # moved into the registry, not copied
    assert record.gguf == "model-q8_0.gguf" and record.gguf_path.stat().st_size > 0


def test_the_full_model_is_served_in_chat_as_its_own_gguf(full_job, tiny, tmp_path):
    from finetune.gguf import hf_to_gguf

    a, done = full_job
    record = a.serving.adapters.get(done.adapter_id)
    [_, choice] = a.serving.models()
    assert (choice.model_id, choice.method) == (record.adapter_id, "full")
    llm = a.serving.llm_for(record.adapter_id)
    assert llm.name == record.adapter_id and llm.path == record.gguf_path
    assert "".join(llm.stream_chat(PROMPT, 8, 0.0))  # a random tiny model: some text
    base_gguf = hf_to_gguf(tiny, tmp_path / "tiny.gguf", "q8_0")
    assert not np.allclose(_last_logits(llm.path), _last_logits(base_gguf), atol=1e-3)
    assert a.serving.llm_for("whole") is llm  # kept loaded, found by name too
    assert a.serving.llm_for(None).name == "scripted"  # the base is untouched


def _last_logits(gguf: Path):
    """llama.cpp's next-token logits after a fixed prompt (the trained weights show)."""
    from llama_cpp import Llama

    llm = Llama(model_path=str(gguf), n_ctx=64, n_threads=2, verbose=False, logits_all=True)
    llm.eval(llm.tokenize(b"When does the pharmacy open?"))
    return np.array(llm.scores[llm.n_tokens - 1])


def test_the_full_model_exports_as_safetensors_and_gguf(full_job):
    from transformers import AutoModelForCausalLM

    a, done = full_job
    record = a.serving.adapters.get(done.adapter_id)
    folder = a.serving.export_adapter(record.adapter_id, "merged-safetensors")
    assert sorted(str(p.relative_to(folder)) for p in folder.rglob("*") if p.is_file()) == \
        sorted(record.files)
    assert AutoModelForCausalLM.from_pretrained(str(folder)).num_parameters() > 9e6
    q8 = a.serving.export_adapter(record.adapter_id, "gguf", "Q8_0")
    assert q8.name == f"{record.adapter_id}-Q8_0.gguf" and q8.stat().st_size > 0


@pytest.mark.slow
def test_a_few_full_steps_on_the_real_05b_into_llama_cpp(tmp_path):
    """The real 0.5B (dequantized once into ~/.cache/docent-test): two full steps, the
    16-bit folder, its q8_0 GGUF, and a reply from llama.cpp."""
    from llama_cpp import Llama

    from finetune.base_models import hf_base
    from finetune.data import Example
    from finetune.gguf import to_gguf_full
    from finetune.train import train_full
    from tests.conftest import shared_models_dir

    cache = Path(os.environ.get("DOCENT_TEST_CACHE", Path.home() / ".cache" / "docent-test"))
    base = hf_base("qwen2.5-coder-0.5b", shared_models_dir(), cache / "hf-models")
    examples = [Example(messages=(("user", q), ("assistant", a))) for q, a in FACTS * 2]
    result = train_full(FullSpec(max_steps=2, micro_batch_size=2, max_length=64,
                                 save_steps=100), base, examples, tmp_path)
    assert result.trainable_params == result.total_params == 630_167_424  # untied output
    size = (result.adapter_dir / "model.safetensors").stat().st_size
    assert 1.2e9 < size < 1.3e9  # 16-bit
    t0 = time.perf_counter()
    gguf = to_gguf_full(result.adapter_dir)
    converted = time.perf_counter() - t0
    assert gguf.name == "model-q8_0.gguf" and 0.6e9 < gguf.stat().st_size < 0.75e9
    llm = Llama(model_path=str(gguf), n_ctx=256, n_threads=2, verbose=False)
    reply = llm.create_chat_completion(PROMPT, max_tokens=8, temperature=0)
    assert reply["choices"][0]["message"]["content"].strip()
    print(f"\n0.5B full: {result.seconds_per_step:.2f} s/step, q8_0 GGUF in {converted:.1f} s")
