"""LoRA adapters and merged models to GGUF, for the llama-cpp chat backend.

llama.cpp's own converters do the work (``convert_lora_to_gguf.py``,
``convert_hf_to_gguf.py`` and their ``gguf-py``/``conversion`` packages, MIT). They ship
only inside the llama-cpp-python sdist; ``make convert-tools`` unpacks them into
``.venv/share/llama-cpp-convert/`` (never into the source tree). They run in a
subprocess with that folder's ``gguf-py`` first on ``PYTHONPATH``.

    to_gguf_lora(adapter_dir, base_hf_dir, out)   # peft LoRA -> GGUF LoRA (f16), ~3-9 s
    to_gguf_full(model_dir)                       # a fully fine-tuned model -> GGUF q8_0
    export_merged(adapter_dir, base_hf_dir, out)  # peft merge_and_unload -> safetensors
    export_gguf(merged_dir, out, "Q4_K_M")        # -> GGUF f16 -> llama.cpp quantize
"""
from __future__ import annotations

import json
import logging
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from finetune.errors import FinetuneError

log = logging.getLogger(__name__)

TOOLS_ENV = "DOCENT_CONVERT_TOOLS"
QUANTS = ("Q4_K_M", "Q5_K_M", "Q8_0")
LORA_GGUF = "adapter-f16.gguf"
FULL_GGUF_TYPE = "q8_0"  # a full fine-tune's served GGUF: half of f16, close to it in quality
CONVERT_TIMEOUT_S = 3600


class GGUFError(FinetuneError):
    """A conversion to GGUF that cannot run or failed; the message says why."""


def convert_tools_dir(configured: Path | str | None = None) -> Path:
    """The folder holding llama.cpp's converters: ``configured``, else ``$DOCENT_CONVERT_TOOLS``,
    else ``<venv>/share/llama-cpp-convert``."""
    candidates = [Path(p) for p in (configured, os.environ.get(TOOLS_ENV)) if p]
    candidates.append(Path(sys.prefix) / "share" / "llama-cpp-convert")
    for folder in candidates:
        if (folder / "convert_lora_to_gguf.py").is_file() and (folder / "gguf-py").is_dir():
            return folder
    raise GGUFError("llama.cpp's conversion scripts are not installed (looked in "
                    f"{', '.join(str(c) for c in candidates)}): run `make convert-tools`.")


def _run_script(script: str, args: list[str], tools: Path | None = None) -> float:
    """Run one converter; seconds taken. Its output tail is in the error when it fails."""
    tools = tools or convert_tools_dir()
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(
        [str(tools / "gguf-py"), str(tools), os.environ.get("PYTHONPATH", "")]),
           "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "NO_LOCAL_GGUF": "1"}
    t0 = time.perf_counter()
    try:
        proc = subprocess.run([sys.executable, str(tools / script), *args], env=env, check=False,
                              capture_output=True, text=True, timeout=CONVERT_TIMEOUT_S)
    except subprocess.TimeoutExpired as exc:
        raise GGUFError(f"{script} took longer than {CONVERT_TIMEOUT_S} s.") from exc
    if proc.returncode != 0:
        tail = (proc.stderr or proc.stdout or "").strip()[-1500:]
        raise GGUFError(f"{script} failed (exit {proc.returncode}):\n{tail}")
    return time.perf_counter() - t0


def base_hf_of(adapter_dir: Path) -> Path | None:
    """The base model folder a peft adapter was trained on, when it still exists."""
    try:
        cfg = json.loads((Path(adapter_dir) / "adapter_config.json").read_text())
    except (OSError, ValueError):
        return None
    base = Path(cfg.get("base_model_name_or_path") or "")
    return base if str(base) and (base / "config.json").is_file() else None


# --- LoRA -> GGUF LoRA ----------------------------------------------------------------
def to_gguf_lora(adapter, base_hf_dir: Path | None = None, out_path: Path | None = None
                 ) -> Path:
    """Convert a peft LoRA folder to a GGUF LoRA (f16) that llama.cpp applies to the base.

    ``adapter``: the adapter folder, or a registered ``AdapterRecord``; with a record the
    file goes into its folder and its manifest records the file, or the error (re-raised).
    ``base_hf_dir``: the HF base folder (default: the one in adapter_config.json)."""
    record, adapter_dir = _record_and_folder(adapter)
    out_path = Path(out_path) if out_path else adapter_dir / LORA_GGUF
    return _recorded(record, lambda: _convert_lora(adapter_dir, base_hf_dir, out_path))


def to_gguf_full(model, out_path: Path | None = None, outtype: str = FULL_GGUF_TYPE) -> Path:
    """A fully fine-tuned model folder (config.json, safetensors, tokenizer) to one GGUF
    model that llama.cpp serves on its own, with the converter of merged exports.

    ``model``: the folder, or a registered ``AdapterRecord`` of method "full" (then the
    file goes into its folder, ``model-q8_0.gguf``, and its manifest records it or the
    error, re-raised)."""
    record, folder = _record_and_folder(model)
    out_path = Path(out_path) if out_path else folder / f"model-{outtype}.gguf"
    return _recorded(record, lambda: hf_to_gguf(folder, out_path, outtype))


def _record_and_folder(adapter):
    from finetune.registry import AdapterRecord

    record = adapter if isinstance(adapter, AdapterRecord) else None
    return record, (record.path if record else Path(adapter))


def _recorded(record, convert) -> Path:
    """Run ``convert``; with a record, note in its manifest the file made inside its
    folder, or why the conversion failed."""
    from finetune.registry import AdapterRegistry

    try:
        path = convert()
    except GGUFError as exc:
        if record:
            AdapterRegistry(record.path.parent).set_gguf(record.adapter_id, None, str(exc))
        raise
    if record and path.parent.resolve() == record.path.resolve():
        AdapterRegistry(record.path.parent).set_gguf(record.adapter_id, path)
    return path


def _convert_lora(adapter_dir: Path, base_hf_dir: Path | None, out_path: Path) -> Path:
    base = Path(base_hf_dir) if base_hf_dir else base_hf_of(adapter_dir)
    if base is None or not (base / "config.json").is_file():
        raise GGUFError(f"The base model folder of {adapter_dir} is unknown or gone; "
                        "pass the Hugging Face folder it was trained on.")
    if not (adapter_dir / "adapter_model.safetensors").is_file():
        raise GGUFError(f"{adapter_dir} has no adapter_model.safetensors (a peft LoRA).")
    out_path.parent.mkdir(parents=True, exist_ok=True)
    tmp = out_path.with_name(out_path.name + ".partial")
    secs = _run_script("convert_lora_to_gguf.py", [
        str(adapter_dir), "--base", str(base), "--outfile", str(tmp), "--outtype", "f16"])
    tmp.replace(out_path)
    log.info("LoRA %s -> %s in %.1f s", adapter_dir.name, out_path.name, secs)
    return out_path


# --- merged model export --------------------------------------------------------------
def export_merged(adapter_dir: Path, base_hf_dir: Path | None, out_dir: Path) -> Path:
    """Base + LoRA merged into plain weights: ``out_dir`` with config.json (architectures
    set, no quantization_config), model.safetensors and the tokenizer."""
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    base = Path(base_hf_dir) if base_hf_dir else base_hf_of(Path(adapter_dir))
    if base is None:
        raise GGUFError(f"The base model folder of {adapter_dir} is unknown or gone.")
    t0 = time.perf_counter()
    model = AutoModelForCausalLM.from_pretrained(str(base), dtype=torch.float32,
                                                 trust_remote_code=False)
    merged = PeftModel.from_pretrained(model, str(adapter_dir)).merge_and_unload()
    merged.hf_quantizer = None
    if hasattr(merged.config, "quantization_config"):
        del merged.config.quantization_config
    merged.config.architectures = [type(merged).__name__]
    out_dir = Path(out_dir)
    tmp = Path(tempfile.mkdtemp(dir=_parent(out_dir), prefix=".merge-"))
    try:
        merged.save_pretrained(str(tmp), safe_serialization=True)
        AutoTokenizer.from_pretrained(str(base)).save_pretrained(str(tmp))
        shutil.rmtree(out_dir, ignore_errors=True)
        tmp.rename(out_dir)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    log.info("Merged %s into %s in %.1f s", adapter_dir, out_dir, time.perf_counter() - t0)
    return out_dir


def hf_to_gguf(hf_dir: Path, out_path: Path, outtype: str = "f16") -> Path:
    """A Hugging Face model folder to one GGUF file (``outtype`` f16, bf16, f32, q8_0)."""
    out_path = Path(out_path)
    _parent(out_path)
    tmp = out_path.with_name(out_path.name + ".partial")
    secs = _run_script("convert_hf_to_gguf.py",
                       [str(hf_dir), "--outfile", str(tmp), "--outtype", outtype])
    tmp.replace(out_path)
    log.info("%s -> %s (%s) in %.1f s", hf_dir, out_path.name, outtype, secs)
    return out_path


def export_gguf(merged_dir: Path, out_path: Path, quant: str = "Q4_K_M") -> Path:
    """A merged HF folder to a quantized GGUF (Q4_K_M, Q5_K_M or Q8_0)."""
    if quant not in QUANTS:
        raise GGUFError(f"Unknown quantization {quant!r}; choose {', '.join(QUANTS)}.")
    out_path = Path(out_path)
    f16 = out_path.with_name(out_path.stem + ".f16.gguf")
    try:
        hf_to_gguf(merged_dir, f16, "f16")
        quantize(f16, out_path, quant)
    finally:
        f16.unlink(missing_ok=True)
    return out_path


def quantize(src: Path, dst: Path, quant: str) -> Path:
    """llama.cpp's quantizer (through llama-cpp-python), written atomically."""
    import llama_cpp

    params = llama_cpp.llama_model_quantize_default_params()
    params.ftype = getattr(llama_cpp, f"LLAMA_FTYPE_MOSTLY_{quant}")
    params.nthread = 0
    tmp = Path(dst).with_name(Path(dst).name + ".partial")
    t0 = time.perf_counter()
    rc = llama_cpp.llama_model_quantize(str(src).encode(), str(tmp).encode(),
                                        llama_cpp.byref(params))
    if rc != 0 or not tmp.is_file():
        tmp.unlink(missing_ok=True)
        raise GGUFError(f"Quantizing {src.name} to {quant} failed (code {rc}).")
    tmp.replace(dst)
    log.info("Quantized %s -> %s (%s) in %.1f s", src.name, Path(dst).name, quant,
             time.perf_counter() - t0)
    return Path(dst)


def _parent(path: Path) -> Path:
    parent = Path(path).parent
    parent.mkdir(parents=True, exist_ok=True)
    return parent
