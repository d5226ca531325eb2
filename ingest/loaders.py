"""File loaders behind a registry keyed by file extension.

Each loader takes a path and returns a ``LoadedDocument`` or raises ``IngestError``
with a reason a user can act on.
"""
from __future__ import annotations

import codecs
import logging
from collections.abc import Callable
from pathlib import Path

from ingest.errors import IngestError
from ingest.types import LoadedDocument, Page

log = logging.getLogger(__name__)

Loader = Callable[[Path, str], LoadedDocument]
_REGISTRY: dict[str, Loader] = {}


def register(*extensions: str) -> Callable[[Loader], Loader]:
    def wrap(fn: Loader) -> Loader:
        for ext in extensions:
            if ext in _REGISTRY:
                raise ValueError(f"A loader for {ext} is already registered")
            _REGISTRY[ext] = fn
        return fn
    return wrap


def supported_extensions() -> list[str]:
    return sorted(_REGISTRY)


def load(path: Path, source: str | None = None) -> LoadedDocument:
    """Load ``path`` with the loader for its extension."""
    source = source or path.name
    ext = path.suffix.lower()
    loader = _REGISTRY.get(ext)
    if loader is None:
        raise IngestError(
            f"Unsupported file type {ext or '(none)'}: Docent reads "
            f"{', '.join(supported_extensions())}."
        )
    if path.stat().st_size == 0:
        raise IngestError("The file is empty (0 bytes).")
    doc = loader(path, source)
    if not any(p.text.strip() for p in doc.pages):
        raise IngestError(doc.warnings[0] if doc.warnings else "No text found in the file.")
    return doc


# --- PDF -----------------------------------------------------------------------
@register(".pdf")
def load_pdf(path: Path, source: str) -> LoadedDocument:
    from pypdf import PdfReader
    from pypdf.errors import PdfReadError

    try:
        reader = PdfReader(str(path))
        if reader.is_encrypted and not reader.decrypt(""):
            raise IngestError("The PDF is password-protected: password required.")
        raw_pages = list(reader.pages)
    except IngestError:
        raise
    except (PdfReadError, ValueError, KeyError, OSError) as exc:
        raise IngestError(f"Not a readable PDF ({exc}). Re-export or repair the file.") from exc
    except Exception as exc:  # pypdf raises many types on broken files
        raise IngestError(f"Could not open the PDF: {type(exc).__name__}: {exc}") from exc

    pages, warnings = [], []
    for number, page in enumerate(raw_pages, start=1):
        try:
            text = page.extract_text() or ""
        except Exception as exc:  # one bad page must not lose the others
            log.warning("%s page %d: %s", source, number, exc)
            warnings.append(f"page {number} could not be read ({type(exc).__name__})")
            text = ""
        pages.append(Page(number, _clean(text)))
    if not any(p.text.strip() for p in pages):
        warnings.insert(0, "The PDF has no text layer (a scanned document?). "
                           "OCR is needed to read it.")
    return LoadedDocument(source, "pdf", tuple(pages), tuple(warnings))


# --- DOCX ----------------------------------------------------------------------
@register(".docx")
def load_docx(path: Path, source: str) -> LoadedDocument:
    import docx
    from docx.table import Table
    from docx.text.paragraph import Paragraph

    try:
        document = docx.Document(str(path))
    except Exception as exc:
        raise IngestError(
            f"Could not read the Word file ({type(exc).__name__}). Save it as a regular "
            ".docx (not Strict Open XML) and try again."
        ) from exc
    blocks: list[str] = []
    for block in document.iter_inner_content():
        if isinstance(block, Paragraph):
            if block.text.strip():
                blocks.append(block.text.strip())
        elif isinstance(block, Table):
            blocks.append(_table_markdown(block))
    return LoadedDocument(source, "docx", (Page(0, _clean("\n\n".join(blocks))),))


def _table_markdown(table) -> str:
    rows = []
    for row in table.rows:
        cells, last = [], None
        for cell in row.cells:
            if cell._tc is last:  # a merged cell repeats: keep it once
                continue
            last = cell._tc
            cells.append(" ".join(cell.text.split()).replace("|", "/"))
        rows.append("| " + " | ".join(cells) + " |")
    return "\n".join(rows)


# --- plain text ------------------------------------------------------------------
@register(".txt", ".md", ".markdown", ".csv")
def load_text(path: Path, source: str) -> LoadedDocument:
    text = decode_bytes(path.read_bytes())
    if not text.strip():
        raise IngestError("The file holds only whitespace.")
    return LoadedDocument(source, path.suffix.lower().lstrip("."), (Page(0, _clean(text)),))


_BOMS = [
    (codecs.BOM_UTF32_LE, "utf-32"), (codecs.BOM_UTF32_BE, "utf-32"),
    (codecs.BOM_UTF8, "utf-8-sig"), (codecs.BOM_UTF16_LE, "utf-16"), (codecs.BOM_UTF16_BE, "utf-16"),
]


def decode_bytes(data: bytes) -> str:
    """Decode text of unknown encoding: BOM, then UTF-8, then the most plausible of
    charset-normalizer's candidates and the legacy encodings of Docent's languages.

    Short texts fool statistical detectors (latin-1 German read as Arabic cp1256), so
    candidates are ranked by how much of the decoded text is Latin, Vietnamese or Han
    script, the detector's order breaking ties.
    """
    for bom, encoding in _BOMS:
        if data.startswith(bom):
            return data.decode(encoding)
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        pass
    from charset_normalizer import from_bytes

    candidates = [m.encoding for m in from_bytes(data)] + ["gb18030", "big5", "cp1252", "latin-1"]
    best, best_score = None, -1.0
    for rank, encoding in enumerate(dict.fromkeys(candidates)):
        try:
            text = data.decode(encoding)
        except (UnicodeDecodeError, LookupError):
            continue
        score = _plausibility(text) - rank * 1e-3
        if score > best_score:
            best, best_score = text, score
    if best is None:
        raise IngestError("Could not detect the text encoding; save the file as UTF-8.")
    return best


def _plausibility(text: str) -> float:
    """Share of characters in scripts Docent's users write (ASCII, Latin incl.
    Vietnamese, Han, CJK punctuation); other letters count half."""
    if not text:
        return 0.0
    good = 0.0
    for ch in text:
        o = ord(ch)
        if o < 0x80 or 0xC0 <= o <= 0x24F or 0x1E00 <= o <= 0x1EFF or 0x3000 <= o <= 0x9FFF \
                or 0xFF00 <= o <= 0xFFEF or ch in "‘’“”–—…°µ":
            good += 1
        elif ch.isalpha():
            good += 0.5
    return good / len(text)


def _clean(text: str) -> str:
    text = text.replace("\x00", "").replace("\r\n", "\n").replace("\r", "\n")
    return "\n".join(line.rstrip() for line in text.split("\n")).strip()
