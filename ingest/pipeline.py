"""Ingestion as a generator of progress events that returns a report.

>>> # events = ingest_files(kb, [Path("a.pdf")], ChunkingParams())
>>> # report = drain(events, on_event=print)

One failing file never stops the batch: its ``FileResult`` says why.
"""
from __future__ import annotations

import hashlib
import logging
import time
from collections.abc import Callable, Generator, Sequence
from pathlib import Path

from ingest.chunking import ChunkingParams, chunk_pages, doc_id_for
from ingest.errors import IngestError
from ingest.loaders import load
from ingest.types import FileResult, IngestEvent, IngestReport
from knowledge.base import KnowledgeBase
from knowledge.errors import KnowledgeError

log = logging.getLogger(__name__)

Item = Path | tuple[Path, str]  # a path, or (path, source name shown to the user)


def file_sha256(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def ingest_files(
    kb: KnowledgeBase, items: Sequence[Item], params: ChunkingParams,
    max_bytes: int = 200 * 2**20,
) -> Generator[IngestEvent, None, IngestReport]:
    results: list[FileResult] = []
    total = len(items)
    for index, item in enumerate(items):
        path, source = (item, item.name) if isinstance(item, Path) else item
        started = time.perf_counter()
        events = _ingest_one(kb, Path(path), source, params, max_bytes, index, total)
        try:
            while True:
                yield next(events)
        except StopIteration as stop:
            result = stop.value
        except (IngestError, KnowledgeError, OSError) as exc:
            result = FileResult(source, "failed", reason=str(exc))
        except Exception as exc:  # isolate any unexpected loader bug to this file
            log.exception("Unexpected error ingesting %s", source)
            result = FileResult(source, "failed", reason=f"{type(exc).__name__}: {exc}")
        result = FileResult(**{**result.__dict__, "seconds": round(time.perf_counter() - started, 3)})
        results.append(result)
        stage = "failed" if result.status == "failed" else (
            "unchanged" if result.status == "unchanged" else "done")
        yield IngestEvent(source, stage, index, total, result.reason or f"{result.chunks} chunks")
    return IngestReport(tuple(results))


def _ingest_one(kb, path, source, params, max_bytes, index, total):
    yield IngestEvent(source, "loading", index, total)
    if not path.is_file():
        raise IngestError(f"File not found: {path}")
    size = path.stat().st_size
    if size > max_bytes:
        raise IngestError(
            f"The file is {size / 2**20:.1f} MB, over the {max_bytes / 2**20:.0f} MB limit "
            "(setting ingest.max_file_mb)."
        )
    sha = file_sha256(path)
    existing = kb.find_document(source)
    if existing is not None and existing.sha256 == sha:
        return FileResult(source, "unchanged", existing.chunks, existing.pages, existing.chars,
                          doc_id=existing.doc_id)
    doc = load(path, source)
    yield IngestEvent(source, "chunking", index, total)
    doc_id = doc_id_for(source, sha)
    chunks = chunk_pages(doc_id, source, doc.pages, params)
    if not chunks:
        raise IngestError("No text found in the file.")
    yield IngestEvent(source, "embedding", index, total, f"{len(chunks)} chunks")
    record = kb.add_document(doc_id, source, sha, doc.page_count, chunks)
    status = "replaced" if existing is not None else "added"
    return FileResult(source, status, record.chunks, record.pages, record.chars,
                      reason="; ".join(doc.warnings), doc_id=doc_id)


def drain(events: Generator[IngestEvent, None, IngestReport],
          on_event: Callable[[IngestEvent], None] | None = None) -> IngestReport:
    """Run an ingestion generator to the end and return its report."""
    while True:
        try:
            event = next(events)
        except StopIteration as stop:
            return stop.value
        if on_event:
            on_event(event)
