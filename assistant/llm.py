"""LLM backends. Only this module imports llama_cpp.

A backend streams chat completions and counts tokens. ``LlamaCppLLM`` runs a local
GGUF with one lock around the one model (llama.cpp contexts are not thread-safe).
"""
from __future__ import annotations

import logging
import os
import threading
from abc import ABC, abstractmethod
from collections.abc import Iterator, Sequence
from pathlib import Path

log = logging.getLogger(__name__)

Message = dict  # {"role": "system"|"user"|"assistant", "content": str}


class LLM(ABC):
    name: str
    n_ctx: int

    @abstractmethod
    def stream_chat(self, messages: Sequence[Message], max_tokens: int,
                    temperature: float) -> Iterator[str]:
        """Yield the reply to ``messages`` piece by piece."""

    @abstractmethod
    def count_tokens(self, text: str) -> int: ...


class LlamaCppLLM(LLM):
    def __init__(self, path: Path, n_ctx: int = 4096, n_threads: int = 0,
                 n_gpu_layers: int = 0, seed: int = 0, repeat_penalty: float = 1.1):
        from llama_cpp import Llama

        self.name = path.name
        self.path = path
        self.n_ctx = n_ctx
        self.repeat_penalty = repeat_penalty
        threads = n_threads or max(1, os.cpu_count() or 1)
        self._lock = threading.Lock()
        self._llm = Llama(
            model_path=str(path), n_ctx=n_ctx, n_threads=threads, n_threads_batch=threads,
            n_gpu_layers=n_gpu_layers, seed=seed, verbose=False,
        )

    def stream_chat(self, messages, max_tokens, temperature):
        with self._lock:
            stream = self._llm.create_chat_completion(
                messages=list(messages), max_tokens=max_tokens, temperature=temperature,
                repeat_penalty=self.repeat_penalty, stream=True,
            )
            for part in stream:
                delta = part["choices"][0].get("delta", {}).get("content")
                if delta:
                    yield delta

    def count_tokens(self, text: str) -> int:
        return len(self._llm.tokenize(text.encode("utf-8"), add_bos=False, special=True))
