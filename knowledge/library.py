"""All knowledge bases under one directory, sharing one Chroma client (embedded, or a
Chroma server: ``knowledge.chroma``)."""
from __future__ import annotations

from common.text import count_tokens
import fcntl
import logging
import os
import shutil
import threading
from pathlib import Path

from knowledge.chroma import VectorStoreConfig, close_client, open_client
from knowledge.compress import Compressed, compress
from knowledge.base import KnowledgeBase
from knowledge.embedders import Embedder, EmbedderPool
from knowledge.language import AUTO
from knowledge.manifest import Manifest, new_manifest, validate_kb_name
from knowledge.retrievers import RetrievalConfig
from knowledge.errors import KnowledgeBaseNotFound, KnowledgeError
from knowledge.fusion import reciprocal_rank_fusion
from knowledge.types import Hit

log = logging.getLogger(__name__)


class _ProcessLock:
    """One process per knowledge directory: an embedded Chroma does not see what another
    process writes, and the catalogs and BM25 are this process's alone even when the
    vectors are on a Chroma server, so a second Docent process on the same data dir is
    refused."""

    def __init__(self, path: Path):
        self.path = path
        self._fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(self._fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(self._fd, 64, 0).decode(errors="replace").strip() or "?"
            os.close(self._fd)
            raise KnowledgeError(
                f"Another Docent process (pid {holder}) is using {path.parent}. Stop it, or add "
                "files through it (the app's Knowledge tab), or use another data dir."
            ) from None
        os.ftruncate(self._fd, 0)
        os.pwrite(self._fd, str(os.getpid()).encode(), 0)

    def release(self) -> None:
        if self._fd >= 0:
            fcntl.flock(self._fd, fcntl.LOCK_UN)
            os.close(self._fd)
            self._fd = -1


class Library:
    def __init__(self, root: Path, embedders: EmbedderPool | Embedder, chunk_size: int,
                 chunk_overlap: int, retrieval: RetrievalConfig = RetrievalConfig(),
                 vector_store: VectorStoreConfig = VectorStoreConfig()):
        """``embedders``: the pool knowledge bases load their embedder from; a single
        ``Embedder`` means every knowledge base uses that one. ``vector_store``: embedded
        Chroma under ``root`` (the default) or a Chroma server."""
        self.root = root
        if isinstance(embedders, Embedder):
            embedders = EmbedderPool.fixed(embedders)
        self.embedders = embedders
        self.chunk_size, self.chunk_overlap = chunk_size, chunk_overlap
        self.retrieval = retrieval
        root.mkdir(parents=True, exist_ok=True)
        self.vector_store = vector_store
        self._process_lock = _ProcessLock(root / ".lock")
        try:
            self._client = open_client(vector_store, root / "chroma")
        except KnowledgeError:
            self._process_lock.release()
            raise
        self._open: dict[str, KnowledgeBase] = {}
        self._lock = threading.Lock()

    def names(self) -> list[str]:
        return sorted(p.parent.name for p in self.root.glob("*/manifest.json"))

    def manifest(self, name: str) -> Manifest:
        path = self.root / validate_kb_name(name) / "manifest.json"
        if not path.is_file():
            raise KnowledgeBaseNotFound(f"No knowledge base named {name!r}.")
        return Manifest.load(path)

    def create(self, name: str, embedder: str | None = None) -> KnowledgeBase:
        """A new, empty knowledge base. ``embedder``: a name, a folder or "auto" (the
        default from settings): chosen from the language of its first document."""
        validate_kb_name(name)
        embedder = embedder or self.embedders.default
        dim = 0 if embedder == AUTO else self.embedders.get(embedder).dim
        with self._lock:
            if (self.root / name / "manifest.json").exists():
                raise KnowledgeError(f"Knowledge base {name!r} already exists.")
            kb_dir = self.root / name
            kb_dir.mkdir(parents=True, exist_ok=True)
            new_manifest(name, embedder, dim, self.chunk_size, self.chunk_overlap).save(
                kb_dir / "manifest.json"
            )
        return self.get(name)

    def get(self, name: str, create: bool = False) -> KnowledgeBase:
        validate_kb_name(name)
        if create and name not in self.names():
            try:
                return self.create(name)
            except KnowledgeError:
                pass  # created meanwhile by another caller
        with self._lock:
            if name not in self._open:
                manifest = self.manifest(name)
                self._open[name] = KnowledgeBase(
                    self.root / name, manifest, self.embedders, self._client, self.retrieval
                )
            return self._open[name]

    def warm(self, name: str) -> KnowledgeBase:
        """``name``, ready to search (``KnowledgeBase.warm``): the app does this at start
        for the default knowledge base while the chat model loads, and every search does
        it first (at no cost once done). The first time, a catalog with passages whose
        collection is empty is reported: the vector store changed (e.g. vector_store.url
        was set) or lost them, and the catalog can refill it."""
        kb = self.get(name)
        vectors = kb.warm()
        if vectors == 0 and kb.vectors is not None and kb.chunk_count():
            log.warning("Knowledge base %s has passages but none in %s: run `python -m "
                        "assistant kb check --repair --kb %s` to embed them there.", kb.name,
                        self.vector_store.describe(self.root), kb.name)
        return kb

    def search(self, names: list[str], query: str, top_k: int) -> list[Hit]:
        """Search one or several knowledge bases; several are fused by reciprocal rank,
        each hit keeping the name of the knowledge base it came from."""
        if len(names) == 1:
            return self.warm(names[0]).search(query, top_k)
        ranked = {name: self.warm(name).search(query, max(top_k, self.retrieval.candidates))
                  for name in names}
        return reciprocal_rank_fusion(ranked, k=self.retrieval.fusion.rrf_k, limit=top_k)

    def compress(self, question: str, hits: list[Hit], budget: int) -> list[Compressed]:
        """Cut ``hits`` to about ``budget`` tokens (``knowledge.compress``), with the
        knowledge base's embedder when they all come from one, else by words alone."""
        kbs = {h.kb for h in hits}
        if len(kbs) == 1 and next(iter(kbs)):
            return self.get(next(iter(kbs))).compress(question, hits, budget)
        return compress(question, hits, budget, count_tokens)

    def rename(self, old: str, new: str) -> None:
        """Rename a knowledge base: one directory rename (atomic); its Chroma collection
        keeps its name (the manifest's stable id), on a server too."""
        validate_kb_name(new)
        with self._lock:
            if not (self.root / old / "manifest.json").is_file():
                raise KnowledgeBaseNotFound(f"No knowledge base named {old!r}.")
            if (self.root / new).exists():
                raise KnowledgeError(f"Knowledge base {new!r} already exists.")
            kb = self._open.pop(old, None)
            if kb is not None:
                kb.close()
            (self.root / old).rename(self.root / new)
            manifest = Manifest.load(self.root / new / "manifest.json")
            Manifest(**{**manifest.__dict__, "name": new}).save(self.root / new / "manifest.json")

    def delete(self, name: str) -> None:
        kb = self.get(name)
        with self._lock:
            kb.close()
            self._open.pop(name, None)
            if kb.vectors is not None:
                self._client.delete_collection(kb.manifest.collection)
            shutil.rmtree(self.root / name)

    def close(self) -> None:
        with self._lock:
            for kb in self._open.values():
                kb.close()
            self._open.clear()
            close_client(self._client)
            self._process_lock.release()
