"""LLM backends. Only this module imports llama_cpp.

A backend streams chat completions and counts tokens. ``LlamaCppLLM`` runs a local
GGUF with one lock around the one model (llama.cpp contexts are not thread-safe).
"""
from __future__ import annotations

import contextlib
import copy
import logging
import os
import threading
import time
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

from assistant.errors import BackendUnavailable
from common.errors import ModelNotFound

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

    def latin_only(self) -> LLM:
        """This model kept from writing CJK, kana or Hangul while it generates (for a
        Vietnamese or English answer), where the backend allows it; otherwise itself,
        and the answer's own script filter is the only guard."""
        return self

    def constrained(self, grammar: str) -> LLM:
        """This model whose replies must follow the GBNF ``grammar`` (for example one that
        requires a source marker in every sentence, ``assistant.cite_grammar``), where
        the backend allows it; otherwise itself, unconstrained."""
        return self


class LlamaCppLLM(LLM):
    """``lora_path``: a GGUF LoRA applied to every reply. ``with_lora(path, name)`` gives
    another ``LLM`` that shares this loaded model with a different LoRA: adapters are
    switched on the loaded model (llama.cpp's ``llama_set_adapters_lora``), not by
    reloading, and each reply takes the lock and sets its own adapter first."""

    def __init__(self, path: Path, n_ctx: int = 4096, n_threads: int = 0,
                 n_gpu_layers: int = 0, seed: int = 0, repeat_penalty: float = 1.1,
                 lora_path: Path | None = None):
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
        self._lora = Path(lora_path) if lora_path else None
        self._lora_handles: dict[Path, object] = {}
        self._active_lora: Path | None = None

    def stream_chat(self, messages, max_tokens, temperature):
        return self._stream(messages, max_tokens, temperature, self._lora)

    def _stream(self, messages, max_tokens, temperature, lora: Path | None):
        with self._lock:
            self._activate(lora)
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

    # --- LoRA adapters (hot switch on the loaded model) ---------------------------
    def with_lora(self, lora_path: Path | None, name: str = "") -> LLM:
        """This model with the GGUF LoRA ``lora_path`` (None: none), sharing the weights."""
        return LoraView(self, Path(lora_path) if lora_path else None,
                        name or (Path(lora_path).stem if lora_path else self.name))

    def set_lora(self, lora_path: Path | None) -> None:
        """Change the LoRA this model's own replies use (None: the plain base)."""
        with self._lock:
            self._lora = Path(lora_path) if lora_path else None
            self._activate(self._lora)

    def _activate(self, lora: Path | None) -> None:
        """Make ``lora`` the context's adapter (caller holds the lock); loaded once each.
        The prompt cache is dropped: it was computed with the previous adapter."""
        import ctypes

        import llama_cpp

        if lora == self._active_lora:
            return
        if lora is not None and lora not in self._lora_handles:
            handle = llama_cpp.llama_adapter_lora_init(self._llm._model.model,
                                                       str(lora).encode("utf-8"))
            if not handle:
                raise ModelNotFound(f"llama.cpp cannot load the LoRA {lora} on {self.name}: "
                                    "was it converted for this base model?")
            self._lora_handles[lora] = handle  # freed with the model
        if lora is None:
            rc = llama_cpp.llama_set_adapters_lora(self._llm._ctx.ctx, None, 0, None)
        else:
            handles = (llama_cpp.llama_adapter_lora_p_ctypes * 1)(self._lora_handles[lora])
            rc = llama_cpp.llama_set_adapters_lora(self._llm._ctx.ctx, handles, 1,
                                                   (ctypes.c_float * 1)(1.0))
        if rc != 0:
            raise ModelNotFound(f"llama.cpp refused the LoRA {lora} on {self.name} ({rc}).")
        self._llm.reset()
        self._active_lora = lora
        log.info("%s: LoRA %s", self.name, lora.name if lora else "off")


class LoraView(LLM):
    """A ``LlamaCppLLM`` seen through one LoRA adapter (see ``LlamaCppLLM.with_lora``)."""

    def __init__(self, base: LlamaCppLLM, lora_path: Path | None, name: str):
        self.base, self.lora_path, self.name, self.n_ctx = base, lora_path, name, base.n_ctx

    def stream_chat(self, messages, max_tokens, temperature):
        return self.base._stream(messages, max_tokens, temperature, self.lora_path)

    def count_tokens(self, text: str) -> int:
        return self.base.count_tokens(text)


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
        return _stream_completion(self._client, self.base_url, self.name, messages,
                                  max_tokens, temperature, self.seed, None)

    def count_tokens(self, text: str) -> int:
        """About one token per 3 ASCII characters plus one per other character: above
        the real count for English (~4 characters a token) and for Chinese and
        Vietnamese, so budgets computed with it do not overflow the context.

        >>> OpenAICompatLLM.count_tokens(None, "abcdef 你好")
        5
        """
        other = sum(1 for ch in text if ord(ch) > 127)
        return (len(text) - other + 2) // 3 + other

    def _errors(self):
        return _client_errors(self.base_url)


def _stream_completion(client, where: str, model: str, messages, max_tokens: int,
                       temperature: float, seed: int, extra_body: dict | None
                       ) -> Iterator[str]:
    """Stream a chat completion's text. A stream that ends without a finish reason (the
    server died or dropped the connection mid-answer) raises ``BackendUnavailable``:
    a cut answer is never passed off as complete. Closing the generator closes the
    connection, which frees the server's slot."""
    with _client_errors(where):
        stream = client.chat.completions.create(
            model=model, messages=list(messages), max_tokens=max_tokens,
            temperature=temperature, seed=seed, stream=True, extra_body=extra_body)
        finished = False
        with stream:
            for chunk in stream:
                choice = chunk.choices[0] if chunk.choices else None
                if choice is None:
                    continue
                if choice.delta and choice.delta.content:
                    yield choice.delta.content
                finished = finished or bool(choice.finish_reason)
        if not finished:
            raise BackendUnavailable(f"The model at {where} stopped in the middle of the "
                                     "answer (its process ended or the connection broke).")


@contextlib.contextmanager
def _client_errors(where: str):
    """Turn the client's connection and status errors into ``BackendUnavailable``."""
    import openai

    try:
        yield
    except openai.APITimeoutError as exc:  # a kind of connection error: said apart
        raise BackendUnavailable(f"The LLM server at {where} did not answer within "
                                 "llm.request_timeout; it is probably busy with other "
                                 "answers.") from exc
    except openai.APIConnectionError as exc:
        raise BackendUnavailable(f"Cannot reach the LLM server at {where}: {exc}") from exc
    except openai.APIStatusError as exc:
        raise BackendUnavailable(f"The LLM server at {where} refused the request "
                                 f"(HTTP {exc.status_code}): {exc.message}") from exc
    except _transport_errors() as exc:  # raised while a stream is read
        raise BackendUnavailable(f"The connection to the LLM server at {where} broke in "
                                 f"the middle of the answer: {exc}") from exc


def quiet_http_clients() -> None:
    """The HTTP clients log every request at INFO (each token count and answer sent to the
    model server): keep them to warnings."""
    for name in ("httpx", "httpx2", "openai"):
        logging.getLogger(name).setLevel(logging.WARNING)


def _transport_errors() -> tuple[type[Exception], ...]:
    """The HTTP client's connection errors (the ``openai`` client uses httpx, or its
    fork httpx2 in some versions)."""
    import importlib

    found = []
    for name in ("httpx", "httpx2"):
        try:
            found.append(importlib.import_module(name).TransportError)
        except (ImportError, AttributeError):
            continue
    return tuple(found)


class ServedLLM(LLM):
    """The chat model served by Docent's own supervised ``llama-server``
    (``assistant.model_server``), through its OpenAI-compatible API.

    Each request waits (up to ``ready_timeout`` seconds) for the server to be ready, so
    a question asked while it restarts after a crash is answered once it is back.
    ``lora``: a GGUF LoRA the server applies to this model's requests only. The
    server's prompt cache keeps each slot's last prompt, so a conversation's earlier
    turns and the fixed system prompt are not evaluated again."""

    def __init__(self, server, name: str, n_ctx: int, seed: int = 0,
                 repeat_penalty: float = 1.1, lora: Path | None = None,
                 request_timeout: float = 300.0, ready_timeout: float = 60.0,
                 cjk_tokens: Callable[[], Sequence[int]] | None = None,
                 repeat_last_n: int = 16):
        self.server, self.name, self.n_ctx = server, name, n_ctx
        self.repeat_last_n = repeat_last_n
        self.seed, self.repeat_penalty, self.lora = seed, repeat_penalty, lora
        self.request_timeout, self.ready_timeout = request_timeout, ready_timeout
        self._clients: dict[str, object] = {}
        self._lock = threading.Lock()
        self._cjk_tokens = cjk_tokens  # the model's CJK token ids (see assistant.vocab)
        self._bias: list | None = None  # set on the latin_only() view
        self._grammar = ""  # set on the constrained() view

    def latin_only(self) -> LLM:
        """The same model whose requests give every CJK token a bias of -inf."""
        if self._cjk_tokens is None:
            return self
        ids = self._cjk_tokens()
        if not ids:
            return self
        view = copy.copy(self)
        view._bias = [[i, False] for i in ids]
        return view

    def constrained(self, grammar: str) -> LLM:
        view = copy.copy(self)
        view._grammar = grammar
        return view

    def _client(self, timeout: float | None = None):
        import openai

        base = self.server.wait_ready(self.ready_timeout if timeout is None else timeout)
        with self._lock:
            if base not in self._clients:  # the port changes when the server restarts
                self._clients = {base: openai.OpenAI(
                    base_url=base + "/v1", api_key=self.server.api_key,
                    timeout=self.request_timeout, max_retries=0)}
            return base, self._clients[base]

    def stream_chat(self, messages, max_tokens, temperature):
        extra: dict = {"repeat_penalty": self.repeat_penalty,
                       "repeat_last_n": self.repeat_last_n, "cache_prompt": True}
        if self._bias:
            extra["logit_bias"] = self._bias
        if self._grammar:
            extra["grammar"] = self._grammar
        # every request names the scale of every loaded adapter: one that names none
        # gets the server's start-up scales, which apply them all
        chosen = self.server.lora_id(self.lora) if self.lora is not None else None
        if self.server.config.loras:
            extra["lora"] = [{"id": i, "scale": 1.0 if i == chosen else 0.0}
                             for i in range(len(self.server.config.loras))]
        base, client = self._client()
        return self._explained(_stream_completion(client, base, self.name, messages,
                                                  max_tokens, temperature, self.seed, extra),
                               self.server.restarts)

    def _explained(self, pieces: Iterator[str], restarts: int) -> Iterator[str]:
        """``pieces``, with a failure told in the user's terms: the model's process ended
        (how, once the supervisor has seen it) and is being restarted, or, when it is
        still running, what went wrong (a timeout on a busy machine)."""
        try:
            yield from pieces
        except BackendUnavailable as exc:
            time.sleep(0.5)  # let the supervisor see the exit, to say how it ended
            status = self.server.status()
            if status["restarts"] == restarts and status["pid"] is not None:
                raise BackendUnavailable(  # it did not stop: a timeout, a refusal
                    f"The model did not finish this answer ({exc}); its process is still "
                    "running: ask again in a moment.") from exc
            how = f" ({status['last_exit']})" if status["restarts"] > restarts else ""
            raise BackendUnavailable(
                f"The model's process stopped during this answer{how} and is being "
                "restarted; the next question waits for it.") from exc

    def count_tokens(self, text: str) -> int:
        """The server's own count (``/tokenize``); the estimate of ``OpenAICompatLLM``
        while the server is not ready, so a restart never fails a count."""
        import httpx

        try:
            base, _ = self._client(timeout=0)
            resp = httpx.post(base + "/tokenize", json={"content": text, "add_special": False},
                              headers={"Authorization": f"Bearer {self.server.api_key}"},
                              timeout=10.0)
            resp.raise_for_status()
            return len(resp.json()["tokens"])
        except (BackendUnavailable, httpx.HTTPError, KeyError, ValueError):
            return OpenAICompatLLM.count_tokens(None, text)

    def with_lora(self, lora_path: Path | None, name: str = "") -> LLM:
        """This served model with the GGUF LoRA ``lora_path`` (None: none)."""
        path = Path(lora_path) if lora_path else None
        return ServedLLM(self.server, name or (path.stem if path else self.name), self.n_ctx,
                         self.seed, self.repeat_penalty, path, self.request_timeout,
                         self.ready_timeout, self._cjk_tokens, self.repeat_last_n)
