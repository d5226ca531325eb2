"""Chat models for registered adapters, served by ``assistant.services.serving.Serving``.

* a LoRA adapter (lora, cpt, dpo) runs in llama.cpp: its base GGUF with the adapter's
  GGUF LoRA (converted on first use when the job did not). When the base is the chat
  model, the adapter shares it: ``ServedLLM.with_lora`` has the model server load the
  LoRA once and apply it per request, ``LlamaCppLLM.with_lora`` switches it on the model
  loaded in-process; another base is loaded beside it, in-process.
* a ReFT adapter runs in transformers (``ReftLLM``) on its HF base.
* a full fine-tune is a whole model: its own GGUF (q8_0, converted when the job ends or
  on first use) is loaded in-process with llama.cpp, like another base.

Only one adapter model is kept loaded at a time (memory on small machines): asking
for another releases the previous one. A base given as a Hugging Face folder is
converted once to ``<data_dir>/gguf-bases/`` for llama.cpp.
"""
from __future__ import annotations

import hashlib
import logging
import shutil
import threading
from collections.abc import Callable
from pathlib import Path

from assistant.llm import LLM, LlamaCppLLM, ServedLLM
from common.models import DEFAULT_MODELS, resolve_gguf
from assistant.settings import Settings
from finetune.registry import AdapterError, AdapterRecord, AdapterRegistry

log = logging.getLogger(__name__)

EXPORT_KINDS = ("merged-safetensors", "gguf")


class AdapterServing:
    def __init__(self, settings: Settings, registry: AdapterRegistry,
                 base_llm: Callable[[], LLM]):
        self.settings, self.registry, self._base_llm = settings, registry, base_llm
        self.paths = settings.paths
        self._lock = threading.Lock()
        self._loaded: tuple[str, LLM] | None = None  # (adapter id, its LLM)

    def llm(self, record: AdapterRecord) -> LLM:
        """The chat model of ``record`` (loaded once; the previous adapter is released)."""
        with self._lock:
            if self._loaded and self._loaded[0] == record.adapter_id:
                return self._loaded[1]
            self._loaded = None  # release the previous variant before loading another
            llm = (self._lora_llm(record) if record.is_lora else
                   self._full_llm(record) if record.is_full else self._reft_llm(record))
            self._loaded = (record.adapter_id, llm)
            return llm

    def forget(self, adapter_id: str) -> None:
        with self._lock:
            if self._loaded and self._loaded[0] == adapter_id:
                self._loaded = None

    # --- LoRA in llama.cpp ----------------------------------------------------------
    def _lora_llm(self, record: AdapterRecord) -> LLM:
        lora = record.gguf_path
        if lora is None or not lora.is_file():
            lora = self._convert_lora(record)
        base_gguf = self.base_gguf(record.base_model)
        cfg = self.settings.llm
        chat = self._base_llm() if self._chat_model_is(base_gguf) else None
        if not isinstance(chat, (LlamaCppLLM, ServedLLM)):  # another base: loaded here
            chat = LlamaCppLLM(base_gguf, cfg.n_ctx, cfg.n_threads, cfg.n_gpu_layers,
                               cfg.seed, cfg.repeat_penalty)
        return chat.with_lora(lora, record.adapter_id)

    def _chat_model_is(self, gguf: Path) -> bool:
        cfg = self.settings.llm
        if cfg.backend not in ("llama-cpp", "llama-server"):
            return False
        try:
            return resolve_gguf(cfg.model, self.paths.models_dir).resolve() == gguf.resolve()
        except Exception as exc:  # noqa: BLE001 - a missing chat model only means "no"
            log.debug("chat model not resolvable: %s", exc)
            return False

    def _convert_lora(self, record: AdapterRecord) -> Path:
        from finetune.gguf import base_hf_of, to_gguf_lora

        base_hf = base_hf_of(record.path) or self.base_hf(record.base_model)
        return to_gguf_lora(record, base_hf)

    def base_gguf(self, base_model: str) -> Path:
        """The GGUF of an adapter's base: an installed model, a .gguf, or an HF folder
        converted once (f16) into ``<data_dir>/gguf-bases/``."""
        folder = Path(base_model).expanduser()
        if base_model in DEFAULT_MODELS or folder.suffix.lower() == ".gguf":
            return resolve_gguf(base_model, self.paths.models_dir)
        if not (folder / "config.json").is_file():
            raise AdapterError(f"The adapter's base model {base_model!r} is neither an "
                               "installed model, a .gguf file nor a Hugging Face folder.")
        from finetune.gguf import hf_to_gguf

        digest = hashlib.sha256(str(folder.resolve()).encode()).hexdigest()[:10]
        out = self.paths.data_dir / "gguf-bases" / f"{folder.name}-{digest}.gguf"
        stamp = (folder / "config.json").stat().st_mtime_ns
        if out.is_file() and out.stat().st_mtime_ns >= stamp:
            return out
        return hf_to_gguf(folder, out, "f16")

    def base_hf(self, base_model: str) -> Path:
        """The Hugging Face folder of an adapter's base (dequantized once for a GGUF)."""
        from finetune.base_models import hf_base

        return hf_base(base_model, self.paths.models_dir, self.paths.data_dir / "hf-models")

    # --- a full fine-tune: its own GGUF in llama.cpp ------------------------------------
    def _full_llm(self, record: AdapterRecord) -> LLM:
        from finetune.gguf import to_gguf_full

        gguf = record.gguf_path
        if gguf is None or not gguf.is_file():
            gguf = to_gguf_full(record)
        cfg = self.settings.llm
        llm = LlamaCppLLM(gguf, cfg.n_ctx, cfg.n_threads, cfg.n_gpu_layers, cfg.seed,
                          cfg.repeat_penalty)
        llm.name = record.adapter_id
        return llm

    # --- ReFT in transformers ---------------------------------------------------------
    def _reft_llm(self, record: AdapterRecord) -> LLM:
        from assistant.reft_llm import ReftLLM
        from finetune.reft import read_config

        trained_on = Path(read_config(record.path)["base_model"])
        base = trained_on if (trained_on / "config.json").is_file() else self.base_hf(
            record.base_model)
        return ReftLLM(record.path, base, self.settings.llm.n_ctx, record.adapter_id,
                       self.settings.llm.seed)

    # --- export -------------------------------------------------------------------------
    def export(self, record: AdapterRecord, kind: str, quant: str = "Q4_K_M") -> Path:
        """A merged model (safetensors folder) or a quantized GGUF file under
        ``<data_dir>/exports/``. A full fine-tune is already a whole model: its own
        files are copied, or converted."""
        from finetune.gguf import base_hf_of, export_gguf, export_merged

        if kind not in EXPORT_KINDS:
            raise AdapterError(f"Unknown export {kind!r}; choose {', '.join(EXPORT_KINDS)}.")
        if record.is_full:
            return self._export_full(record, kind, quant)
        if not record.is_lora:
            raise AdapterError(f"{record.adapter_id} is a {record.method} adapter: its "
                               "interventions cannot be merged into weights or GGUF; it is "
                               "served through transformers.")
        exports = self.paths.data_dir / "exports"
        merged = exports / f"{record.adapter_id}-merged"
        if not (merged / "config.json").is_file():
            base_hf = base_hf_of(record.path) or self.base_hf(record.base_model)
            export_merged(record.path, base_hf, merged)
        if kind == "merged-safetensors":
            return merged
        return export_gguf(merged, exports / f"{record.adapter_id}-{quant}.gguf", quant)

    def _export_full(self, record: AdapterRecord, kind: str, quant: str) -> Path:
        from finetune.gguf import export_gguf

        exports = self.paths.data_dir / "exports"
        if kind == "gguf":
            return export_gguf(record.path, exports / f"{record.adapter_id}-{quant}.gguf", quant)
        out = exports / f"{record.adapter_id}-model"
        if out.is_dir():
            return out
        tmp = out.with_name(out.name + ".partial")
        shutil.rmtree(tmp, ignore_errors=True)
        for name in record.files:  # weights, config and tokenizer; not the manifest
            (tmp / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(record.path / name, tmp / name)
        tmp.rename(out)
        return out
