"""An embedder wrapper that caches vectors by content hash in SQLite (no pickle).

Re-running an evaluation, or re-ingesting text that was embedded before, costs a lookup
instead of a model call.
"""
from __future__ import annotations

import hashlib
import sqlite3
import threading
from pathlib import Path

import numpy as np

from knowledge.embedders import Embedder


class CachedEmbedder(Embedder):
    def __init__(self, inner: Embedder, path: Path):
        self.inner, self.name, self.dim = inner, inner.name, inner.dim
        path.parent.mkdir(parents=True, exist_ok=True)
        self._db = sqlite3.connect(path, check_same_thread=False)
        self._db.execute("CREATE TABLE IF NOT EXISTS vectors (key TEXT PRIMARY KEY, vec BLOB NOT NULL)")
        self._lock = threading.Lock()
        self.hits = self.misses = 0

    def _key(self, kind: str, text: str) -> str:
        return hashlib.sha1(f"{self.name}\0{kind}\0{text}".encode()).hexdigest()

    def _embed(self, kind: str, texts, fn) -> np.ndarray:
        keys = [self._key(kind, t) for t in texts]
        found: dict[str, np.ndarray] = {}
        with self._lock:
            for i in range(0, len(keys), 500):
                part = keys[i:i + 500]
                rows = self._db.execute(
                    f"SELECT key, vec FROM vectors WHERE key IN ({','.join('?' * len(part))})", part)
                found.update((k, np.frombuffer(v, dtype="<f4")) for k, v in rows)
        todo = [i for i, k in enumerate(keys) if k not in found]
        if todo:
            vecs = fn([texts[i] for i in todo])
            with self._lock:
                self._db.executemany("INSERT OR REPLACE INTO vectors VALUES (?, ?)",
                                     [(keys[i], v.astype("<f4").tobytes()) for i, v in zip(todo, vecs)])
                self._db.commit()
            for i, v in zip(todo, vecs):
                found[keys[i]] = v
        self.hits += len(keys) - len(todo)
        self.misses += len(todo)
        return np.array([found[k] for k in keys], dtype=np.float32).reshape(-1, self.dim)

    def embed_passages(self, texts):
        return self._embed("p", list(texts), self.inner.embed_passages)

    def embed_queries(self, texts):
        return self._embed("q", list(texts), self.inner.embed_queries)

    def count_tokens(self, text: str) -> int:
        return self.inner.count_tokens(text)
