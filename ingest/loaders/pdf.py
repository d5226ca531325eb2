"""PDF: pypdf first; per page, pdfminer.six or a GBK repair when pypdf garbles the text,
and OCR when the page is a scan (no text layer, or a garbage OCR layer). Section
headings come from the outline (bookmarks) when the PDF has one, else from font sizes."""
from __future__ import annotations

import logging
from pathlib import Path

from ingest import ocr
from ingest.errors import IngestError
from ingest.loaders import register
from ingest.loaders.pdf_fonts import LineSizes, detect_headings
from ingest.loaders.pdf_outline import read_outline, with_outline
from ingest.quality import (
    is_ocr_garbage, join_hyphenated_lines, looks_garbled, normalize, plausibility,
    repair_gbk_mojibake,
)
from ingest.types import LoadedDocument, Page

log = logging.getLogger(__name__)
logging.getLogger("pypdf").setLevel(logging.ERROR)
logging.getLogger("pdfminer").setLevel(logging.ERROR)

OCR_DPI = 300
SCAN_COVERAGE = 0.5  # an image over half the page makes it a scan


@register(".pdf", version=2)  # 2: section headings from the outline or font sizes
def load_pdf(path: Path, source: str, password: str | None = None) -> LoadedDocument:
    reader = _open(path, password)
    outline = read_outline(reader)
    pages, warnings, fonts = [], [], {}
    with _Pdfium(path, password) as pdfium_doc:
        for number, page in enumerate(reader.pages, start=1):
            sizes = None if outline else LineSizes()  # font sizes only stand in for an outline
            text, method, warning = _page_text(path, page, number, pdfium_doc, password, sizes)
            if warning:
                warnings.append(warning)
            if sizes is not None and method == "pypdf":  # they describe pypdf's text only
                fonts[number] = sizes.lines()
            pages.append(Page(number, join_hyphenated_lines(text), method=method))
    if not any(p.text for p in pages):
        if any("scanned" in w for w in warnings) and not ocr.available():
            reason = f"Scanned PDF with no usable text layer: {ocr.INSTALL_HINT}."
        elif warnings:
            reason = "No text found: " + "; ".join(warnings[:3])
        else:
            reason = "The PDF has no extractable text (no text layer and no page images)."
        warnings.insert(0, reason)
    if outline:
        pages = with_outline(pages, outline)
    else:  # headings only where their text is found on the page
        pages = with_outline(pages, detect_headings(fonts), require_found=True)
    return LoadedDocument(source, "pdf", tuple(pages), tuple(warnings))


def _open(path: Path, password: str | None):
    from pypdf import PdfReader
    from pypdf.errors import PdfReadError

    try:
        reader = PdfReader(str(path))
        if reader.is_encrypted:
            if not reader.decrypt(""):
                if not password:
                    raise IngestError("The PDF is encrypted: password required. Enter the "
                                      "password (UI password field, or CLI --password).")
                if not reader.decrypt(password):
                    raise IngestError("The PDF is encrypted and the password given is wrong: "
                                      "password required.")
        _ = len(reader.pages)
        return reader
    except IngestError:
        raise
    except (PdfReadError, ValueError, KeyError, OSError) as exc:
        raise IngestError(f"Not a readable PDF ({exc}). Re-export or repair the file.") from exc
    except Exception as exc:  # pypdf raises many types on broken files
        raise IngestError(f"Could not open the PDF: {type(exc).__name__}: {exc}") from exc


def _page_text(path, page, number, pdfium_doc, password,
               sizes: LineSizes | None) -> tuple[str, str, str]:
    """(text, method, warning) for one page; never raises for a bad page. ``sizes``, if
    given, sees pypdf's text with its font sizes."""
    try:
        visitor = sizes.visit if sizes is not None else None
        text, method = normalize(page.extract_text(visitor_text=visitor) or ""), "pypdf"
    except Exception as exc:
        log.warning("%s page %d: pypdf failed: %s", path.name, number, exc)
        text, method = "", "pypdf-failed"
    if text and looks_garbled(text):
        text, method = _best_extraction(path, number, text, password)
    is_scan = pdfium_doc.is_scan(number - 1)
    if is_scan and (not text or is_ocr_garbage(text)):
        if not ocr.available():
            return "", "none", f"page {number}: scanned page, {ocr.INSTALL_HINT}"
        # our own OCR at 300 dpi replaces an untrusted layer, even when still imperfect
        ocr_text = normalize(ocr.ocr_image(pdfium_doc.render(number - 1, OCR_DPI)))
        if ocr_text and plausibility(ocr_text) >= 0.5:
            return ocr_text, "ocr", ""
        return "", "none", f"page {number}: scanned page, OCR found no readable text"
    if text and looks_garbled(text) and plausibility(text) < 0.5:
        return "", "none", f"page {number}: text could not be decoded (font without a character map)"
    return text, method, ""


def _best_extraction(path: Path, number: int, text: str, password: str | None) -> tuple[str, str]:
    candidates = [(text, "pypdf")]
    fixed = repair_gbk_mojibake(text)
    if fixed:
        candidates.append((normalize(fixed), "pypdf+gbk-repair"))
    try:
        from pdfminer.high_level import extract_text
        from pdfminer.layout import LAParams

        mined = extract_text(str(path), password=password or "", page_numbers=[number - 1],
                             laparams=LAParams(detect_vertical=True))
        candidates.append((normalize(mined), "pdfminer"))
    except Exception as exc:
        log.info("%s page %d: pdfminer failed too: %s", path.name, number, exc)
    return max(candidates, key=lambda c: (plausibility(c[0]), len(c[0]) > 0))


class _Pdfium:
    """pypdfium2 view of the same file: page images (scan detection) and rendering."""

    def __init__(self, path: Path, password: str | None):
        self.path, self.password, self.doc = path, password, None

    def __enter__(self):
        try:
            import pypdfium2 as pdfium

            self.doc = pdfium.PdfDocument(str(self.path), password=self.password or None)
        except Exception as exc:  # scan detection is a best effort
            log.info("pdfium cannot open %s: %s", self.path.name, exc)
        return self

    def __exit__(self, *exc):
        if self.doc is not None:
            self.doc.close()

    def is_scan(self, index: int) -> bool:
        if self.doc is None:
            return False
        import pypdfium2.raw as pdfium_c

        page = self.doc[index]
        width, height = page.get_size()
        area = max(width * height, 1.0)
        covered = 0.0
        for obj in page.get_objects(filter=[pdfium_c.FPDF_PAGEOBJ_IMAGE], max_depth=2):
            left, bottom, right, top = obj.get_bounds()
            covered = max(covered, (right - left) * (top - bottom) / area)
        return covered >= SCAN_COVERAGE

    def render(self, index: int, dpi: int):
        return self.doc[index].render(scale=dpi / 72).to_pil()
