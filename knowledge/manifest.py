"""A knowledge base's manifest: what its index was built with, versioned, and the rules
for its name.

Saved as ``manifest.json`` in the knowledge base's folder, next to the catalog. A
manifest of another format version is refused on load with what to do about it.

>>> validate_kb_name("clinic-2026")
'clinic-2026'
>>> m = new_manifest("clinic", "auto", 0, 220, 40)
>>> (m.format_version == FORMAT_VERSION, m.collection.startswith("kb_"), m.language)
(True, True, '')
"""
from __future__ import annotations

import json
import re
import uuid
from dataclasses import asdict, dataclass
from datetime import datetime, timezone
from pathlib import Path

from knowledge.errors import IndexMismatch, KnowledgeError

FORMAT_VERSION = 3  # 2: duplicates, headings, tombstones; 3: heading-prefixed index text
KB_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]{0,62}$")
MANIFEST = "manifest.json"  # <kb>/manifest.json


@dataclass(frozen=True)
class Manifest:
    """What an index was built with. Saved as ``manifest.json`` next to the catalog."""

    name: str
    format_version: int
    collection: str  # the Chroma collection: a stable id, so renaming never touches it
    embedder: str
    embedder_dim: int
    chunk_size: int
    chunk_overlap: int
    created_at: str
    language: str = ""  # detected from the first document when the embedder was "auto"

    def save(self, path: Path) -> None:
        write_json(path, asdict(self))

    @classmethod
    def load(cls, path: Path) -> "Manifest":
        data = json.loads(path.read_text(encoding="utf-8"))
        if data.get("format_version") != FORMAT_VERSION or "collection" not in data:
            raise IndexMismatch(
                f"Knowledge base at {path.parent} has index format "
                f"{data.get('format_version')}, this Docent reads {FORMAT_VERSION}: re-index it "
                "(delete the knowledge base and ingest the files again)."
            )
        return cls(**data)


def validate_kb_name(name: str) -> str:
    if not KB_NAME.match(name or ""):
        raise KnowledgeError(
            f"Invalid knowledge base name {name!r}: use 1-63 letters, digits, '-' or '_', "
            "starting with a letter or digit."
        )
    return name


def new_collection() -> str:
    """A fresh Chroma collection name (``kb_`` and 16 hex digits)."""
    return f"kb_{uuid.uuid4().hex[:16]}"


def new_manifest(name: str, embedder: str, embedder_dim: int, chunk_size: int,
                 chunk_overlap: int) -> Manifest:
    """A manifest for a new knowledge base; ``embedder`` may be "auto" (dimension 0)."""
    return Manifest(
        name=name, format_version=FORMAT_VERSION, collection=new_collection(),
        embedder=embedder, embedder_dim=embedder_dim, chunk_size=chunk_size,
        chunk_overlap=chunk_overlap,
        created_at=datetime.now(timezone.utc).isoformat(timespec="seconds"),
    )


def write_json(path: Path, data: dict) -> None:
    """``data`` as ``path``, atomically (written aside, then renamed over it)."""
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(data, indent=2), encoding="utf-8")
    tmp.replace(path)
