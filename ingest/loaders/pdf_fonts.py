"""Section headings of a PDF without an outline, from its font sizes.

pypdf reports the font size of every piece of text it extracts. The size that holds the
most characters is the body text; a line set entirely in a size at least ``MIN_RATIO``
times larger, short and mostly letters, is a heading, its level the rank of its size
among the heading sizes. Lines repeated on many pages (running headers) are not
headings, and a document whose "headings" would be a large share of its lines (slides
of big text, forms) gets none: a wrong heading costs more than a missing one.
"""
from __future__ import annotations

import math
from collections import Counter

from ingest.loaders.pdf_outline import OutlineEntry
from ingest.quality import normalize

MIN_RATIO = 1.15  # Word's Heading 2 (13 pt) over 11 pt body text is 1.18
MAX_LEVELS = 3
MAX_TITLE = 300  # characters, over all the lines of a heading that wraps; longer is a paragraph
MAX_SHARE = 0.2  # of a document's lines


class LineSizes:
    """A pypdf ``visitor_text`` that keeps each text line of a page with the smallest
    font size on it (every piece of a heading line is large)."""

    def __init__(self):
        self._lines: list[list] = [["", 0.0]]

    def visit(self, text, cm, tm, font_dict, font_size) -> None:
        try:
            size = float(font_size) * math.hypot(tm[2], tm[3]) * math.hypot(cm[2], cm[3])
        except (TypeError, ValueError, IndexError):
            size = 0.0
        for i, part in enumerate(str(text).split("\n")):
            if i:
                self._lines.append(["", 0.0])
            if part.strip():
                line = self._lines[-1]
                line[0] += part
                line[1] = size if not line[1] else min(line[1], size)

    def lines(self) -> list[tuple[str, float]]:
        return [(" ".join(normalize(t).split()), round(s * 2) / 2)
                for t, s in self._lines if t.strip() and s > 0]


def detect_headings(pages: dict[int, list[tuple[str, float]]]) -> list[OutlineEntry]:
    """Headings found in the lines of each page (``{page number: [(text, size)]}``).

    >>> body = [("Some body text in eleven point type.", 11.0)] * 8
    >>> pages = {1: [("Dosing", 16.0), ("In children", 13.0)] + body,
    ...          2: body + [("Storage", 16.0)] + body}
    >>> [(e.page, e.level, e.title) for e in detect_headings(pages)]
    [(1, 1, 'Dosing'), (1, 2, 'In children'), (2, 1, 'Storage')]
    """
    chars = Counter()
    for lines in pages.values():
        for text, size in lines:
            chars[size] += len(text)
    if not chars:
        return []
    body = chars.most_common(1)[0][0]
    repeated = _running_lines(pages)
    found = [(number, text, size) for number, lines in sorted(pages.items())
             for text, size in _joined(lines, MIN_RATIO * body)
             if size >= MIN_RATIO * body and _title_like(text) and text not in repeated]
    total = sum(len(lines) for lines in pages.values())
    if not found or len(found) > MAX_SHARE * total:
        return []
    sizes = sorted({size for *_, size in found}, reverse=True)
    return [OutlineEntry(number, min(sizes.index(size) + 1, MAX_LEVELS), text)
            for number, text, size in found]


def _joined(lines: list[tuple[str, float]], large: float) -> list[tuple[str, float]]:
    """Consecutive large lines of one size joined: a heading that wraps is one title."""
    out: list[tuple[str, float]] = []
    for text, size in lines:
        if out and size >= large and out[-1][1] == size:
            out[-1] = (out[-1][0] + " " + text, size)
        else:
            out.append((text, size))
    return out


def _title_like(text: str) -> bool:
    letters = sum(c.isalpha() for c in text)
    return 3 <= len(text) <= MAX_TITLE and letters >= 0.5 * len(text.replace(" ", ""))


def _running_lines(pages: dict[int, list[tuple[str, float]]]) -> set[str]:
    """Lines found on a third of the pages or more (and on three at least): running
    headers and footers."""
    seen = Counter(text for lines in pages.values() for text in {t for t, _ in lines})
    limit = max(3, len(pages) / 3)
    return {text for text, n in seen.items() if n >= limit}
