from pathlib import Path

import pytest

from ingest.errors import IngestError
from ingest.loaders import decode_bytes, load
from tests.helpers.docs import make_clinic_docs


@pytest.fixture(scope="module")
def docs(tmp_path_factory):
    return make_clinic_docs(tmp_path_factory.mktemp("docs"))


def test_pdf_keeps_page_numbers(docs):
    doc = load(docs["pdf"])
    assert [p.number for p in doc.pages] == [1, 2, 3]
    assert "500 mg every 8 hours" in doc.pages[1].text
    assert doc.page_count == 3


def test_docx_keeps_paragraphs_and_tables_in_order(docs):
    text = load(docs["docx"]).pages[0].text
    assert text.index("Pharmacy policy") < text.index("closes at 9 pm") < text.index(
        "| Pharmacist | Tuesday |") < text.index("Expired medicines")


def test_txt_encoding_is_detected(docs, tmp_path):
    assert "visitor badge" in load(docs["txt"]).pages[0].text  # UTF-16 with BOM
    gb = tmp_path / "zh.txt"
    gb.write_bytes("糖尿病患者应每三个月检查一次糖化血红蛋白。".encode("gb18030"))
    assert "糖化血红蛋白" in load(gb).pages[0].text
    assert decode_bytes("Müller, Größe".encode("latin-1")) == "Müller, Größe"


@pytest.mark.parametrize("name,content,reason", [
    ("empty.pdf", b"", "empty"),
    ("broken.pdf", b"%PDF-1.4 this is not really a pdf", "PDF"),
    ("blank.txt", b"   \n  ", "whitespace"),
    ("image.bmp", b"BM....", "Unsupported file type"),
])
def test_bad_files_are_refused_with_a_reason(tmp_path, name, content, reason):
    path = tmp_path / name
    path.write_bytes(content)
    with pytest.raises(IngestError, match=reason):
        load(path)


SHARED_FIXTURES = Path(__file__).resolve().parents[2] / "shared" / "data" / "fixtures"


@pytest.mark.skipif(not SHARED_FIXTURES.is_dir(), reason="../shared/data/fixtures not present")
def test_encrypted_pdf_asks_for_a_password():
    with pytest.raises(IngestError, match="password required"):
        load(SHARED_FIXTURES / "pdf" / "encrypted_userpw_openpassword.pdf")
