"""Data that flows through ingestion."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal


@dataclass(frozen=True)
class Page:
    """Text of one page (``number`` from 1), or of a whole page-less file (``number`` 0).

    ``sections`` marks where heading paths start: ``((0, "Intro"), (120, "Intro > Dosing"))``.
    ``method`` names the extractor that produced the text (pypdf, pdfminer, ocr, ...).
    """

    number: int
    text: str
    sections: tuple[tuple[int, str], ...] = ()
    method: str = ""


@dataclass(frozen=True)
class LoadedDocument:
    source: str
    kind: str
    pages: tuple[Page, ...]
    warnings: tuple[str, ...] = ()

    @property
    def page_count(self) -> int:
        return sum(1 for p in self.pages if p.number > 0)

    @property
    def chars(self) -> int:
        return sum(len(p.text) for p in self.pages)


Stage = Literal["queued", "loading", "re-embedding", "chunking", "embedding", "done",
                "unchanged", "failed", "deleted"]


@dataclass(frozen=True)
class IngestEvent:
    """Progress of one batch: file ``index`` of ``total`` reached ``stage``."""

    source: str
    stage: Stage
    index: int
    total: int
    message: str = ""

    @property
    def fraction(self) -> float:
        finished = self.stage in ("done", "unchanged", "failed", "deleted")
        return min(1.0, (self.index + (1 if finished else 0.5)) / max(self.total, 1))


@dataclass(frozen=True)
class FileResult:
    source: str
    status: Literal["added", "replaced", "unchanged", "failed", "deleted"]
    chunks: int = 0
    pages: int = 0
    chars: int = 0
    seconds: float = 0.0
    reason: str = ""
    doc_id: str = ""
    duplicates: int = 0  # chunks already in the knowledge base (recorded, not embedded)


@dataclass(frozen=True)
class IngestReport:
    results: tuple[FileResult, ...] = field(default_factory=tuple)

    @property
    def succeeded(self) -> list[FileResult]:
        return [r for r in self.results if r.status in ("added", "replaced")]

    @property
    def failed(self) -> list[FileResult]:
        return [r for r in self.results if r.status == "failed"]

    @property
    def unchanged(self) -> list[FileResult]:
        return [r for r in self.results if r.status == "unchanged"]

    @property
    def deleted(self) -> list[FileResult]:
        return [r for r in self.results if r.status == "deleted"]

    @property
    def duplicates(self) -> int:
        return sum(r.duplicates for r in self.results)

    def summary(self) -> str:
        parts = [f"{len(self.succeeded)} ingested", f"{len(self.unchanged)} unchanged",
                 f"{len(self.failed)} failed"]
        if self.deleted:
            parts.append(f"{len(self.deleted)} deleted")
        if self.duplicates:
            parts.append(f"{self.duplicates} duplicate chunks skipped")
        return ", ".join(parts)
