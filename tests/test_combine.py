"""Combining LoRA adapters (finetune/combine.py): the weighted merge on a tiny real Qwen2
(tests/helpers/tiny_model.py) with small peft LoRAs made here, the refusals, the record
through the facade, the CLI and the Adapters panel, and several adapters served side by
side by one llama-server, each request choosing its own."""
from __future__ import annotations

import argparse
import math
from pathlib import Path

import pytest

from assistant.core import Assistant
from assistant.ui import adapters_panel as ap
from finetune.combine import CombinePlan, merge_into, plan_combination
from finetune.registry import AdapterError, AdapterRegistry
from tests.conftest import make_settings
from tests.fakes import HashEmbedder, ScriptedLLM
from tests.helpers.tiny_model import tiny_qwen2

Q0 = "base_model.model.model.layers.0.self_attn.{}.lora_{}.weight"


# --- fixtures -------------------------------------------------------------------------
@pytest.fixture(scope="module")
def tiny(tmp_path_factory) -> Path:
    return tiny_qwen2(tmp_path_factory.mktemp("tiny") / "qwen2-tiny")


def _make_lora(tiny: Path, out: Path, r: int, alpha: int, targets: list[str], seed: int
               ) -> Path:
    """A peft LoRA with random A and B (as after training), saved as safetensors."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    model = get_peft_model(AutoModelForCausalLM.from_pretrained(str(tiny)),
                           LoraConfig(r=r, lora_alpha=alpha, target_modules=targets))
    gen = torch.Generator().manual_seed(seed)
    for name, weight in model.named_parameters():
        if "lora_" in name:
            weight.data = torch.randn(weight.shape, generator=gen) * 0.5
    model.save_pretrained(str(out))
    return out


@pytest.fixture(scope="module")
def loras(tiny, tmp_path_factory) -> dict[str, Path]:
    """a: r 4 on q/v (scale 2); b: r 4 on q/v (scale 1); c: r 2 on q/o (scale 1)."""
    root = tmp_path_factory.mktemp("loras")
    return {"a": _make_lora(tiny, root / "a", 4, 8, ["q_proj", "v_proj"], 1),
            "b": _make_lora(tiny, root / "b", 4, 4, ["q_proj", "v_proj"], 2),
            "c": _make_lora(tiny, root / "c", 2, 2, ["q_proj", "o_proj"], 3)}


@pytest.fixture
def registry(tmp_path, tiny, loras) -> AdapterRegistry:
    reg = AdapterRegistry(tmp_path / "adapters")
    for key, folder in loras.items():
        reg.register(folder, method="cpt" if key == "c" else "lora", base_model=str(tiny),
                     dataset_hash=f"d-{key}", spec={}, metrics={}, name=key)
    return reg


def _tensors(folder: Path) -> dict:
    from safetensors.torch import load_file

    return load_file(str(folder / "adapter_model.safetensors"))


def _delta(t: dict, module: str, scale: float):
    return scale * t[Q0.format(module, "B")] @ t[Q0.format(module, "A")]


def _merge(registry, tiny, tmp_path, refs, weights, combination):
    plan = plan_combination(registry, refs, weights, combination)
    out = tmp_path / f"merged-{combination}"
    out.mkdir(parents=True)
    rank, targets = merge_into(plan, tiny, out)
    return out, rank, targets


# --- the merge ------------------------------------------------------------------------
def test_cat_adds_the_weighted_deltas_exactly(registry, tiny, loras, tmp_path):
    import torch

    out, rank, targets = _merge(registry, tiny, tmp_path, ["a", "c"], [0.7, 0.3], "cat")
    assert (rank, targets) == (6, ["o_proj", "q_proj", "v_proj"])  # ranks add up
    assert sorted(p.name for p in out.iterdir()) == ["adapter_config.json",
                                                     "adapter_model.safetensors"]
    got, a, c = _tensors(out), _tensors(loras["a"]), _tensors(loras["c"])
    # the new adapter's scale is alpha / r = 6 / 6 = 1
    want_q = 0.7 * _delta(a, "q_proj", 2.0) + 0.3 * _delta(c, "q_proj", 1.0)
    assert torch.allclose(_delta(got, "q_proj", 1.0), want_q, atol=1e-5)
    assert torch.allclose(_delta(got, "v_proj", 1.0), 0.7 * _delta(a, "v_proj", 2.0), atol=1e-5)
    assert torch.allclose(_delta(got, "o_proj", 1.0), 0.3 * _delta(c, "o_proj", 1.0), atol=1e-5)


def test_linear_weights_each_lora_pair(registry, tiny, loras, tmp_path):
    import torch

    out, rank, _ = _merge(registry, tiny, tmp_path, ["a", "b"], [0.7, 0.3], "linear")
    assert rank == 4
    got, a, b = _tensors(out), _tensors(loras["a"]), _tensors(loras["b"])
    ka, kb = math.sqrt(0.7 * 2.0), math.sqrt(0.3 * 1.0)  # sqrt(weight * alpha / r)
    for part in ("A", "B"):
        key = Q0.format("q_proj", part)
        assert torch.allclose(got[key], ka * a[key] + kb * b[key], atol=1e-6)
    with pytest.raises(AdapterError, match="peft cannot combine a .* same r value"):
        _merge(registry, tiny, tmp_path / "x", ["a", "c"], None, "linear")


def test_svd_keeps_the_largest_rank_and_is_exact_within_it(registry, tiny, loras, tmp_path):
    import torch

    out, rank, _ = _merge(registry, tiny, tmp_path, ["a", "b"], [1.0, 0.0], "svd")
    assert rank == 4  # a's delta has rank 4: the SVD reproduces it
    got, a = _tensors(out), _tensors(loras["a"])
    assert torch.allclose(_delta(got, "q_proj", 1.0), _delta(a, "q_proj", 2.0), atol=1e-4)


# --- refusals -------------------------------------------------------------------------
def _fake(folder: Path, config: str = "adapter_config.json", text: str = "{}") -> Path:
    folder.mkdir(parents=True)
    (folder / config).write_text(text)
    (folder / "adapter_model.safetensors").write_bytes(folder.name.encode())
    return folder


def test_refusals_say_why(registry, tmp_path):
    reft = registry.register(_fake(tmp_path / "r", "reft_config.json"), method="reft",
                             base_model=registry.find("a").base_model,
                             dataset_hash="", spec={}, metrics={}, name="reft one")
    other = registry.register(_fake(tmp_path / "o"), method="lora", base_model="elsewhere",
                              dataset_hash="", spec={}, metrics={}, name="other base")
    dora = registry.register(_fake(tmp_path / "d", text='{"use_dora": true}'), method="lora",
                             base_model=registry.find("a").base_model, dataset_hash="",
                             spec={}, metrics={}, name="dora")
    cases = [
        (["a"], None, "at least two LoRA adapters; got 1"),
        (["a", "nope"], None, "No adapter 'nope'; registered adapters:"),
        (["a", "a"], None, "named twice"),
        (["a", reft.adapter_id], None, "reft adapter, not LoRA weights: only LoRA adapters"),
        (["a", other.adapter_id], None, "same base model.*elsewhere"),
        (["a", dora.name], None, "uses DoRA"),
        (["a", "b"], [0.5], "1 weights for 2 adapters"),
        (["a", "b"], [0.5, float("nan")], "finite"),
        (["a", "b"], [1.0, float("inf")], "finite"),
        (["a", "b"], [0.0, 0.0], "non-zero"),
    ]
    for refs, weights, message in cases:
        with pytest.raises(AdapterError, match=message):
            plan_combination(registry, refs, weights)
    with pytest.raises(AdapterError, match="An adapter named 'b' exists"):
        plan_combination(registry, ["a", "c"], name="b")
    with pytest.raises(AdapterError, match="Unknown combination 'ties'"):
        plan_combination(registry, ["a", "b"], combination="ties")
    plan = plan_combination(registry, ["a", "b", "c"])
    assert isinstance(plan, CombinePlan) and plan.weights == (1 / 3,) * 3


# --- through the facade, the CLI and the page -------------------------------------------
@pytest.fixture
def docent(tmp_path, tiny, loras):
    a = Assistant(make_settings(tmp_path), llm=ScriptedLLM("ok"), embedder=HashEmbedder())
    for key in ("a", "b"):
        a.serving.adapters.register(loras[key], method="lora", base_model=str(tiny),
                                    dataset_hash=f"d-{key}", spec={}, metrics={}, name=key)
    yield a
    a.close()


def test_combined_adapter_is_registered_converted_and_listed(docent):
    """One real GGUF conversion (a few seconds)."""
    ids = [docent.serving.adapter(n).adapter_id for n in ("a", "b")]
    record = docent.serving.combine_adapters(["a", "b"], [0.7, 0.3], "mix")
    assert record.method == "lora" and record.name == "mix"
    assert record.spec == {"combined_from": ids, "weights": [0.7, 0.3],
                           "combination_type": "cat", "r": 8,
                           "target_modules": ["q_proj", "v_proj"]}
    assert record.dataset_hash == "d-a+d-b" and "not evaluated" in record.metrics["eval_note"]
    assert record.gguf and record.gguf_path.stat().st_size > 0, record.gguf_error
    again = docent.serving.adapters.get(record.adapter_id)  # the manifest round trip
    assert again == record and again.to_json() == record.to_json()
    assert record.adapter_id in docent.serving.model_ids()  # chat menu and /v1/models
    choice = next(m for m in docent.serving.models() if m.model_id == record.adapter_id)
    assert choice.method == "lora" and choice.label.startswith("mix (lora on ")
    assert "combined from a (0.7) + b (0.3), peft cat" in ap.adapter_metrics(
        docent, record.adapter_id)
    with pytest.raises(AdapterError, match="already registered"):
        docent.serving.combine_adapters(["a", "b"], [0.7, 0.3], "mix again")


def _cli(docent, capsys, *argv) -> str:
    from assistant.cli_finetune import cmd_finetune, finetune_parser

    parser = argparse.ArgumentParser()
    finetune_parser(parser.add_subparsers(dest="command"))
    assert cmd_finetune(docent, parser.parse_args(["finetune", "adapters", *argv])) == 0
    return capsys.readouterr().out


def test_cli_and_panel_combine(docent, capsys, monkeypatch):
    import finetune.combine

    monkeypatch.setattr(finetune.combine, "_with_gguf",  # the conversion is tested above
                        lambda record, base, registry: registry.get(record.adapter_id))
    out = _cli(docent, capsys, "combine", "a", "b", "--weights", "0.7", "0.3", "--name", "cli",
               "--combination", "linear")
    assert "('cli'): linear of " in out and ", rank 4, no GGUF" in out
    assert "combined from" in _cli(docent, capsys, "list")

    assert ap.combine_adapters(docent, ["a"], "", "x").startswith(
        "⚠️ Not combined: Combining needs at least two")
    assert "weights must be numbers" in ap.combine_adapters(docent, ["a", "b"], "0.7 x", "y")
    message = ap.combine_adapters(docent, ["a", "b"], "0.5, 0.5", "page")
    assert "into **page**" in message and "(cat, rank 8)" in message
    shown = ap.refresh(docent, None, None, None)
    names = sorted(label.split(" (")[0] for label, _ in shown[4].choices)  # combine picker
    assert names == ["a", "b", "cli", "page"]
    assert sorted(label.split(" (")[0] for label, _ in shown[3].choices[1:]) == names  # chat


# --- several adapters served at once -----------------------------------------------------
@pytest.mark.slow
def test_one_llama_server_serves_two_adapters_chosen_per_request(tiny, loras, tmp_path):
    """Two LoRAs on the chat model's base: the model server loads both, then each API
    request (``model`` = adapter id) applies its own, with no further restart."""
    from fastapi import FastAPI

    from assistant.api import build_api
    from finetune.gguf import hf_to_gguf
    from tests.test_api import client, serve

    gguf = hf_to_gguf(tiny, tmp_path / "tiny-f16.gguf", "f16")
    settings = make_settings(tmp_path, llm={"model": str(gguf), "n_ctx": 512, "max_tokens": 16,
                                            "temperature": 0.0, "n_threads": 2,
                                            "backend": "llama-server"})
    a = Assistant(settings, embedder=HashEmbedder())
    app = FastAPI()
    app.include_router(build_api(a))
    try:
        ids = [a.serving.adapters.register(loras[k], method="lora", base_model=str(gguf),
                                           dataset_hash="", spec={}, metrics={},
                                           name=k).adapter_id for k in ("a", "b")]
        ids.append(a.serving.combine_adapters(ids, None, "mix").adapter_id)
        with serve(app) as url:
            def ask(model: str) -> str:
                r = client(url).chat.completions.create(
                    model=model, messages=[{"role": "user", "content": "Visiting hours?"}],
                    temperature=0, max_tokens=12, extra_body={"rag": False})
                return r.choices[0].message.content

            models = [a.serving.model_ids()[0], *ids]
            first = {m: ask(m) for m in models}  # each new adapter: one reload
            pid = a.serving.status()["pid"]
            assert len(a.serving._model_server.config.loras) == 3
            assert len(set(first.values())) == 4, first  # four different models
            for m in [*reversed(models), *models]:  # interleaved: same answers, same server
                assert ask(m) == first[m]
            assert a.serving.status()["pid"] == pid and a.serving.status()["restarts"] == 0
    finally:
        a.close()
