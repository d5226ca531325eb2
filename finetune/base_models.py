"""Hugging Face base models for training.

``hf_base("qwen2.5-coder-0.5b", models_dir, cache_dir)`` dequantizes the installed GGUF
once into ``<cache_dir>/<name>/`` (float32 safetensors + tokenizer; written to a temp
folder, then renamed; ``docent-base.json`` records the GGUF's sha256 so a changed GGUF is
converted again). A local HF folder (config.json + *.safetensors) is accepted as is;
pickled weights (.bin/.pt) and custom code (``auto_map``) are refused.
"""
from __future__ import annotations

import importlib
import importlib.metadata
import json
import logging
import math
import os
import shutil
import struct
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from finetune.errors import FinetuneError
from common.models import DEFAULT_MODELS, resolve_gguf

log = logging.getLogger(__name__)

MARKER = "docent-base.json"
TOKENIZER_MAX_LENGTH = 4096
PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".pkl", ".ckpt")


class BaseModelError(FinetuneError):
    """A base model that cannot be used for training; the message says what to do."""


def hf_base(name_or_path: str, models_dir: Path, cache_dir: Path) -> Path:
    """A local HF folder to train on (see module doc)."""
    path = Path(name_or_path).expanduser()
    if path.is_dir():
        return check_hf_folder(path)
    if name_or_path not in DEFAULT_MODELS and path.suffix.lower() != ".gguf":
        raise BaseModelError(
            f"Base model {name_or_path!r} is neither an installed model "
            f"({', '.join(DEFAULT_MODELS)}), a .gguf file, nor a local Hugging Face folder.")
    gguf = resolve_gguf(name_or_path, models_dir)
    target = cache_dir / (name_or_path if name_or_path in DEFAULT_MODELS else gguf.stem)
    sha = gguf_sha256(gguf, DEFAULT_MODELS.get(name_or_path))
    if _marker_matches(target, sha):
        return target
    return _dequantize(gguf, target, sha)


def check_hf_folder(folder: Path) -> Path:
    config = folder / "config.json"
    if not config.is_file():
        raise BaseModelError(f"{folder} has no config.json: it is not a Hugging Face model folder.")
    if not list(folder.glob("*.safetensors")):
        pickled = [p.name for p in folder.iterdir() if p.suffix in PICKLE_SUFFIXES]
        what = f"only pickled weights ({', '.join(pickled)})" if pickled else "no weights"
        raise BaseModelError(
            f"{folder} has {what}. Docent loads safetensors only (pickles can run code): "
            "convert the weights to .safetensors first.")
    if "auto_map" in json.loads(config.read_text(encoding="utf-8")):
        raise BaseModelError(f"{folder} needs custom model code (auto_map in config.json); "
                             "Docent never runs code shipped with a model.")
    return folder


def gguf_sha256(gguf: Path, packaged=None) -> str:
    """The checked sha256 of a packaged model, or the file's own (hashed once, then read
    from the stamp ``ensure_gguf`` writes)."""
    if packaged is not None:
        return packaged.sha256
    stamp = gguf.with_name(gguf.name + ".verified.json")
    st = gguf.stat()
    if stamp.is_file():
        rec = json.loads(stamp.read_text())
        if rec.get("size") == st.st_size and rec.get("mtime_ns") == st.st_mtime_ns:
            return rec["sha256"]
    from common.hashing import file_sha256

    return file_sha256(gguf)


def _marker_matches(target: Path, sha: str) -> bool:
    marker = target / MARKER
    if not marker.is_file():
        return False
    try:
        return json.loads(marker.read_text()).get("gguf_sha256") == sha
    except ValueError:
        return False


def _dequantize(gguf: Path, target: Path, sha: str) -> Path:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    ensure_gguf_library()
    target.parent.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    log.info("Dequantizing %s into %s (once; about a minute and 4 GB for the 0.5B)", gguf.name, target)
    tmp = Path(tempfile.mkdtemp(dir=target.parent, prefix=f".{target.name}-"))
    try:
        tok = AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
        model = AutoModelForCausalLM.from_pretrained(str(gguf.parent), gguf_file=gguf.name,
                                                     dtype=torch.float32)
        model.hf_quantizer = None
        if hasattr(model.config, "quantization_config"):
            del model.config.quantization_config
        model.config.architectures = [type(model).__name__]
        tok.model_max_length = min(TOKENIZER_MAX_LENGTH,
                                   getattr(model.config, "max_position_embeddings", 2048))
        model.save_pretrained(str(tmp), safe_serialization=True)
        tok.save_pretrained(str(tmp))
        del model
        (tmp / MARKER).write_text(json.dumps({"gguf": gguf.name, "gguf_sha256": sha}))
        if target.exists():
            shutil.rmtree(target)
        tmp.rename(target)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    log.info("Dequantized %s in %.0f s", gguf.name, time.perf_counter() - t0)
    return target


# --- the gguf reader transformers needs ----------------------------------------------
def _bundled_gguf_py() -> Path | None:
    """gguf-py as unpacked by `make convert-tools` (llama.cpp's own copy)."""
    candidates = []
    if os.environ.get("DOCENT_GGUF_PY"):
        candidates.append(Path(os.environ["DOCENT_GGUF_PY"]))
    try:
        from finetune.gguf import convert_tools_dir

        candidates.append(Path(convert_tools_dir()) / "gguf-py")
    except Exception as exc:  # noqa: BLE001 - missing tools are reported below
        log.debug("convert tools not found: %s", exc)
    candidates.append(Path(sys.prefix) / "share" / "llama-cpp-convert" / "gguf-py")
    return next((c for c in candidates if (c / "gguf" / "__init__.py").is_file()), None)


def ensure_gguf_library() -> None:
    """Make ``import gguf`` work for transformers' GGUF loader: the installed package,
    or else llama.cpp's bundled gguf-py (given the version its pyproject states)."""
    try:
        importlib.metadata.version("gguf")
        return
    except importlib.metadata.PackageNotFoundError:
        pass
    folder = _bundled_gguf_py()
    if folder is None:
        raise BaseModelError("Reading a GGUF for training needs the gguf library: run "
                             "`make convert-tools` (or install gguf).")
    if str(folder) not in sys.path:
        sys.path.insert(0, str(folder))
    module = importlib.import_module("gguf")
    if not getattr(module, "__version__", None):
        version = "0.10.0"
        for line in (folder / "pyproject.toml").read_text().splitlines():
            if line.startswith("version"):
                version = line.split("=")[1].strip().strip('"')
                break
        module.__version__ = version


# --- memory and time estimate ------------------------------------------------------------
# What the dequantized folders hold (their GGUFs carry an output matrix of their own, so
# the HF models are untied: 136 M / 233 M more than the published counts).
KNOWN_PARAMS = {"qwen2.5-coder-0.5b": 630_167_424, "qwen2.5-coder-1.5b": 1_777_088_000}
# Measured on 2 CPU cores (STACK notes): LoRA r=8 on q/k/v/o, batch 2, ~60 tokens:
# 0.5B 2.5 s/step and 4.2 GB, 1.5B 7 s/step and 10.9 GB  ->  ~1.4 x fp32 weights + 1 GB,
# ~1.9e11 useful FLOP/s on 2 cores (counting every weight, the output matrix included).
CPU_FLOPS_PER_CORE = 9.6e10
GPU_FLOPS = 2.0e13
# Full fine-tuning of the 0.5B on 2 cores (README, "Measured"): 5.8 s/step against LoRA's
# 3.1 on the same batches (the weight gradients), fused AdamW 0.05 s per 100 M weights,
# peak RSS 11.9 GB against 10.1 GB of weights, gradients and AdamW states.
FULL_COMPUTE_FACTOR = 1.6
FULL_ACTIVATION_FACTOR = 4.0
ADAMW_BYTES_PER_PARAM = 28  # read weight, gradient, two states; write weight, two states
CPU_BANDWIDTH = 5.0e10
GPU_BANDWIDTH = 2.0e12


@dataclass(frozen=True)
class Estimate:
    params: int
    memory_gb: float
    seconds_per_step: float
    fits: bool
    reason: str
    available_gb: float = 0.0
    breakdown: str = ""  # what the memory is made of (full fine-tuning)

    def describe(self) -> str:
        verdict = "fits" if self.fits else "does NOT fit"
        parts = f" = {self.breakdown}" if self.breakdown else ""
        return (f"~{self.params / 1e6:.0f}M parameters; needs ~{self.memory_gb:.1f} GB{parts} "
                f"({self.available_gb:.1f} GB available: {verdict}); ~{self.seconds_per_step:.1f} "
                f"s per step. {self.reason}").strip()


def _base_folder(name_or_path: str, cache_dir: Path) -> Path:
    """A local Hugging Face folder as given, else the folder a GGUF was converted into."""
    folder = Path(name_or_path).expanduser()
    return folder if folder.is_dir() else cache_dir / Path(name_or_path).stem


def count_params(name_or_path: str, cache_dir: Path) -> int:
    """Parameters of a base: known defaults, or the safetensors headers (no weights read)."""
    if name_or_path in KNOWN_PARAMS:
        return KNOWN_PARAMS[name_or_path]
    total = 0
    for f in _base_folder(name_or_path, cache_dir).glob("*.safetensors"):
        with f.open("rb") as fh:
            size = struct.unpack("<Q", fh.read(8))[0]
            header = json.loads(fh.read(size))
        for key, info in header.items():
            if key != "__metadata__":
                total += math.prod(info["shape"])
    if not total:
        raise BaseModelError(f"Cannot size base model {name_or_path!r}: no safetensors found.")
    return total


KNOWN_LAYERS = {"qwen2.5-coder-0.5b": 24, "qwen2.5-coder-1.5b": 28}


def count_layers(name_or_path: str, cache_dir: Path) -> int | None:
    """Transformer blocks of a base: known defaults, or the ``config.json`` of its folder
    (a local one, or the one a GGUF was converted into); None before a GGUF's first job."""
    if name_or_path in KNOWN_LAYERS:
        return KNOWN_LAYERS[name_or_path]
    config = _base_folder(name_or_path, cache_dir) / "config.json"
    try:
        return int(json.loads(config.read_text())["num_hidden_layers"])
    except (OSError, ValueError, KeyError, TypeError):
        return None


def estimate(spec, base: str, cache_dir: Path, mean_tokens: float = 0.0) -> Estimate:
    """Memory and time per optimizer step of ``spec`` on ``base``; ``fits`` is False, with
    the reason, when the free RAM (or GPU memory) is too small. ``mean_tokens``: the
    dataset's mean example length (the time scales with it; default: 256 tokens). For
    full fine-tuning ``breakdown`` names the parts (weights, gradients, AdamW states,
    activations)."""
    params = count_params(base, cache_dir)
    seq = min(getattr(spec, "block_size", 0) or spec.max_length, 256)
    if mean_tokens and not getattr(spec, "block_size", 0):
        seq = min(spec.max_length, max(16.0, mean_tokens))
    full = _is_full(spec)
    memory, breakdown = _full_memory(spec, params, seq) if full else (
        _adapter_memory(spec, params, seq), "")
    needs_dequant = base in KNOWN_PARAMS and not (cache_dir / base / MARKER).is_file()
    if needs_dequant:
        memory = max(memory, params * 8 / 1e9)  # GGUF -> float32 conversion peak
    cuda, available, flops = _free_memory()
    seconds = _step_seconds(spec, params, seq, flops, cuda)
    fits = memory <= available * 0.95
    reason = "" if fits else _refusal(full, params, memory, available, cuda)
    if needs_dequant:
        reason = (reason + " The first job on this base converts it from GGUF (about a "
                  "minute for the 0.5B).").strip()
    return Estimate(params, round(memory, 2), round(seconds, 2), fits, reason,
                    round(available, 2), breakdown)


def _is_full(spec) -> bool:
    from finetune.specs import FullSpec

    return isinstance(spec, FullSpec)


def _free_memory() -> tuple[bool, float, float]:
    """(on a GPU, free GB there or in RAM, useful FLOP/s)."""
    import psutil
    import torch

    if torch.cuda.is_available():
        free, _ = torch.cuda.mem_get_info()
        return True, free / 1e9, GPU_FLOPS
    return (False, psutil.virtual_memory().available / 1e9,
            CPU_FLOPS_PER_CORE * (os.cpu_count() or 1))


def _activations_gb(spec, params: int, seq: float) -> float:
    return spec.micro_batch_size * seq * params * 2e-12


def _adapter_memory(spec, params: int, seq: float) -> float:
    """GB for an adapter on a frozen fp32 base (LoRA, CPT, DPO, ReFT)."""
    factor = 2.3 if getattr(spec, "beta", None) else 1.4  # DPO: chosen + rejected + reference
    return params * 4 * factor / 1e9 + 1.0 + _activations_gb(spec, params, seq)


def _full_memory(spec, params: int, seq: float) -> tuple[float, str]:
    """GB for full fine-tuning, and its parts: fp32 weights, as many gradients, AdamW's
    two states, activations (less with gradient checkpointing) and the runtime.

    >>> from finetune.specs import FullSpec
    >>> _full_memory(FullSpec(micro_batch_size=2), 630_167_424, 86)[1]
    'weights 2.5 + gradients 2.5 + AdamW states 5.0 + activations 0.9 + runtime 1.0 GB'
    """
    weights = params * 4 / 1e9
    activations = _activations_gb(spec, params, seq) * FULL_ACTIVATION_FACTOR
    if spec.gradient_checkpointing:
        activations *= 0.3
    parts = {"weights": weights, "gradients": weights, "AdamW states": 2 * weights,
             "activations": activations, "runtime": 1.0}
    text = " + ".join(f"{name} {gb:.1f}" for name, gb in parts.items()) + " GB"
    return sum(parts.values()), text


def _step_seconds(spec, params: int, seq: float, flops: float, cuda: bool) -> float:
    """Forward and backward (6 FLOP per parameter and token; DPO twice), and for full
    fine-tuning the weight gradients and the AdamW update over every weight."""
    tokens = spec.micro_batch_size * spec.grad_accum * seq
    seconds = 6 * params * tokens / flops * (2.0 if getattr(spec, "beta", None) else 1.0)
    if _is_full(spec):
        seconds *= FULL_COMPUTE_FACTOR
        seconds += params * ADAMW_BYTES_PER_PARAM / (GPU_BANDWIDTH if cuda else CPU_BANDWIDTH)
        if spec.gradient_checkpointing:
            seconds *= 1.3
    return seconds


def _refusal(full: bool, params: int, memory: float, available: float, cuda: bool) -> str:
    where = " on the GPU" if cuda else ""
    if full:
        return (f"Full fine-tuning of ~{params / 1e6:.0f}M parameters needs about "
                f"{memory:.1f} GB (16 bytes per parameter for the weights, their gradients "
                f"and AdamW's two states, plus activations) but only {available:.1f} GB is "
                f"free{where}: train a LoRA adapter instead (about a tenth of that), or choose "
                "a smaller base model" + ("" if cuda else ", or a machine with a GPU") + ".")
    return (f"The job needs about {memory:.1f} GB but only {available:.1f} GB is free{where}: "
            "choose a smaller base model, micro-batch or max length.")
