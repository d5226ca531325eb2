"""What a citation points to: the cited passage, where the quote sits in it, and the
PDF page it is on, rendered to PNG from the knowledge base's stored original.

>>> quote_span("Take 500 mg. Rest well.", "Rest well.")
(13, 23)
>>> text = "For adults, the usual dose of amoxicillin is 500 mg every 8 hours."
>>> quote_span(text, "the usual dose of amoxicillin…")   # shortened with "…"
(12, 41)
>>> quote_span(text, "For  ADULTS, the usual … 8 hours.")  # case, spaces, a gap
(0, 66)
>>> quote_span(text, "nothing like it") is None
True
"""
from __future__ import annotations

import difflib
import logging
import os
import re
import subprocess
import sys
import uuid
from dataclasses import dataclass
from pathlib import Path

from knowledge.base import PAGE_CACHE, KnowledgeBase

log = logging.getLogger(__name__)

RENDER_SCALE = 1.5  # 108 dpi: body text is readable; a Letter page is 918 x 1188 px
RENDER_TIMEOUT_S = 60
MIN_FUZZY_CHARS = 12  # a fuzzy match shorter than this (and than the piece) is no match
_ELLIPSIS = re.compile(r"…|\.\.\.")

# pdfium is not thread-safe and ingestion uses it at the same time, so a page is rendered
# in a short-lived child process (which also keeps a malformed PDF from taking the app down)
_RENDER = """
import sys
import pypdfium2 as pdfium
pdf, index, scale, out = sys.argv[1], int(sys.argv[2]), float(sys.argv[3]), sys.argv[4]
doc = pdfium.PdfDocument(pdf)
if index >= len(doc):
    sys.exit(3)
doc[index].render(scale=scale).to_pil().save(out, format="PNG")
"""


@dataclass(frozen=True)
class CitationView:
    """A cited passage: ``text`` is the chunk's text, ``span`` the (start, end) characters
    of the quote in it (None when the quote is not found), ``page_image`` the PDF page as
    a PNG (None for other formats or when the original is missing or unreadable)."""

    chunk_id: str
    kb: str
    source: str
    page: int
    text: str
    span: tuple[int, int] | None
    page_image: Path | None
    heading: str = ""

    @property
    def label(self) -> str:
        return f"{self.source}, p. {self.page}" if self.page else self.source

    @property
    def quote(self) -> str:
        return self.text[self.span[0]:self.span[1]] if self.span else ""


def citation_view(kb: KnowledgeBase, chunk_id: str, quote: str = "",
                  scale: float = RENDER_SCALE) -> CitationView:
    """The view of ``chunk_id`` in ``kb``; an unknown chunk raises ``KnowledgeError``."""
    chunk = kb.chunk(chunk_id)
    image = None
    if chunk.page >= 1:
        image = render_page(kb.original_path(chunk.doc_id), chunk.page, kb.root / PAGE_CACHE,
                            scale)
    return CitationView(chunk.chunk_id, kb.name, chunk.source, chunk.page, chunk.text,
                        quote_span(chunk.text, quote), image, chunk.heading)


# --- the quote's span ---------------------------------------------------------------
def _normalized(text: str) -> tuple[str, list[int]]:
    """``text`` lower-cased with runs of whitespace as one space, and for each character
    of the result its index in ``text``."""
    out: list[str] = []
    where: list[int] = []
    for i, ch in enumerate(text):
        if ch.isspace():
            if out and out[-1] == " ":
                continue
            ch = " "
        out.append(ch.lower())
        where.append(i)
    return "".join(out), where


def _find(haystack: str, needle: str, start: int) -> tuple[int, int] | None:
    """``needle`` in ``haystack`` from ``start``: exactly, else its longest common block
    when that covers most of it."""
    at = haystack.find(needle, start)
    if at >= 0:
        return at, at + len(needle)
    matcher = difflib.SequenceMatcher(None, haystack, needle, autojunk=False)
    block = matcher.find_longest_match(start, len(haystack), 0, len(needle))
    if block.size >= min(len(needle), max(MIN_FUZZY_CHARS, int(0.6 * len(needle)))):
        return block.a, block.a + block.size
    return None


def quote_span(text: str, quote: str) -> tuple[int, int] | None:
    """Characters (start, end) of ``text`` that ``quote`` shows. The quote may differ in
    case and spacing, and may be shortened with "…" (its pieces are found in order; the
    span runs from the first to the last). None when no piece is found."""
    pieces = [p.strip() for p in _ELLIPSIS.split(quote or "")]
    pieces = [_normalized(p)[0] for p in pieces if p]
    if not pieces or not text:
        return None
    haystack, where = _normalized(text)
    found: list[tuple[int, int]] = []
    cursor = 0
    for piece in pieces:
        hit = _find(haystack, piece, cursor)
        if hit is not None:
            found.append(hit)
            cursor = hit[1]
    if not found:
        return None
    return where[found[0][0]], where[found[-1][1] - 1] + 1


# --- the page image -----------------------------------------------------------------
def render_page(pdf: Path, page: int, cache: Path, scale: float = RENDER_SCALE) -> Path | None:
    """Page ``page`` (1-based) of ``pdf`` as a PNG under ``cache``, rendered once and
    reused; None when the file is missing, the page does not exist or pdfium fails
    (an encrypted original, for one: its password is not kept)."""
    if page < 1 or not pdf.is_file():
        return None
    target = cache / f"{pdf.stem}-p{page}-x{round(scale * 100)}.png"
    if target.is_file():
        return target
    cache.mkdir(parents=True, exist_ok=True)
    tmp = target.with_suffix(f".{uuid.uuid4().hex[:8]}.tmp")
    try:
        done = subprocess.run([sys.executable, "-I", "-c", _RENDER, str(pdf), str(page - 1),
                               str(scale), str(tmp)], capture_output=True, text=True,
                              timeout=RENDER_TIMEOUT_S, check=False)
        if done.returncode != 0 or not tmp.is_file():
            why = (done.stderr.strip().splitlines() or [f"exit status {done.returncode}"])[-1]
            log.warning("Could not render page %d of %s: %s", page, pdf.name, why)
            return None
        os.replace(tmp, target)
    except subprocess.TimeoutExpired:
        log.warning("Rendering page %d of %s took over %d s", page, pdf.name, RENDER_TIMEOUT_S)
        return None
    finally:
        tmp.unlink(missing_ok=True)
    return target
