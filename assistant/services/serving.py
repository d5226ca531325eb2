"""The chat models: the base model (in process, in a supervised ``llama-server`` child,
or on a remote OpenAI-compatible server) and the trained adapters served on it."""
from __future__ import annotations

import functools
import logging
import os
import threading
import time
from pathlib import Path

from assistant.adapter_serving import AdapterServing
from assistant.llm import LLM, LlamaCppLLM, OpenAICompatLLM, ServedLLM
from assistant.model_server import ModelServer, ServerConfig
from assistant.settings import Settings
from assistant.vocab import cjk_token_ids
from common.errors import ModelNotFound
from common.models import resolve_gguf
from finetune.registry import AdapterRecord, AdapterRegistry, ModelChoice

log = logging.getLogger(__name__)


class Serving:
    """``llm`` may be injected (tests use scripted fakes); otherwise it is built from
    ``settings.llm`` on first use or ``warm_up()``. Adapters (finetune.registry) are chat
    models too: ``models()`` for the chat menu, ``llm_for(id)`` for one reply,
    ``use_model(id)`` to change the default at run time, without restarting."""

    def __init__(self, settings: Settings, adapters: AdapterRegistry, llm: LLM | None = None):
        self.settings, self.paths = settings, settings.paths
        self.adapters = adapters
        self._llm = llm
        self._llm_lock = threading.Lock()
        self._model_server: ModelServer | None = None
        self._adapters = AdapterServing(settings, adapters, lambda: self.llm)
        self._chat_model: str | None = None  # None: the base

    # --- the base model --------------------------------------------------------
    @property
    def llm(self) -> LLM:
        with self._llm_lock:
            if self._llm is None and self.settings.llm.backend == "openai":
                self._llm = _remote_llm(self.settings)
            if self._llm is None and self.settings.llm.backend == "llama-server":
                self._llm = self._served_llm()
            if self._llm is None:
                cfg = self.settings.llm
                path = resolve_gguf(cfg.model, self.paths.models_dir)
                t0 = time.perf_counter()
                self._llm = LlamaCppLLM(path, cfg.n_ctx, cfg.n_threads, cfg.n_gpu_layers,
                                        cfg.seed, cfg.repeat_penalty)
                log.info("Loaded %s in %.1f s", path.name, time.perf_counter() - t0)
            return self._llm

    def warm_up(self) -> None:
        """Load the chat model now rather than on the first question."""
        _ = self.llm
        if self._model_server is not None:
            self._model_server.wait_ready()

    def status(self) -> dict:
        """The chat model's process: ``{"pid": int | None, "state": "ready" | "starting" |
        "down", ...}``. In-process and remote models are "ready" once built."""
        if self._model_server is not None:
            return self._model_server.status()
        built = self._llm is not None
        pid = os.getpid() if isinstance(self._llm, LlamaCppLLM) else None
        return {"pid": pid, "state": "ready" if built else "down", "restarts": 0,
                "last_exit": "", "model": getattr(self._llm, "name", self.settings.llm.model)}

    def close(self) -> None:
        if self._model_server is not None:
            self._model_server.stop()

    # --- choosing a model --------------------------------------------------------
    def models(self) -> list[ModelChoice]:
        """The base chat model, then every registered adapter (id, label, method, metrics)."""
        base = self._base_model_id()
        return [ModelChoice(base, f"{base} (base)", "base", base)] + [
            ModelChoice.of(r) for r in self.adapters.list()]

    def model_ids(self) -> list[str]:
        """Ids a caller may ask for: the base chat model first (the configured name
        ``llm.model``, or the remote model with backend 'openai'), then each adapter."""
        return [self._base_model_id()] + [r.adapter_id for r in self.adapters.list()]

    def llm_for(self, model_id: str | None = None) -> LLM:
        """The chat model for ``model_id``: None -> the one chosen with ``use_model``
        (default: the base); the base id -> ``llm``; an adapter id or name -> the base
        with that adapter (LoRA in llama.cpp, ReFT in transformers), or a fully
        fine-tuned model (its own GGUF in llama.cpp). Unknown id:
        ``AdapterError`` listing the known ones."""
        model_id = model_id or self._chat_model
        if not model_id or model_id == self._base_model_id():
            return self.llm
        return self._adapters.llm(self.adapters.find(model_id))

    def use_model(self, model_id: str | None) -> ModelChoice:
        """Make ``model_id`` (None: the base) the chat model of later replies; it is
        loaded now, so a broken adapter is reported here."""
        base = self._base_model_id()
        self.llm_for(model_id or base)
        self._chat_model = (None if model_id in (None, "", base)
                            else self.adapters.find(model_id).adapter_id)
        return next(m for m in self.models() if m.model_id == self.chat_model())

    def chat_model(self) -> str:
        """The id of the model ``llm_for(None)`` answers with."""
        return self._chat_model or self._base_model_id()

    # --- adapters ----------------------------------------------------------------
    def adapter(self, adapter_id: str) -> AdapterRecord:
        return self.adapters.find(adapter_id)

    def delete_adapter(self, adapter_id: str) -> None:
        record = self.adapters.find(adapter_id)
        self._adapters.forget(record.adapter_id)
        if self._chat_model in (record.adapter_id, record.name):
            self._chat_model = None
        self.adapters.delete(record.adapter_id)

    def export_adapter(self, adapter_id: str, kind: str = "gguf", quant: str = "Q4_K_M"
                       ) -> Path:
        """A LoRA adapter merged into its base, or a fully fine-tuned model: kind
        "merged-safetensors" (a folder with
        config.json + model.safetensors + tokenizer) or "gguf" (one file, quant Q4_K_M,
        Q5_K_M or Q8_0), under <data_dir>/exports/."""
        return self._adapters.export(self.adapters.find(adapter_id), kind, quant)

    def combine_adapters(self, ids: list[str], weights: list[float] | None = None,
                         name: str = "", combination: str = "cat") -> AdapterRecord:
        """Two or more LoRA adapters of one base merged into a new registered adapter
        (``finetune.combine``; weights default to equal shares), with its GGUF LoRA, so
        it is a chat model like any other. Refused (``AdapterError``) before any work
        when the adapters cannot be combined."""
        from finetune.combine import combine, plan_combination
        from finetune.gguf import base_hf_of

        plan = plan_combination(self.adapters, ids, weights, combination, name)
        first = plan.records[0]
        base_hf = base_hf_of(first.path) or self._adapters.base_hf(first.base_model)
        return combine(plan, base_hf, self.adapters, name)

    # --- helpers -------------------------------------------------------------------
    def _base_model_id(self) -> str:
        cfg = self.settings.llm
        return (cfg.remote_model or self.llm.name) if cfg.backend == "openai" else cfg.model

    def _served_llm(self) -> ServedLLM:
        """The chat model in a supervised ``llama-server`` child (started now, in the
        background: ``warm_up`` waits for it)."""
        cfg = self.settings.llm
        from assistant.canary import server_binary

        binary = server_binary(cfg.server_binary)
        if binary is None:
            raise ModelNotFound("llama-server is not built: run `make setup` (it builds it), "
                                "or set llm.backend = 'llama-cpp'.")
        path = resolve_gguf(cfg.model, self.paths.models_dir)
        self._model_server = ModelServer(ServerConfig(
            binary, path, cfg.n_ctx, cfg.parallel, cfg.n_threads, cfg.n_gpu_layers,
            log_path=self.paths.logs_dir / "llama-server.log",
            startup_timeout_s=cfg.startup_timeout))
        self._model_server.start()
        cache = self.paths.data_dir / "cache"
        cjk = functools.lru_cache(maxsize=1)(lambda: cjk_token_ids(path, cache))
        threading.Thread(target=cjk, name="cjk-tokens", daemon=True).start()  # ~10 s once
        return ServedLLM(self._model_server, path.name, cfg.n_ctx, cfg.seed,
                         cfg.repeat_penalty, request_timeout=cfg.request_timeout,
                         ready_timeout=cfg.ready_timeout, cjk_tokens=cjk,
                         repeat_last_n=cfg.repeat_last_n)


def _remote_llm(settings: Settings) -> LLM:
    """The chat model on an OpenAI-compatible server (``llm.backend = "openai"``)."""
    cfg = settings.llm
    llm = OpenAICompatLLM(cfg.base_url, cfg.remote_model, cfg.api_key, cfg.request_timeout,
                          cfg.n_ctx, cfg.seed)
    log.info("Chat model: %s on %s", llm.name, cfg.base_url)
    return llm
