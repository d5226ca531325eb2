"""File loaders behind a registry keyed by file extension.

Each loader takes ``(path, source, password=None)`` and returns a ``LoadedDocument``,
or raises ``IngestError`` with a reason a user can act on. Submodules register
themselves on import (see the bottom of this file).
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


def register(*extensions: str) -> Callable[[Loader], Loader]:
    def wrap(fn: Loader) -> Loader:
        for ext in extensions:
            if ext in _REGISTRY:
                raise ValueError(f"A loader for {ext} is already registered")
            _REGISTRY[ext] = fn
        return fn
    return wrap


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
