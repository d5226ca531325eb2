"""Data that flows out of the knowledge layer. Framework types never leak past here."""
from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class Chunk:
    """A piece of one document, the unit that is embedded, indexed and cited.

    ``start``/``end`` are character offsets into the text of ``page`` (1-based page
    number; 0 when the format has no pages).
    """

    chunk_id: str
    doc_id: str
    source: str
    text: str
    page: int
    start: int
    end: int
    ordinal: int
    heading: str = ""

    @property
    def index_text(self) -> str:
        """What is embedded and keyword-indexed: the heading path, then the text, so a
        chunk deep in a section still matches the section's title."""
        return f"{self.heading}\n{self.text}" if self.heading else self.text


@dataclass(frozen=True)
class Hit:
    """A chunk found for a query, with the score from each retriever that found it."""

    chunk: Chunk
    score: float
    kb: str = ""
    scores: dict[str, float] = field(default_factory=dict, compare=False, hash=False)


@dataclass(frozen=True)
class DocumentRecord:
    """What a knowledge base knows about one ingested file."""

    doc_id: str
    source: str
    sha256: str
    pages: int
    chunks: int
    chars: int
    added_at: str
    duplicates: int = 0  # chunks recorded as duplicates of chunks elsewhere (not embedded)
    origin: str = ""  # absolute path of the file it came from, when known (folder sync)
    reader: str = ""  # the loader and version that read it ("pdf/2"; "" before they were kept)
