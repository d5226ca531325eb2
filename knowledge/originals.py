"""Stored originals: the PDF a document was read from, kept so cited pages can be shown.

``<kb>/originals/<doc_id>.pdf`` is copied in atomically while the document is stored and
goes with it; ``<kb>/page-cache/<doc_id>-*.png`` holds the pages rendered from it.
"""
from __future__ import annotations

import logging
import os
import shutil
import uuid
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path

log = logging.getLogger(__name__)

ORIGINALS = "originals"  # <kb>/originals/<doc_id>.pdf: the ingested PDF, to render cited pages
PAGE_CACHE = "page-cache"  # <kb>/page-cache/<doc_id>-*.png: pages rendered for citations


class Originals:
    """The stored originals of one knowledge base (folder ``root``)."""

    def __init__(self, root: Path):
        self.root = root

    def path(self, doc_id: str) -> Path:
        """Where the original PDF of ``doc_id`` is kept (it may not exist)."""
        return self.root / ORIGINALS / f"{doc_id}.pdf"

    @contextmanager
    def keeping(self, doc_id: str, path: Path | None,
                stored: Callable[[str], bool]) -> Iterator[None]:
        """Copy ``path`` (atomically) as the original of ``doc_id`` for the duration of the
        block that stores the document; removed again when the block fails, unless
        ``stored(doc_id)`` says the document is in the catalog. None: no-op."""
        if path is None:
            yield
            return
        target = self.path(doc_id)
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = target.with_suffix(f".{uuid.uuid4().hex[:8]}.tmp")
        try:
            shutil.copyfile(path, tmp)
            os.replace(tmp, target)
            yield
        except BaseException:
            tmp.unlink(missing_ok=True)
            if not stored(doc_id):
                self.drop(doc_id)
            raise

    def drop(self, doc_id: str) -> None:
        """Remove the stored original of ``doc_id`` and its rendered pages."""
        self.path(doc_id).unlink(missing_ok=True)
        for png in (self.root / PAGE_CACHE).glob(f"{doc_id}-*.png"):
            png.unlink(missing_ok=True)

    def sweep(self, known: Iterable[str]) -> None:
        """Remove what a crash left: half-copied files and originals of documents not in
        ``known`` (a copy made before the catalog committed, or not yet removed after)."""
        folder = self.root / ORIGINALS
        if not folder.is_dir():
            return
        for tmp in folder.glob("*.tmp"):
            tmp.unlink(missing_ok=True)
        known = set(known)
        for pdf in folder.glob("*.pdf"):
            if pdf.stem not in known:
                log.info("Removing the original of a document no longer in %s", self.root.name)
                self.drop(pdf.stem)
