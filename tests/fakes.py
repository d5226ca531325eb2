"""Deterministic fakes for fast unit tests of the logic around the real models."""
from __future__ import annotations

import hashlib

import numpy as np

from assistant.llm import LLM
from knowledge.embedders import Embedder
from knowledge.tokenize import tokenize


class HashEmbedder(Embedder):
    """Bag of hashed BM25 tokens: texts sharing words get similar vectors."""

    def __init__(self, name: str = "hash-embedder", dim: int = 64):
        self.name, self.dim = name, dim

    def _vec(self, text: str) -> np.ndarray:
        v = np.zeros(self.dim, dtype=np.float32)
        for tok in tokenize(text) or ["\u2205"]:
            v[int(hashlib.md5(tok.encode()).hexdigest(), 16) % self.dim] += 1.0
        return v / max(float(np.linalg.norm(v)), 1e-12)

    def embed_passages(self, texts):
        return np.array([self._vec(t) for t in texts], dtype=np.float32).reshape(-1, self.dim)

    embed_queries = embed_passages


class ScriptedLLM(LLM):
    """Replies with a fixed script, streamed a few characters at a time."""

    def __init__(self, reply: str, name: str = "scripted", n_ctx: int = 4096):
        self.reply, self.name, self.n_ctx = reply, name, n_ctx
        self.calls: list[list[dict]] = []
        self.grammars: list[str] = []  # each constrained() request's grammar

    def constrained(self, grammar: str):
        self.grammars.append(grammar)
        return self

    def stream_chat(self, messages, max_tokens, temperature):
        self.calls.append(list(messages))
        for i in range(0, len(self.reply), 3):
            yield self.reply[i : i + 3]

    def count_tokens(self, text: str) -> int:
        return max(1, len(text) // 4)


class SequenceLLM(ScriptedLLM):
    """Replies with ``replies`` in turn (the last one repeats): e.g. a rewrite for the
    follow-up condensing call, then the answer."""

    def __init__(self, replies: list[str], name: str = "scripted", n_ctx: int = 4096):
        super().__init__(replies[0], name, n_ctx)
        self.replies = list(replies)

    def stream_chat(self, messages, max_tokens, temperature):
        self.reply = self.replies[min(len(self.calls), len(self.replies) - 1)]
        yield from super().stream_chat(messages, max_tokens, temperature)
