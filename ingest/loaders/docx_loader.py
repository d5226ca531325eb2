"""Word: paragraphs, headings (as section paths), tables (merged cells once), text boxes,
headers and footers, in document order. Strict OOXML is mapped to transitional names
in memory; legacy binary ``.doc`` is refused with what to do."""
from __future__ import annotations

import io
import logging
import re
import zipfile
from pathlib import Path

from ingest.errors import IngestError
from ingest.loaders import register
from ingest.loaders.text import heading_sections, table_row
from ingest.quality import normalize
from ingest.types import LoadedDocument, Page

log = logging.getLogger(__name__)

W = "{http://schemas.openxmlformats.org/wordprocessingml/2006/main}"
_STRICT = re.compile(rb"http://purl\.oclc\.org/ooxml/(\w+)/(\w+)")
_HEADING_STYLE = re.compile(r"^(?:heading|überschrift|titre|título|标题)\s*(\d)$", re.IGNORECASE)


OLE_MAGIC = bytes.fromhex("d0cf11e0a1b11ae1")  # Word 97-2003 and other legacy Office files


@register(".doc")
def load_doc(path: Path, source: str, password: str | None = None) -> LoadedDocument:
    with path.open("rb") as f:
        legacy = f.read(8) == OLE_MAGIC
    if not legacy and zipfile.is_zipfile(path):  # a .docx saved with the old extension
        try:
            return load_docx(path, source, password)
        except IngestError as exc:
            raise IngestError(f"This .doc file is not a Word document Docent can read ({exc})") from exc
    raise IngestError("Legacy Word 97-2003 (.doc) files are not supported: open it in Word "
                      "or LibreOffice and save it as .docx, then add it again.")


def _open(path: Path):
    import docx

    if not zipfile.is_zipfile(path):
        raise IngestError("Not a Word .docx file (not a ZIP package); if it is an old .doc, "
                          "save it as .docx.")
    try:
        return docx.Document(str(path))
    except Exception as first:
        data = path.read_bytes()
        if b"purl.oclc.org/ooxml" not in data and not _has_strict_part(path):
            raise IngestError(f"Could not read the Word file ({type(first).__name__}: {first}). "
                              "Open and re-save it as .docx.") from first
    try:  # ISO 29500 Strict: same structure, other namespace names
        return docx.Document(io.BytesIO(_strict_to_transitional(path)))
    except Exception as exc:
        raise IngestError(f"Could not read this Strict Open XML document ({type(exc).__name__}). "
                          "Save it as a regular Word document (.docx).") from exc


def _has_strict_part(path: Path) -> bool:
    with zipfile.ZipFile(path) as z:
        return any(b"purl.oclc.org/ooxml" in z.read(n)[:4000] for n in z.namelist()
                   if n.endswith((".xml", ".rels")))


def _strict_to_transitional(path: Path) -> bytes:
    out = io.BytesIO()
    with zipfile.ZipFile(path) as src, zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as dst:
        for item in src.infolist():
            data = src.read(item.filename)
            if item.filename.endswith((".xml", ".rels")):
                data = _STRICT.sub(rb"http://schemas.openxmlformats.org/\1/2006/\2", data)
            dst.writestr(item, data)
    return out.getvalue()


def _paragraph_text(p) -> str:
    """Paragraph text including text boxes anchored in it (python-docx skips those)."""
    text = p.text.strip()
    boxes = []
    for box in p._p.iter(f"{W}txbxContent"):
        inner = "\n".join("".join(t.text or "" for t in para.iter(f"{W}t"))
                          for para in box.iter(f"{W}p"))
        if inner.strip():
            boxes.append(inner.strip())
    # a text box shows twice (DrawingML + VML fallback): keep one of each
    boxes = list(dict.fromkeys(boxes))
    return "\n".join([text, *boxes]).strip()


def _table_text(table) -> str:
    rows = []
    for row in table.rows:
        cells, last = [], None
        for cell in row.cells:
            if cell._tc is last:  # a horizontally merged cell repeats: keep it once
                continue
            last = cell._tc
            cells.append(cell.text)
        rows.append(table_row(cells))
    return "\n".join(rows)


def _heading_level(p) -> int | None:
    try:
        name = p.style.name if p.style is not None else ""
    except Exception:
        return None
    if name == "Title":
        return 0
    m = _HEADING_STYLE.match(name or "")
    return int(m.group(1)) if m else None


def _header_footer_blocks(document, kind: str) -> list[str]:
    seen: dict[str, None] = {}
    for section in document.sections:
        for part in (getattr(section, kind), getattr(section, f"even_page_{kind}"),
                     getattr(section, f"first_page_{kind}")):
            try:
                if part.is_linked_to_previous and part is not getattr(section, kind):
                    continue
                text = "\n".join(_paragraph_text(p) for p in part.paragraphs).strip()
            except Exception:
                continue
            if text:
                seen.setdefault(text, None)
    return list(seen)


@register(".docx", ".docm")
def load_docx(path: Path, source: str, password: str | None = None) -> LoadedDocument:
    from docx.table import Table
    from docx.text.paragraph import Paragraph

    document = _open(path)
    blocks: list[str] = []
    headings: list[tuple[int, int, str]] = []
    offset = 0

    def add(text: str) -> None:
        nonlocal offset
        blocks.append(text)
        offset += len(text) + 2

    for text in _header_footer_blocks(document, "header"):
        add(text)
    for block in document.iter_inner_content():
        if isinstance(block, Paragraph):
            text = _paragraph_text(block)
            if not text:
                continue
            level = _heading_level(block)
            if level:
                headings.append((offset, level, text.split("\n")[0]))
            add(text)
        elif isinstance(block, Table):
            add(_table_text(block))
    for text in _header_footer_blocks(document, "footer"):
        add(text)
    raw = "\n\n".join(blocks)
    text = normalize(raw)
    if len(text) != len(raw.strip()):  # normalisation moved offsets: locate headings again
        cursor, moved = 0, []
        for _, level, title in headings:
            found = text.find(title, cursor)
            if found >= 0:
                moved.append((found, level, title))
                cursor = found
        headings = moved
    return LoadedDocument(source, "docx", (Page(0, text, heading_sections(headings), "python-docx"),))
