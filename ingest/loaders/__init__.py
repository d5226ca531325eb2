"""File loaders behind a registry keyed by file extension.

Each loader takes ``(path, source, password=None)`` and returns a ``LoadedDocument``,
or raises ``IngestError`` with a reason a user can act on. Submodules register
themselves on import (see the bottom of this file), each with a ``version`` that is
raised whenever what it extracts changes (text, pages, headings): a knowledge base
records the reader of every document, and an unchanged file read by an older version
is read again when it is ingested or synced (``reader_of``).

>>> reader_of(Path("leaflet.PDF")), reader_of(Path("notes.md"))
('pdf/2', 'text/1')
>>> read_by_current(Path("notes.md"), ""), read_by_current(Path("leaflet.pdf"), "")
(True, False)
"""
from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path

from ingest.errors import IngestError
from ingest.types import LoadedDocument

log = logging.getLogger(__name__)

Loader = Callable[..., LoadedDocument]
_REGISTRY: dict[str, Loader] = {}
_READERS: dict[str, str] = {}  # extension -> "<module>/<version>"


def register(*extensions: str, version: int = 1) -> Callable[[Loader], Loader]:
    def wrap(fn: Loader) -> Loader:
        for ext in extensions:
            if ext in _REGISTRY:
                raise ValueError(f"A loader for {ext} is already registered")
            _REGISTRY[ext] = fn
            _READERS[ext] = f"{fn.__module__.rsplit('.', 1)[-1].removesuffix('_loader')}/{version}"
        return fn
    return wrap


def reader_of(path: Path) -> str:
    """The loader and version that read ``path`` ("" for an unsupported type)."""
    return _READERS.get(path.suffix.lower(), "")


def read_by_current(path: Path, recorded: str) -> bool:
    """Whether a document read by ``recorded`` is what this Docent reads from ``path``.
    Documents stored before readers were recorded ("") count as their loader's version 1,
    so only file types whose loader changed since are read again."""
    current = reader_of(path)
    return recorded == current or (not recorded and current.endswith("/1"))


def supported_extensions() -> list[str]:
    return sorted(_REGISTRY)


def load(path: Path, source: str | None = None, password: str | None = None) -> LoadedDocument:
    """Load ``path`` with the loader for its extension."""
    source = source or path.name
    ext = path.suffix.lower()
    loader = _REGISTRY.get(ext)
    if loader is None:
        raise IngestError(
            f"Unsupported file type {ext or '(none)'}: Docent reads "
            f"{', '.join(supported_extensions())}."
        )
    if path.stat().st_size == 0:
        raise IngestError("The file is empty (0 bytes).")
    doc = loader(path, source, password=password)
    if not any(p.text.strip() for p in doc.pages):
        raise IngestError(doc.warnings[0] if doc.warnings else "No text found in the file.")
    return doc


from ingest.loaders import docx_loader, images, pdf, text  # noqa: E402,F401  (registration)
