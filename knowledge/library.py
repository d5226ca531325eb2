"""All knowledge bases under one directory, sharing one Chroma client."""
from __future__ import annotations

import logging
import shutil
import threading
from pathlib import Path

from knowledge.base import KnowledgeBase, Manifest, new_manifest, validate_kb_name
from knowledge.embedders import Embedder
from knowledge.errors import KnowledgeBaseNotFound, KnowledgeError

log = logging.getLogger(__name__)


def _chroma_client(path: Path):
    import chromadb
    from chromadb.config import Settings as ChromaSettings

    path.mkdir(parents=True, exist_ok=True)
    return chromadb.PersistentClient(
        path=str(path), settings=ChromaSettings(anonymized_telemetry=False, allow_reset=False)
    )


class Library:
    def __init__(self, root: Path, embedder: Embedder, chunk_size: int, chunk_overlap: int,
                 rrf_k: int = 60):
        self.root = root
        self.embedder = embedder
        self.chunk_size, self.chunk_overlap, self.rrf_k = chunk_size, chunk_overlap, rrf_k
        root.mkdir(parents=True, exist_ok=True)
        self._client = _chroma_client(root / "chroma")
        self._open: dict[str, KnowledgeBase] = {}
        self._lock = threading.Lock()

    def names(self) -> list[str]:
        return sorted(p.parent.name for p in self.root.glob("*/manifest.json"))

    def manifest(self, name: str) -> Manifest:
        path = self.root / validate_kb_name(name) / "manifest.json"
        if not path.is_file():
            raise KnowledgeBaseNotFound(f"No knowledge base named {name!r}.")
        return Manifest.load(path)

    def create(self, name: str) -> KnowledgeBase:
        validate_kb_name(name)
        with self._lock:
            if (self.root / name / "manifest.json").exists():
                raise KnowledgeError(f"Knowledge base {name!r} already exists.")
            kb_dir = self.root / name
            kb_dir.mkdir(parents=True, exist_ok=True)
            new_manifest(name, self.embedder, self.chunk_size, self.chunk_overlap).save(
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
                    self.root / name, manifest, self.embedder, self._client, self.rrf_k
                )
            return self._open[name]

    def rename(self, old: str, new: str) -> None:
        """Rename a knowledge base: one directory rename (atomic); its Chroma collection
        keeps its id."""
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
            self._client.delete_collection(kb.vectors.collection.name)
            shutil.rmtree(self.root / name)

    def close(self) -> None:
        with self._lock:
            for kb in self._open.values():
                kb.close()
            self._open.clear()
