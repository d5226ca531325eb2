"""LLM backends. Only this module imports llama_cpp.

A backend streams chat completions and counts tokens. ``LlamaCppLLM`` runs a local
GGUF with one lock around the one model (llama.cpp contexts are not thread-safe).
"""
from __future__ import annotations

import contextlib
import logging
import os
import threading
from abc import ABC, abstractmethod
from collections.abc import Iterator, Sequence
from pathlib import Path

from assistant.errors import BackendUnavailable

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


class OpenAICompatLLM(LLM):
    """A chat model served by any OpenAI-compatible server (llama.cpp's or
    llama-cpp-python's server, vLLM, Ollama, LM Studio, ...), through the official
    ``openai`` client.

    ``model`` empty: the first model the server lists (asked once, here, so a wrong
    ``base_url`` fails at start-up). ``n_ctx`` is the server's context window as
    configured; the standard API cannot report it. Unreachable server or refused
    request: ``BackendUnavailable`` naming the URL.

    ``count_tokens`` is an estimate: the standard API has no tokenizer endpoint.
    """

    def __init__(self, base_url: str, model: str = "", api_key: str = "",
                 timeout: float = 300.0, n_ctx: int = 4096, seed: int = 0):
        import openai

        self.base_url = base_url.rstrip("/")
        self.n_ctx = n_ctx
        self.seed = seed
        self._client = openai.OpenAI(base_url=self.base_url, api_key=api_key or "unused",
                                     timeout=timeout, max_retries=1)
        self.name = model or self._first_model()

    def _first_model(self) -> str:
        with self._errors():
            models = list(self._client.models.list())
        if not models:
            raise BackendUnavailable(f"The LLM server at {self.base_url} lists no models; "
                                     "set llm.remote_model.")
        return models[0].id

    def stream_chat(self, messages, max_tokens, temperature):
        with self._errors():
            stream = self._client.chat.completions.create(
                model=self.name, messages=list(messages), max_tokens=max_tokens,
                temperature=temperature, seed=self.seed, stream=True)
            with stream:
                for chunk in stream:
                    delta = chunk.choices[0].delta.content if chunk.choices else None
                    if delta:
                        yield delta

    def count_tokens(self, text: str) -> int:
        """About one token per 3 ASCII characters plus one per other character: above
        the real count for English (~4 characters a token) and for Chinese and
        Vietnamese, so budgets computed with it do not overflow the context.

        >>> OpenAICompatLLM.count_tokens(None, "abcdef 你好")
        5
        """
        other = sum(1 for ch in text if ord(ch) > 127)
        return (len(text) - other + 2) // 3 + other

    @contextlib.contextmanager
    def _errors(self):
        """Turn the client's connection and status errors into ``BackendUnavailable``."""
        import openai

        try:
            yield
        except openai.APIConnectionError as exc:
            raise BackendUnavailable(f"Cannot reach the LLM server at {self.base_url}: "
                                     f"{exc}") from exc
        except openai.APIStatusError as exc:
            raise BackendUnavailable(f"The LLM server at {self.base_url} refused the "
                                     f"request (HTTP {exc.status_code}): {exc.message}") from exc
