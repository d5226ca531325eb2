"""Ingestion as a generator of progress events that returns a report.

    report = drain(ingest_files(kb, [IngestItem(Path("a.pdf"))], params), on_event=print)

One failing file never stops the batch: its ``FileResult`` says why. Files over the
size limit are refused before anything is read.
"""
from __future__ import annotations

import logging
import time
from collections.abc import Callable, Generator, Sequence
from dataclasses import dataclass, replace
from pathlib import Path

from common.hashing import file_sha256
from common.progress import drain  # noqa: F401 - ingestion callers drain through here
from ingest.chunking import ChunkingParams, chunk_pages, doc_id_for
from ingest.errors import IngestError
from ingest.loaders import load, read_by_current, reader_of, supported_extensions
from ingest.types import FileResult, IngestEvent, IngestReport
from knowledge.base import KnowledgeBase
from knowledge.errors import KnowledgeError
from knowledge.types import DocumentRecord

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class IngestItem:
    """A file to ingest: ``source`` is the name shown and cited (default: the file name);
    ``origin`` the absolute path kept for folder sync; ``password`` for encrypted PDFs."""

    path: Path
    source: str = ""
    origin: str = ""
    password: str | None = None

    @property
    def name(self) -> str:
        return self.source or self.path.name


def ingest_files(
    kb: KnowledgeBase, items: Sequence[IngestItem], params: ChunkingParams,
    max_bytes: int = 200 * 2**20, count: Callable[[str], int] | None = None,
) -> Generator[IngestEvent, None, IngestReport]:
    """Ingest ``items`` one by one. Chunks are sized with ``count`` (default: the
    knowledge base's embedder tokens)."""
    results: list[FileResult] = []
    total = len(items)
    origins = _Origins(kb)
    for index, item in enumerate(items):
        started = time.perf_counter()
        try:
            result = yield from _ingest_one(kb, item, params, max_bytes, count, index, total,
                                            origins)
        except (IngestError, KnowledgeError, OSError) as exc:
            result = FileResult(item.name, "failed", reason=str(exc))
        except Exception as exc:  # isolate any unexpected loader bug to this file
            log.exception("Unexpected error ingesting %s", item.name)
            result = FileResult(item.name, "failed", reason=f"{type(exc).__name__}: {exc}")
        result = replace(result, seconds=round(time.perf_counter() - started, 3))
        results.append(result)
        stage = {"failed": "failed", "unchanged": "unchanged"}.get(result.status, "done")
        yield IngestEvent(item.name, stage, index, total, result.reason or f"{result.chunks} chunks")
    return IngestReport(tuple(results))


def _ingest_one(kb, item: IngestItem, params, max_bytes, count, index, total,
                origins: "_Origins"):
    source, path = item.name, item.path
    yield IngestEvent(source, "loading", index, total)
    if not path.is_file():
        raise IngestError(f"File not found: {path}")
    size = path.stat().st_size
    if size > max_bytes:
        raise IngestError(
            f"The file is {size / 2**20:.1f} MB, over the {max_bytes / 2**20:.0f} MB limit "
            "(setting ingest.max_file_mb).")
    sha, reader = file_sha256(path), reader_of(path)
    existing = kb.find_document(source)
    if existing is None and (existing := origins.document(path)) is not None:
        # the file is stored already, reached another way (through its folder, or by its
        # own path): it stays one document, under the name it was first stored with
        source = existing.source
    reread = existing is not None and existing.sha256 == sha
    if reread and read_by_current(path, existing.reader):
        return FileResult(source, "unchanged", existing.chunks, existing.pages, existing.chars,
                          doc_id=existing.doc_id, duplicates=existing.duplicates)
    if reread:
        yield IngestEvent(source, "loading", index, total,
                          "unchanged, read again: Docent reads this file type better now")
    doc = load(path, source, password=item.password)
    sample = "\n".join(p.text for p in doc.pages[:20])
    if kb.needs_multilingual(sample):
        # an English-only knowledge base receiving another language: every passage is
        # embedded again with the multilingual model before this file joins it
        for done, passages in kb.reembed():
            yield IngestEvent(source, "re-embedding", index, total,
                              f"{done}/{passages} passages with the multilingual embedder "
                              "(this file is not in English)")
    yield IngestEvent(source, "chunking", index, total)
    doc_id = doc_id_for(source, sha, reader)
    if count is None:
        kb.ensure_embedder(sample)
        count = kb.count_tokens
    chunks = chunk_pages(doc_id, source, doc.pages, params, count)
    if not chunks:
        raise IngestError("No text found in the file.")
    yield IngestEvent(source, "embedding", index, total, f"{len(chunks)} chunks")
    original = path if path.suffix.lower() == ".pdf" else None  # citations render its pages
    with kb.keeping_original(doc_id, original):
        record = kb.add_document(doc_id, source, sha, doc.page_count, chunks,
                                 origin=item.origin, reader=reader)
    origins.add(item.origin, source)
    status = "replaced" if existing is not None else "added"
    notes = (["read again with the newer reader"] if reread else []) + list(doc.warnings)
    return FileResult(source, status, record.chunks, record.pages, record.chars,
                      reason="; ".join(notes), doc_id=doc_id, duplicates=record.duplicates)


class _Origins:
    """The stored documents by the file they came from (paths resolved: symlinks and
    ``..`` followed), read from the catalog once per batch, on first need."""

    def __init__(self, kb: KnowledgeBase):
        self.kb = kb
        self._sources: dict[Path, str] | None = None

    def document(self, path: Path) -> DocumentRecord | None:
        """The stored document that came from the file at ``path``, if any."""
        if self._sources is None:
            self._sources = {Path(d.origin).resolve(): d.source
                             for d in self.kb.documents() if d.origin}
        source = self._sources.get(path.resolve())
        return self.kb.find_document(source) if source is not None else None

    def add(self, origin: str, source: str) -> None:
        if origin and self._sources is not None:
            self._sources[Path(origin).resolve()] = source


def folder_items(folder: Path, password: str | None = None,
                 inside: Sequence[Path] | None = None) -> list[IngestItem]:
    """Every supported file under ``folder``, named by its path relative to it. With
    ``inside`` (resolved roots), a file whose real path lies outside them (a symlink
    pointing elsewhere) is left out."""
    exts = set(supported_extensions())
    root = folder.resolve()
    return [IngestItem(p, str(p.relative_to(root)), str(p), password)
            for p in sorted(root.rglob("*"))
            if p.is_file() and p.suffix.lower() in exts and not p.name.startswith((".", "~$"))
            and (inside is None or within(p.resolve(), inside))]


def within(path: Path, roots: Sequence[Path]) -> bool:
    """Whether the resolved ``path`` is one of ``roots`` or under one."""
    return any(path == r or r in path.parents for r in roots)


def sync_folder(
    kb: KnowledgeBase, folder: Path, params: ChunkingParams, max_bytes: int = 200 * 2**20,
    count: Callable[[str], int] | None = None, inside: Sequence[Path] | None = None,
) -> Generator[IngestEvent, None, IngestReport]:
    """Make the knowledge base match ``folder``: add new files, replace changed ones,
    delete documents whose file under this folder is gone. ``inside``: see
    ``folder_items``."""
    if not folder.is_dir():
        raise IngestError(f"Not a folder: {folder}")
    items = folder_items(folder, inside=inside)
    report = yield from ingest_files(kb, items, params, max_bytes, count)
    # a file left out by ``inside`` is still there: not a reason to delete its document
    present = {i.origin for i in (folder_items(folder) if inside is not None else items)}
    prefix = str(folder.resolve()) + "/"
    gone = [d for d in kb.documents() if d.origin.startswith(prefix) and d.origin not in present]
    deleted = []
    for n, doc in enumerate(gone):
        kb.delete_document(doc.doc_id)
        deleted.append(FileResult(doc.source, "deleted", doc_id=doc.doc_id))
        yield IngestEvent(doc.source, "deleted", n, len(gone), "file removed from the folder")
    return IngestReport(report.results + tuple(deleted))


def reread_documents(
    kb: KnowledgeBase, params: ChunkingParams, max_bytes: int = 200 * 2**20,
    count: Callable[[str], int] | None = None,
) -> Generator[IngestEvent, None, IngestReport]:
    """Read again every document whose reader is older than this Docent's, from its
    stored original (PDFs) or, unchanged, from the file it came from. One with neither
    keeps its chunks and is reported as failed, saying to add the file again."""
    items, missing = [], []
    for doc in outdated_documents(kb):
        path = _stored_file(kb, doc)
        if path is None:
            missing.append(FileResult(doc.source, "failed", doc_id=doc.doc_id, reason=(
                "Its original is not kept: add the file again to read it with the newer "
                "reader (its passages stay as they are until then).")))
        else:
            items.append(IngestItem(path, doc.source, doc.origin))
    report = yield from ingest_files(kb, items, params, max_bytes, count)
    return IngestReport(report.results + tuple(missing))


def outdated_documents(kb: KnowledgeBase) -> list[DocumentRecord]:
    """The documents an older reader read than this Docent would use for their type."""
    return [d for d in kb.documents() if not read_by_current(Path(d.source), d.reader)]


def _stored_file(kb: KnowledgeBase, doc: DocumentRecord) -> Path | None:
    original = kb.original_path(doc.doc_id)
    if original.is_file():
        return original
    origin = Path(doc.origin) if doc.origin else None
    if origin is not None and origin.is_file() and file_sha256(origin) == doc.sha256:
        return origin
    return None


