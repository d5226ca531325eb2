"""Contract test: every loader over every fixture it claims (tests/fixtures, see NOTICE.md).

Each file is either read (known strings spot-checked, CJK included) or refused with the
expected reason. OCR cases expect text when Tesseract is installed (``make test``
installs it as root) and the install hint otherwise.
"""
import re
from pathlib import Path

import pytest
from pypdf import PdfReader, PdfWriter

from ingest import ocr
from ingest.chunking import ChunkingParams, chunk_pages
from ingest.errors import IngestError
from ingest.loaders import load, supported_extensions
from ingest.loaders.text import decode_bytes
from tests.helpers.docs import make_clinic_docs
from tests.helpers.pdfgen import write_pdf

FIXTURES = Path(__file__).parent / "fixtures"
OCR = "ocr"  # marks an expectation that needs Tesseract

# path: (expected strings | "!error substring", options)
CASES = {
    "pdf/multicolumn_latex.pdf": (["Two-Column Document with Lorem Ipsum"], {}),
    "pdf/two_column_acl_paper.pdf": (["Preemptive Information Extraction"], {"pages": 8}),
    "pdf/japanese_cjk_short.pdf": (["わたくしといふ現象は"], {"method": "pdfminer"}),
    "pdf/corrupted_xref.pdf": (["Beautiful is better than ugly"], {}),
    "pdf/copy_protected.pdf": (  # AES, empty user password; its outline names the title
        ["LayoutParser"], {"heading": "LayoutParser: A Unified Toolkit for Deep Learning Based "
                                      "Document Image Analysis"}),
    "pdf/rotated_page_90.pdf": (["Rotated page fixture"], {}),
    "pdf/encrypted_userpw_openpassword.pdf": ("!password required", {}),
    "pdf/password_unstructured.pdf": ("!password required", {}),
    "pdf/empty_zero_bytes.pdf": ("!empty", {}),
    "pdf/image_only_ccitt.pdf": ("!no readable text", {OCR: True}),
    "pdf/scanned_no_text_layer.pdf": (["Docling bundles PDF document conversion"], {OCR: True, "method": "ocr"}),
    "pdf/scanned_rotated_90.pdf": (["Docling bundles PDF document conversion"], {OCR: True, "method": "ocr"}),
    "pdf/scanned_with_ocr_layer.pdf": (["Foundation"], {OCR: True, "method": "ocr", "slow": True}),
    "image/scanned_page.tif": (["DocLayNet"], {OCR: True, "slow": True}),
    "image/leaflet_zh_hant.png": (["呼吸急促", "就醫"], {OCR: True, "slow": True}),
    "image/leaflet_vi.png": (["Ho, nhất là vào ban đêm", "khó thở"], {OCR: True, "slow": True}),
    "docx/tables_merged_cells.docx": (["| 1 | 2 | 3 |"], {}),
    "docx/word_tables.docx": (["| Header 0.0 | Header 0.1"], {}),
    "docx/paras_and_tables.docx": (["Lorem ipsum"], {}),
    "docx/header_footer.docx": (["Header for section-1"], {}),
    "docx/textboxes.docx": (["Suggested Reportable Symptoms", "within 24 hours"], {}),
    "docx/heading_levels.docx": (["Paragraph 1.2.3.1"], {"heading": "Section 1 > Section 1.2 > Section 1.2.3"}),
    "docx/ooxml_strict.docx": (["Some text"], {}),
    "docx/legacy_binary.doc": ("!save it as .docx", {}),
    "txt/utf16_bom.txt": (["This is a test document"], {}),
    "txt/utf16le_nobom.txt": (["This is a test document"], {}),
    "txt/latin1_umlauts.md": (["können", "äöüß"], {}),
    "txt/cp1252.html": (["My First Heading", "très chaud", "niño", "15,50 €"], {}),
    "txt/utf16.csv": (["| Team | Location | Stanley Cups |"], {}),
    "txt/empty.txt": ("!empty", {}),
    "txt/all_whitespace.txt": ("!whitespace", {}),
    "txt/udhr_art1_all_languages_utf8.txt": (
        ["人人生而自由", "在尊嚴和權利上一律平等", "Tất cả mọi người sinh ra đều được tự do"], {}),
}
PASSWORDS = {"pdf/encrypted_userpw_openpassword.pdf": ("openpassword", "Lorem ipsum dolor"),
             "pdf/password_unstructured.pdf": ("password", "File with password")}


def _params():
    for name, (expect, opts) in CASES.items():
        marks = [pytest.mark.slow] if opts.get("slow") else []
        yield pytest.param(name, expect, opts, id=name, marks=marks)


def test_every_fixture_has_a_case():
    files = {str(p.relative_to(FIXTURES)) for p in FIXTURES.rglob("*")
             if p.is_file() and p.suffix not in (".md", ".tsv") or p.name == "latin1_umlauts.md"}
    files.discard("NOTICE.md")
    assert files == set(CASES)


@pytest.mark.parametrize("name,expect,opts", list(_params()))
def test_loader_contract(name, expect, opts):
    path = FIXTURES / name
    if opts.get(OCR) and not ocr.available():
        with pytest.raises(IngestError, match="install Tesseract"):
            load(path)
        return
    if isinstance(expect, str):
        with pytest.raises(IngestError, match=expect[1:]):
            load(path)
        return
    doc = load(path)
    text = "\n".join(p.text for p in doc.pages)
    for needle in expect:
        assert needle in text, f"{needle!r} not in {name}"
    if "pages" in opts:
        assert doc.page_count == opts["pages"]
    if "method" in opts:
        assert opts["method"] in {p.method for p in doc.pages}
    if "heading" in opts:
        assert opts["heading"] in {h for p in doc.pages for _, h in p.sections}


@pytest.mark.parametrize("name", sorted(PASSWORDS))
def test_encrypted_pdf_opens_with_its_password(name):
    password, needle = PASSWORDS[name]
    assert needle in load(FIXTURES / name, password=password).pages[0].text
    with pytest.raises(IngestError, match="password"):
        load(FIXTURES / name, password="wrong")


def test_every_registered_type_has_a_fixture_or_a_generated_file():
    covered = {Path(n).suffix for n in CASES} | {".png", ".jpg", ".jpeg", ".docm", ".markdown",
                                                 ".text", ".log", ".tsv", ".htm", ".xhtml",
                                                 ".tiff", ".bmp", ".webp"}
    assert set(supported_extensions()) <= covered


@pytest.fixture(scope="module")
def docs(tmp_path_factory):
    return make_clinic_docs(tmp_path_factory.mktemp("docs"))


def test_pdf_keeps_page_numbers(docs):
    doc = load(docs["pdf"])
    assert [p.number for p in doc.pages] == [1, 2, 3]
    assert "500 mg every 8 hours" in doc.pages[1].text


def test_pdf_outline_gives_headings_that_carry_over_to_the_next_pages(tmp_path):
    raw = write_pdf(tmp_path / "raw.pdf", [
        ["Clinic handbook", "Welcome to the clinic."],
        ["Opening hours", "We open at 8 am.", "Dosing in children", "Give 5 mg per kg."],
        ["Children under two need a doctor."]])
    writer = PdfWriter(clone_from=PdfReader(raw))
    top = writer.add_outline_item(title="Clinic handbook", page_number=0)
    writer.add_outline_item(title="Opening hours", page_number=1, parent=top)
    writer.add_outline_item(title="Dosing in Children", page_number=1, parent=top)  # case differs
    writer.write(tmp_path / "handbook.pdf")

    chunks = chunk_pages("d", "handbook.pdf", load(tmp_path / "handbook.pdf").pages,
                         ChunkingParams(chunk_size=50, chunk_overlap=0))
    assert [(c.page, c.heading, c.text) for c in chunks] == [
        (1, "Clinic handbook", "Clinic handbook\nWelcome to the clinic."),
        (2, "Clinic handbook > Opening hours", "Opening hours\nWe open at 8 am."),
        (2, "Clinic handbook > Dosing in Children", "Dosing in children\nGive 5 mg per kg."),
        (3, "Clinic handbook > Dosing in Children", "Children under two need a doctor."),
    ]
    assert load(raw).pages[0].sections == ()  # no outline, no headings


BODY = ["Some body text of the handbook, set in eleven point type."] * 6


def test_pdf_without_outline_takes_headings_from_font_sizes(tmp_path):
    path = write_pdf(tmp_path / "leaflet.pdf", [
        [("Amoxicillin leaflet", 16), ("What it is used for", 13), "Chest and ear infections.",
         *BODY],
        [*BODY, ("Dosing in", 13), ("children", 13), "Give 5 mg per kg.", *BODY],
        [*BODY]])
    chunks = chunk_pages("d", "leaflet.pdf", load(path).pages, ChunkingParams(400, 0))
    assert [(c.page, c.heading, c.text.split("\n")[0]) for c in chunks] == [
        (1, "Amoxicillin leaflet > What it is used for", "Amoxicillin leaflet"),
        (2, "Amoxicillin leaflet > What it is used for", BODY[0]),
        (2, "Amoxicillin leaflet > Dosing in children", "Dosing in"),  # a wrapped heading
        (3, "Amoxicillin leaflet > Dosing in children", BODY[0]),
    ]


def test_pdf_font_sizes_ignore_running_headers_and_large_print(tmp_path):
    header = ("CITY CLINIC - PATIENT INFORMATION", 14)
    running = write_pdf(tmp_path / "running.pdf", [[header, *BODY] for _ in range(4)])
    assert all(p.sections == () for p in load(running).pages)
    steps = [(f"Step {i}: wash your hands", 16) for i in range(5)]
    poster = write_pdf(tmp_path / "poster.pdf", [[x for pair in zip(steps, BODY) for x in pair]])
    assert load(poster).pages[0].sections == ()  # half the lines in large print: not headings


def test_docx_keeps_paragraphs_and_tables_in_order(docs):
    page = load(docs["docx"]).pages[0]
    text = page.text
    assert text.index("Pharmacy policy") < text.index("closes at 9 pm") < text.index(
        "| Pharmacist | Tuesday |") < text.index("Expired medicines")
    assert page.sections == ((0, "Pharmacy policy"),)


def test_text_encodings(tmp_path):
    gb = tmp_path / "zh.txt"
    gb.write_bytes("糖尿病患者应每三个月检查一次糖化血红蛋白。".encode("gb18030"))
    assert "糖化血红蛋白" in load(gb).pages[0].text
    big5 = tmp_path / "tw.txt"
    big5.write_bytes("糖尿病患者應每三個月檢查一次糖化血紅蛋白，並且注意飲食控制與規律運動。".encode("big5"))
    assert "糖化血紅蛋白" in load(big5).pages[0].text
    assert decode_bytes("Müller, Größe".encode("latin-1")) == "Müller, Größe"
    assert decode_bytes("Bệnh tiểu đường".encode("utf-32-le")) == "Bệnh tiểu đường"
    assert decode_bytes("Bệnh tiểu đường".encode("utf-16-be")) == "Bệnh tiểu đường"


def test_html_is_reduced_to_text_without_scripts(tmp_path):
    page = tmp_path / "p.html"
    page.write_text("<html><head><script>alert('x')</script><style>p{}</style></head><body>"
                    "<h1>Dosing</h1><p>Take <b>500 mg</b>.</p><table><tr><td>a</td><td>b</td></tr>"
                    "</table></body></html>", encoding="utf-8")
    doc = load(page)
    assert "alert" not in doc.pages[0].text and "p{}" not in doc.pages[0].text
    assert "Take 500 mg." in doc.pages[0].text and "| a | b |" in doc.pages[0].text
    assert doc.pages[0].sections[0][1] == "Dosing"


@pytest.mark.skipif(not ocr.available(), reason="needs Tesseract (make test installs it)")
def test_png_is_read_by_ocr(tmp_path):
    from PIL import Image, ImageDraw, ImageFont

    image = Image.new("RGB", (1400, 300), "white")
    ImageDraw.Draw(image).text((40, 100), "Paracetamol 500 mg every six hours",
                               fill="black", font=ImageFont.load_default(size=56))
    image.save(tmp_path / "label.png")
    assert "Paracetamol 500 mg" in load(tmp_path / "label.png").pages[0].text


@pytest.mark.slow
@pytest.mark.skipif(not {"chi_tra", "vie"} <= ocr.installed_languages(),
                    reason="needs Tesseract's Chinese models (make test installs them)")
def test_a_chinese_scan_is_read_as_chinese_not_latin_garbage():
    # OSD is unsure of the script on a short page, and the English model would read it
    # as confident-looking Latin (the fixture cases check the words themselves)
    text = load(FIXTURES / "image" / "leaflet_zh_hant.png").pages[0].text
    assert "呼吸" in text and not re.search(r"[A-Za-z]{2,}", text), text


def test_image_without_tesseract_says_how_to_get_it(tmp_path, monkeypatch):
    from PIL import Image

    Image.new("RGB", (10, 10), "white").save(tmp_path / "x.png")
    monkeypatch.setattr(ocr, "available", lambda: False)
    with pytest.raises(IngestError, match="install Tesseract"):
        load(tmp_path / "x.png")


@pytest.mark.parametrize("name,content,reason", [
    ("broken.pdf", b"%PDF-1.4 this is not really a pdf", "PDF"),
    ("image.xyz", b"....", "Unsupported file type"),
    ("fake.docx", b"not a zip", "Not a Word .docx file"),
])
def test_bad_files_are_refused_with_a_reason(tmp_path, name, content, reason):
    path = tmp_path / name
    path.write_bytes(content)
    with pytest.raises(IngestError, match=reason):
        load(path)
