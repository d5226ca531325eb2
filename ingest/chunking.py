"""Split page text into overlapping chunks on paragraph and sentence boundaries.

Sizes are counted in approximate model tokens: a Latin word or number counts one,
each Han character counts one, each punctuation mark counts one. A chunk's text is
exactly ``page.text[start:end]``, so a quote can always be found again on its page.
"""
from __future__ import annotations

import hashlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from common.text import TOKEN, count_tokens, sentence_units
from ingest.types import Page
from knowledge.types import Chunk



@dataclass(frozen=True)
class ChunkingParams:
    chunk_size: int = 220
    chunk_overlap: int = 40

    def __post_init__(self):
        if self.chunk_size < 8:
            raise ValueError("chunk_size must be at least 8 tokens")
        if not 0 <= self.chunk_overlap < self.chunk_size:
            raise ValueError("chunk_overlap must be >= 0 and smaller than chunk_size")


def _split_long(text: str, span: tuple[int, int], size: int,
                count: Callable[[str], int]) -> list[tuple[int, int]]:
    """Cut a sentence longer than ``size`` tokens at word boundaries."""
    start, end = span
    if count(text[start:end]) <= size:
        return [span]
    words = list(TOKEN.finditer(text, start, end))
    per_piece = max(1, int(len(words) * size / max(count(text[start:end]), 1)))
    return [(words[i].start(), words[min(i + per_piece, len(words)) - 1].end())
            for i in range(0, len(words), per_piece)]


def chunk_spans(text: str, params: ChunkingParams, count: Callable[[str], int] = count_tokens,
                lo: int = 0, hi: int | None = None) -> list[tuple[int, int]]:
    """Spans of chunks over ``text[lo:hi]``: whole sentences and table rows packed up to
    ``chunk_size`` tokens (as ``count`` counts them), each chunk starting with the last
    ``chunk_overlap`` tokens' worth of units of the chunk before it. A table row longer
    than a chunk stays whole."""
    hi = len(text) if hi is None else hi
    units: list[tuple[int, int]] = []
    for a, b, is_row in sentence_units(text, lo, hi):
        units.extend([(a, b)] if is_row else _split_long(text, (a, b), params.chunk_size, count))
    sizes = [count(text[a:b]) for a, b in units]
    chunks, i = [], 0
    while i < len(units):
        j, total = i, sizes[i]
        while j + 1 < len(units) and total + sizes[j + 1] <= params.chunk_size:
            j += 1
            total += sizes[j]
        chunks.append((units[i][0], units[j][1]))
        if j + 1 >= len(units):
            break
        nxt, back = j + 1, 0
        while nxt - 1 > i and back + sizes[nxt - 1] <= params.chunk_overlap:
            nxt -= 1
            back += sizes[nxt]
        i = nxt
    return chunks


def _section_windows(page: Page) -> list[tuple[int, int, str]]:
    """``(start, end, heading path)`` windows of a page: chunks never cross a heading."""
    marks = [(0, "")] + [(o, h) for o, h in page.sections if 0 < o < len(page.text)]
    if page.sections and page.sections[0][0] == 0:
        marks[0] = (0, page.sections[0][1])
    marks.sort()
    ends = [o for o, _ in marks[1:]] + [len(page.text)]
    return [(start, end, heading) for (start, heading), end in zip(marks, ends) if end > start]


def doc_id_for(source: str, sha256: str, reader: str = "") -> str:
    """A document's id: the same file read by a newer loader gets a new one, so the
    re-read version replaces the old like a changed file does."""
    key = f"{source}\0{sha256}" + (f"\0{reader}" if reader else "")
    return hashlib.sha256(key.encode()).hexdigest()[:16]


def chunk_pages(doc_id: str, source: str, pages: Sequence[Page], params: ChunkingParams,
                count: Callable[[str], int] = count_tokens) -> list[Chunk]:
    """Chunks for every page, numbered in document order, each with its heading path."""
    out: list[Chunk] = []
    for page in pages:
        for lo, hi, heading in _section_windows(page):
            for start, end in chunk_spans(page.text, params, count, lo, hi):
                ordinal = len(out)
                out.append(Chunk(
                    chunk_id=f"{doc_id}-{ordinal:05d}", doc_id=doc_id, source=source,
                    text=page.text[start:end], page=page.number, start=start, end=end,
                    ordinal=ordinal, heading=heading,
                ))
    return out
