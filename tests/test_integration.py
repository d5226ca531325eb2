"""The walking skeleton with the real default models: PDF + DOCX + TXT in, cited answer out."""
import pytest

from assistant.core import Assistant
from assistant.types import Answer, AnswerDelta
from ingest.pipeline import drain
from tests.conftest import make_settings
from tests.helpers.docs import make_clinic_docs

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def assistant(tmp_path_factory, e5):
    tmp = tmp_path_factory.mktemp("integration")
    # the default 1.5B chat model, greedy decoding
    a = Assistant(make_settings(tmp, llm={"temperature": 0.0}), embedder=e5)
    report = drain(a.documents.ingest(list(make_clinic_docs(tmp / "docs").values())))
    assert len(report.succeeded) == 3, report
    yield a
    a.close()


def test_answer_cites_the_right_file_and_page(assistant):
    events = list(assistant.chat.ask("How often should adults take amoxicillin, and what dose?"))
    streamed = "".join(e.text for e in events if isinstance(e, AnswerDelta))
    final = events[-1]
    assert isinstance(final, Answer)
    assert streamed.strip() and len([e for e in events if isinstance(e, AnswerDelta)]) > 3
    assert "8 hours" in final.text and "500" in final.text
    assert ("handbook.pdf", 2) in {(c.source, c.page) for c in final.citations}
    cite = next(c for c in final.citations if c.page == 2)
    assert "amoxicillin" in cite.quote.lower()


def test_multilingual_retrieval_finds_docx_and_txt(assistant):
    hits = assistant.chat.search("药房星期六几点关门？")  # Chinese question, English document
    assert "pharmacy.docx" in [h.chunk.source for h in hits[:3]]
    hits = assistant.chat.search("Giờ thăm bệnh là mấy giờ?")  # Vietnamese: visiting hours
    assert "visitors.txt" in [h.chunk.source for h in hits[:3]]
