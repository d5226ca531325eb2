"""Plain text, Markdown, CSV and HTML, in any common encoding. HTML is reduced to text
by a parser, never rendered."""
from __future__ import annotations

import codecs
import csv
import io
import re
from html.parser import HTMLParser
from pathlib import Path

from ingest.errors import IngestError
from ingest.loaders import register
from ingest.quality import known_word_ratio, normalize, plausibility
from ingest.types import LoadedDocument, Page

_BOMS = [
    (codecs.BOM_UTF32_LE, "utf-32"), (codecs.BOM_UTF32_BE, "utf-32"),
    (codecs.BOM_UTF8, "utf-8-sig"), (codecs.BOM_UTF16_LE, "utf-16"), (codecs.BOM_UTF16_BE, "utf-16"),
]


def _utf16_32_without_bom(data: bytes) -> str | None:
    """UTF-16/32 without a BOM shows as NUL bytes in fixed positions."""
    if len(data) < 4:
        return None
    head = data[:4000]
    for encoding, width, offsets in (("utf-32-le", 4, (1, 2, 3)), ("utf-32-be", 4, (0, 1, 2)),
                                     ("utf-16-le", 2, (1,)), ("utf-16-be", 2, (0,))):
        if len(data) % width:
            continue
        n = len(head) // width
        zeros = sum(head[i * width + o] == 0 for i in range(n) for o in offsets)
        if zeros >= 0.7 * n * len(offsets):
            try:
                return data.decode(encoding)
            except UnicodeDecodeError:
                continue
    return None


def decode_bytes(data: bytes) -> str:
    """Decode text of unknown encoding: BOM, UTF-16/32 by NUL pattern, UTF-8, then the
    most plausible of charset-normalizer's candidates and the legacy encodings of
    Docent's languages: plausible script first (short texts fool statistical detectors,
    e.g. latin-1 German read as Arabic cp1256), then real words (cp1252 "très" against
    cp1250 "trčs"), then the detector's order.

    >>> decode_bytes("Müller, Größe".encode("latin-1"))
    'Müller, Größe'
    >>> decode_bytes("糖化血红蛋白".encode("gb18030"))
    '糖化血红蛋白'
    """
    for bom, encoding in _BOMS:
        if data.startswith(bom):
            return data.decode(encoding)
    wide = _utf16_32_without_bom(data)
    if wide is not None:
        return wide
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        pass
    from charset_normalizer import from_bytes

    candidates = [m.encoding for m in from_bytes(data)] + ["gb18030", "big5", "cp1252", "latin-1"]
    best, best_score = None, -1.0
    for rank, encoding in enumerate(dict.fromkeys(candidates)):
        try:
            decoded = data.decode(encoding)
        except (UnicodeDecodeError, LookupError):
            continue
        words = known_word_ratio(decoded)  # tells cp1252 "très" from cp1250 "trčs"
        score = plausibility(decoded) + 0.5 * (words or 0.0) - rank * 1e-3
        if score > best_score:
            best, best_score = decoded, score
    if best is None:
        raise IngestError("Could not detect the text encoding; save the file as UTF-8.")
    return best


def _read(path: Path) -> str:
    text = normalize(decode_bytes(path.read_bytes()))
    if not text.strip():
        raise IngestError("The file holds only whitespace.")
    return text


@register(".txt", ".text", ".log")
def load_txt(path: Path, source: str, password: str | None = None) -> LoadedDocument:
    return LoadedDocument(source, "txt", (Page(0, _read(path), method="text"),))


_MD_HEADING = re.compile(r"^(#{1,6})\s+(.+?)\s*#*\s*$", re.MULTILINE)


def heading_sections(headings: list[tuple[int, int, str]]) -> tuple[tuple[int, str], ...]:
    """``(offset, level, title)`` headings to ``(offset, "A > B")`` section starts."""
    stack: list[tuple[int, str]] = []
    out = []
    for offset, level, title in headings:
        while stack and stack[-1][0] >= level:
            stack.pop()
        stack.append((level, title.strip()))
        out.append((offset, " > ".join(t for _, t in stack)))
    return tuple(out)


@register(".md", ".markdown")
def load_markdown(path: Path, source: str, password: str | None = None) -> LoadedDocument:
    text = _read(path)
    heads = [(m.start(), len(m.group(1)), m.group(2)) for m in _MD_HEADING.finditer(text)]
    return LoadedDocument(source, "md", (Page(0, text, heading_sections(heads), "markdown"),))


def table_row(cells: list[str]) -> str:
    """One Markdown table row; a row is never split by chunking."""
    return "| " + " | ".join(" ".join(c.split()).replace("|", "/") for c in cells) + " |"


@register(".csv", ".tsv")
def load_csv(path: Path, source: str, password: str | None = None) -> LoadedDocument:
    raw = _read(path)
    try:
        dialect = csv.Sniffer().sniff(raw[:4096], delimiters=",;\t|")
    except csv.Error:
        dialect = csv.excel_tab if path.suffix.lower() == ".tsv" else csv.excel
    rows = [r for r in csv.reader(io.StringIO(raw), dialect) if any(c.strip() for c in r)]
    if not rows:
        raise IngestError("The CSV file has no rows.")
    text = "\n".join(table_row(r) for r in rows)
    return LoadedDocument(source, "csv", (Page(0, text, method="csv"),))


class _HTMLText(HTMLParser):
    BLOCK = {"p", "div", "br", "li", "tr", "section", "article", "header", "footer", "ul", "ol",
             "table", "h1", "h2", "h3", "h4", "h5", "h6", "pre", "blockquote", "dd", "dt"}
    SKIP = {"script", "style", "noscript", "template", "head", "svg"}

    def __init__(self):
        super().__init__(convert_charrefs=True)
        self.parts: list[str] = []
        self.headings: list[tuple[int, int, str]] = []
        self._skip = 0
        self._row: list[str] | None = None
        self._cell: list[str] | None = None
        self._heading: tuple[int, list[str]] | None = None

    def _text(self) -> str:
        return "".join(self.parts)

    def handle_starttag(self, tag, attrs):
        if tag in self.SKIP:
            self._skip += 1
        elif tag == "tr":
            self._row = []
        elif tag in ("td", "th") and self._row is not None:
            self._cell = []
        elif tag in self.BLOCK:
            self.parts.append("\n\n" if tag != "br" else "\n")
        if tag in ("h1", "h2", "h3", "h4", "h5", "h6"):
            self._heading = (int(tag[1]), [])

    def handle_endtag(self, tag):
        if tag in self.SKIP:
            self._skip = max(0, self._skip - 1)
        elif tag in ("td", "th") and self._row is not None and self._cell is not None:
            self._row.append("".join(self._cell))
            self._cell = None
        elif tag == "tr" and self._row is not None:
            self.parts.append("\n" + table_row(self._row) + "\n")
            self._row = None
        elif tag in ("h1", "h2", "h3", "h4", "h5", "h6") and self._heading:
            level, words = self._heading
            title = " ".join("".join(words).split())
            if title:
                start = len(self._text()) - len("".join(words))
                self.headings.append((max(start, 0), level, title))
            self._heading = None
            self.parts.append("\n\n")

    def handle_data(self, data):
        if self._skip:
            return
        if self._cell is not None:
            self._cell.append(data)
            return
        data = re.sub(r"[ \t\r\n]+", " ", data)
        if self._heading is not None:
            self._heading[1].append(data)
        self.parts.append(data)


_META_CHARSET = re.compile(rb"""<meta[^>]+charset\s*=\s*["']?([A-Za-z0-9_.:-]+)""", re.IGNORECASE)


def decode_html(data: bytes) -> str:
    """An HTML page's declared charset (``<meta charset>``) wins over detection."""
    declared = _META_CHARSET.search(data[:4096])
    if declared and not any(data.startswith(bom) for bom, _ in _BOMS):
        try:
            return data.decode(declared.group(1).decode("ascii"))
        except (LookupError, UnicodeDecodeError):
            pass
    return decode_bytes(data)


@register(".html", ".htm", ".xhtml")
def load_html(path: Path, source: str, password: str | None = None) -> LoadedDocument:
    parser = _HTMLText()
    parser.feed(decode_html(path.read_bytes()))
    parser.close()
    raw = parser._text()
    text = normalize(re.sub(r"\n[ \t]*\n(\s*\n)+", "\n\n", raw))
    if not text:
        raise IngestError("The HTML page has no text.")
    # heading offsets refer to the raw text; map them by searching the titles in order
    heads, cursor = [], 0
    for _, level, title in parser.headings:
        found = text.find(title, cursor)
        if found >= 0:
            heads.append((found, level, title))
            cursor = found
    return LoadedDocument(source, "html", (Page(0, text, heading_sections(heads), "html"),))
