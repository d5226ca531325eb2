"""Split page text into overlapping chunks on paragraph and sentence boundaries.

Sizes are counted in approximate model tokens: a Latin word or number counts one,
each Han character counts one, each punctuation mark counts one. A chunk's text is
exactly ``page.text[start:end]``, so a quote can always be found again on its page.

>>> text = "First sentence here. Second one! Third?\\n\\nNew paragraph."
>>> [text[s:e] for s, e in sentence_spans(text)]
['First sentence here.', 'Second one!', 'Third?', 'New paragraph.']
>>> zh = "他发烧了。需要休息！好的"
>>> [zh[s:e] for s, e in sentence_spans(zh)]
['他发烧了。', '需要休息！', '好的']
"""
from __future__ import annotations

import hashlib
import re
from collections.abc import Sequence
from dataclasses import dataclass

from ingest.types import Page
from knowledge.types import Chunk

_TOKEN = re.compile(r"[\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff]|\w+|[^\w\s]", re.UNICODE)
_PARAGRAPH = re.compile(r"\n\s*\n")
# End of a sentence: Latin .!? (+ closing quotes/brackets) before whitespace, or CJK 。！？；
_SENTENCE_END = re.compile(r"(?:[.!?]+[\"'”’)\]]*(?=\s)|[。！？；]+[”’」』）]*)")


@dataclass(frozen=True)
class ChunkingParams:
    chunk_size: int = 220
    chunk_overlap: int = 40

    def __post_init__(self):
        if self.chunk_size < 8:
            raise ValueError("chunk_size must be at least 8 tokens")
        if not 0 <= self.chunk_overlap < self.chunk_size:
            raise ValueError("chunk_overlap must be >= 0 and smaller than chunk_size")


def count_tokens(text: str) -> int:
    return len(_TOKEN.findall(text))


def sentence_spans(text: str) -> list[tuple[int, int]]:
    """Character spans of sentences (never crossing a paragraph break), stripped."""
    spans: list[tuple[int, int]] = []
    para_start = 0
    for para_end in [m.start() for m in _PARAGRAPH.finditer(text)] + [len(text)]:
        cut = para_start
        for m in _SENTENCE_END.finditer(text, para_start, para_end):
            spans.append((cut, m.end()))
            cut = m.end()
        spans.append((cut, para_end))
        para_start = para_end
    return [s for s in (_strip(text, a, b) for a, b in spans) if s[1] > s[0]]


def _strip(text: str, a: int, b: int) -> tuple[int, int]:
    while a < b and text[a].isspace():
        a += 1
    while b > a and text[b - 1].isspace():
        b -= 1
    return a, b


def _split_long(text: str, span: tuple[int, int], size: int) -> list[tuple[int, int]]:
    """Cut a sentence longer than ``size`` tokens at token boundaries."""
    start, end = span
    tokens = list(_TOKEN.finditer(text, start, end))
    if len(tokens) <= size:
        return [span]
    out = []
    for i in range(0, len(tokens), size):
        group = tokens[i : i + size]
        out.append((group[0].start(), group[-1].end()))
    return out


def chunk_spans(text: str, params: ChunkingParams) -> list[tuple[int, int]]:
    """Spans of chunks over ``text``: whole sentences packed up to ``chunk_size`` tokens,
    each chunk starting with the last ``chunk_overlap`` tokens' worth of sentences
    of the chunk before it."""
    units = [u for s in sentence_spans(text) for u in _split_long(text, s, params.chunk_size)]
    sizes = [count_tokens(text[a:b]) for a, b in units]
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


def doc_id_for(source: str, sha256: str) -> str:
    return hashlib.sha256(f"{source}\0{sha256}".encode()).hexdigest()[:16]


def chunk_pages(doc_id: str, source: str, pages: Sequence[Page],
                params: ChunkingParams) -> list[Chunk]:
    """Chunks for every page, numbered in document order."""
    out: list[Chunk] = []
    for page in pages:
        for start, end in chunk_spans(page.text, params):
            ordinal = len(out)
            out.append(Chunk(
                chunk_id=f"{doc_id}-{ordinal:05d}", doc_id=doc_id, source=source,
                text=page.text[start:end], page=page.number, start=start, end=end,
                ordinal=ordinal,
            ))
    return out
