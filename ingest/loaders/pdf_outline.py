"""Section headings of a PDF from its outline (bookmarks).

An outline entry names a page, not a place on it, so each title is looked for in that
page's text (case, spacing and line breaks ignored); a title not found there shares the
place of the entry before it on that page, or starts at the top of the page. A heading
carries over to the following pages until the next entry, as a DOCX heading does over
its paragraphs. ``pdf_fonts`` finds headings the same way for PDFs without an outline.
"""
from __future__ import annotations

import logging
import re
from dataclasses import dataclass, replace

from ingest.loaders.text import heading_sections
from ingest.quality import normalize
from ingest.types import Page

log = logging.getLogger(__name__)

MAX_TITLE = 200  # characters of a title that are looked for on its page


@dataclass(frozen=True)
class OutlineEntry:
    page: int  # 1-based
    level: int  # 1 for top-level entries
    title: str


def read_outline(reader) -> list[OutlineEntry]:
    """The outline of a pypdf ``PdfReader`` in outline order; [] when it has none or it
    cannot be read (a broken outline never stops the text from loading)."""
    try:
        return list(_walk(reader, reader.outline, 1))
    except Exception as exc:  # pypdf raises many types on broken outlines
        log.info("PDF outline not readable: %s: %s", type(exc).__name__, exc)
        return []


def _walk(reader, items, level: int):
    for item in items:
        if isinstance(item, list):
            yield from _walk(reader, item, level + 1)
            continue
        title = " ".join(normalize(str(getattr(item, "title", "") or "")).split())
        try:
            index = reader.get_destination_page_number(item)
        except Exception:  # a destination outside the document or malformed
            index = None
        if title and index is not None and index >= 0:
            yield OutlineEntry(index + 1, level, title)


def find_title(text: str, title: str, start: int = 0) -> int | None:
    """Offset of ``title`` in ``text`` at or after ``start``, ignoring case and spacing;
    at the start of a line if it is anywhere (a heading has its own line), else anywhere.

    >>> find_title("Intro\\n2.1  Dosing in\\nchildren\\nGive ...", "2.1 Dosing in Children")
    6
    >>> find_title("Mind the dosing of children.\\nDosing\\nGive 5 mg per kg.", "Dosing")
    29
    >>> find_title("no such words", "Dosing") is None
    True
    """
    chars = [c for c in title[:MAX_TITLE] if not c.isspace()]
    if not chars:
        return None
    pattern = r"\s*".join(map(re.escape, chars))
    match = (re.compile(r"(?:^|(?<=\n))[ \t]*" + pattern, re.IGNORECASE).search(text, start)
             or re.compile(pattern, re.IGNORECASE).search(text, start))
    if not match:
        return None
    return match.start() + len(match.group()) - len(match.group().lstrip(" \t"))


def with_outline(pages: list[Page], entries: list[OutlineEntry],
                 require_found: bool = False) -> list[Page]:
    """``pages`` with ``sections`` marking where each outline entry's heading path starts
    (``require_found``: entries whose title is not on their page are left out).

    >>> pages = [Page(1, "Preface text"), Page(2, "More.\\nGuide\\nDosing\\nTwo tablets."),
    ...          Page(3, "Three.")]
    >>> out = with_outline(pages, [OutlineEntry(2, 1, "Guide"), OutlineEntry(2, 2, "Dosing")])
    >>> [p.sections for p in out]
    [(), ((6, 'Guide > Dosing'),), ((0, 'Guide > Dosing'),)]
    """
    texts = {p.number: p.text for p in pages}
    placed = _place(texts, entries, require_found)
    paths = heading_sections([(i, e.level, e.title) for i, (_, _, e) in enumerate(placed)])
    marks: dict[int, list[tuple[int, str, str]]] = {}
    for (page, offset, e), (_, path) in zip(placed, paths):
        found = marks.setdefault(page, [])
        if found and _holds_only(texts[page][found[-1][0]:offset], found[-1][2]):
            offset = found.pop()[0]  # a heading right above the next: one section, not two
        found.append((offset, path, e.title))
    out, current = [], ""
    for page in pages:
        sections = [(0, current)] if current else []
        for offset, path, _ in marks.get(page.number, []):
            if sections and sections[-1][0] == offset:
                sections.pop()
            sections.append((offset, path))
        current = sections[-1][1] if sections else current
        out.append(replace(page, sections=tuple(sections)) if sections else page)
    return out


def _place(texts: dict[int, str], entries: list[OutlineEntry], require_found: bool
           ) -> list[tuple[int, int, OutlineEntry]]:
    """``(page, offset, entry)`` in document order. A title not found on its page shares
    the place of the entry before it there (or the top of the page)."""
    placed, cursor = [], {}
    for e in entries:
        if e.page not in texts:
            continue
        start = cursor.get(e.page, (0, 0))
        found = find_title(texts[e.page], e.title, start[1])
        if found is None and require_found:
            continue
        offset = found if found is not None else start[0]
        cursor[e.page] = (offset, offset + 1) if found is not None else start
        placed.append((e.page, offset, e))
    return sorted(placed, key=lambda p: p[:2])


def _holds_only(segment: str, title: str) -> bool:
    return re.sub(r"\W", "", segment).lower() == re.sub(r"\W", "", title).lower()
