"""A chat backend for ReFT adapters: the HF base model with its LoReFT interventions,
run through transformers (ReFT cannot be expressed in GGUF). ``finetune.reft`` (and so
torch, transformers, pyreft) is imported only when a ``ReftLLM`` is built.

Replies stream in pieces from a ``TextIteratorStreamer`` fed by a generation thread;
an error in that thread is raised to the reader, not lost.
"""
from __future__ import annotations

import logging
import threading
import time
from pathlib import Path

from assistant.llm import LLM

log = logging.getLogger(__name__)


class ReftLLM(LLM):
    def __init__(self, adapter_dir: Path, base_dir: Path | None = None, n_ctx: int = 4096,
                 name: str = "", seed: int = 0):
        from finetune import reft

        t0 = time.perf_counter()
        self._reft = reft
        self.model = reft.load_reft(Path(adapter_dir), base_dir)
        base = Path(base_dir or self.model.docent_config["base_model"])
        self.tokenizer = reft.load_tokenizer(base)
        self.name = name or Path(adapter_dir).name
        self.n_ctx = n_ctx
        self.seed = seed
        self._lock = threading.Lock()
        log.info("Loaded ReFT adapter %s on %s in %.1f s", self.name, base.name,
                 time.perf_counter() - t0)

    def stream_chat(self, messages, max_tokens, temperature):
        from transformers import TextIteratorStreamer

        with self._lock:
            streamer = TextIteratorStreamer(self.tokenizer, skip_prompt=True,
                                            skip_special_tokens=True, timeout=600)
            failure: list[BaseException] = []

            def run() -> None:
                try:
                    self._seed()
                    self._reft.generate(self.model, self.tokenizer, list(messages),
                                        max_tokens, temperature, streamer=streamer)
                except Exception as exc:  # noqa: BLE001 - re-raised to the reader below
                    failure.append(exc)
                    streamer.end()

            worker = threading.Thread(target=run, name=f"reft-{self.name}", daemon=True)
            worker.start()
            try:
                for piece in streamer:
                    if piece:
                        yield piece
            finally:
                worker.join()
            if failure:
                raise failure[0]

    def _seed(self) -> None:
        import torch

        torch.manual_seed(self.seed)

    def count_tokens(self, text: str) -> int:
        return len(self.tokenizer(text, add_special_tokens=False)["input_ids"])
