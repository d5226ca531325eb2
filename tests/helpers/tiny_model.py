"""A tiny random Qwen2 causal LM with the REAL Qwen2.5 tokenizer, for fast training tests.

    folder = tiny_qwen2(tmp_path / "tiny")   # config.json + model.safetensors + tokenizer files
    AutoModelForCausalLM.from_pretrained(folder)  # hidden 64, 2 layers, 4 heads, 2 kv heads

The tokenizer is read once from the 0.5B GGUF (~11 s) and cached as an HF tokenizer under
~/.cache/docent-test/qwen-tokenizer (outside the source tree), so later calls take < 1 s.
"""
from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

TOKENIZER_GGUF = "qwen2.5-coder-0.5b-instruct-q4_k_m.gguf"
CACHE_ROOT = Path(os.environ.get("DOCENT_TEST_CACHE", Path.home() / ".cache" / "docent-test"))


def _models_dir() -> Path:
    from tests.conftest import shared_models_dir

    return shared_models_dir()


def qwen_tokenizer_dir() -> Path:
    """A folder holding the real Qwen2.5 tokenizer in HF format (built once, then cached)."""
    target = CACHE_ROOT / "qwen-tokenizer"
    if (target / "tokenizer_config.json").exists():
        return target
    from transformers import AutoTokenizer

    from finetune.base_models import ensure_gguf_library

    ensure_gguf_library()
    tok = AutoTokenizer.from_pretrained(str(_models_dir()), gguf_file=TOKENIZER_GGUF)
    tok.model_max_length = 2048
    CACHE_ROOT.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=CACHE_ROOT, prefix=".tok-"))
    tok.save_pretrained(str(tmp))
    try:
        tmp.rename(target)
    except OSError:  # another process won the race
        shutil.rmtree(tmp, ignore_errors=True)
    return target


def tiny_qwen2(folder: Path, *, seed: int = 0) -> Path:
    """Write a tiny random Qwen2ForCausalLM (safetensors) + the real tokenizer into folder."""
    import torch
    from transformers import AutoTokenizer, Qwen2Config, Qwen2ForCausalLM

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    tok = AutoTokenizer.from_pretrained(str(qwen_tokenizer_dir()))
    config = Qwen2Config(
        vocab_size=len(tok), hidden_size=64, intermediate_size=128, num_hidden_layers=2,
        num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=2048,
        tie_word_embeddings=True, bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id,
        pad_token_id=tok.pad_token_id,
    )
    config.architectures = ["Qwen2ForCausalLM"]
    torch.manual_seed(seed)
    model = Qwen2ForCausalLM(config).to(torch.float32)
    model.save_pretrained(str(folder), safe_serialization=True)
    tok.save_pretrained(str(folder))
    return folder
