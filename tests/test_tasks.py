"""Document tasks (summary, exam questions, advice) through the facade and the CLI, with
a scripted LLM; one slow test with the real 0.5B model."""
from __future__ import annotations

import csv
import io
import json
import re

import pytest

import assistant.core
from assistant.__main__ import main
from assistant.core import Assistant
from assistant.llm import LLM
from assistant.tasks import (
    ExamQuestion,
    TaskProgress,
    document_language_of_text,
    exam_to_csv,
    exam_to_json,
    parse_reply,
    run_task,
)
from assistant.tasks.exam import CSV_COLUMNS
from ingest.pipeline import drain
from knowledge.errors import KnowledgeError
from tests.conftest import make_settings
from tests.fakes import HashEmbedder
from tests.helpers.docs import make_clinic_docs
from tests.helpers.pdfgen import write_pdf

REPORT_PAGES = [
    ["Annual physical examination report.",
     "Patient: adult male, 52 years old, office worker.",
     "Height 175 cm, weight 82 kg, body mass index 26.8, which is overweight.",
     "The patient reports occasional headaches and poor sleep during the last months.",
     "No known drug allergies. Current medicines: none."],
    ["Blood pressure measured twice after rest: 148/94 mmHg and 146/92 mmHg.",
     "This is stage 1 high blood pressure according to the clinic guideline.",
     "For high blood pressure the guideline recommends eating less than 5 g of salt a day.",
     "The patient should measure blood pressure at home every morning for two weeks.",
     "Recheck of blood pressure at the clinic in one month."],
    ["Fasting blood glucose 5.4 mmol/L, within the normal range.",
     "HbA1c 5.5 percent, normal; no sign of diabetes at this examination.",
     "Kidney function: creatinine 88 umol/L, normal for age and sex.",
     "Urine test shows no protein and no blood.",
     "Liver enzymes ALT 31 U/L and AST 27 U/L are normal."],
    ["Total cholesterol 6.2 mmol/L is raised; LDL cholesterol 4.1 mmol/L is raised.",
     "HDL cholesterol 1.1 mmol/L and triglycerides 1.9 mmol/L are borderline.",
     "The guideline advises a diet low in saturated fat for raised cholesterol.",
     "Lipids are to be measured again after three months of diet change.",
     "Statin treatment is not started at this stage."],
    ["Electrocardiogram: sinus rhythm, 72 beats per minute, no abnormal findings.",
     "Chest X-ray: clear lungs, normal heart size.",
     "Eye examination: visual acuity 1.0 in both eyes with glasses.",
     "Hearing test within normal limits for age.",
     "Dental check recommended at the patient's own dentist."],
    ["Summary of advice from the doctor.",
     "Walk briskly for at least 30 minutes on five days of every week.",
     "Lose about 5 kg of weight over six months.",
     "Sleep seven to eight hours and limit coffee after noon.",
     "Next full physical examination in twelve months."],
]

GOOD = ("Q: How often is the influenza vaccine given to adults?\nA) Every month\n"
        "B) Every autumn\nC) Every 10 years\nD) Only once\nAnswer: B\n"
        "Explanation: Adults should receive the influenza vaccine every autumn.")
MALFORMED = "Sure! Here is a question about the passage: what does it say about salt?"


class ListLLM(LLM):
    """Replies from a list in order, or from ``respond(messages)``; records each call."""

    def __init__(self, replies=(), respond=None, n_ctx: int = 4096):
        self.replies, self.respond = list(replies), respond
        self.name, self.n_ctx = "list-llm", n_ctx
        self.calls: list[tuple[list[dict], int]] = []

    def stream_chat(self, messages, max_tokens, temperature):
        self.calls.append((list(messages), max_tokens))
        reply = self.respond(messages) if self.respond else self.replies.pop(0)
        for i in range(0, len(reply), 5):
            yield reply[i:i + 5]

    def count_tokens(self, text: str) -> int:
        return max(1, len(text) // 4)


def _assistant(tmp_path, fake, files=("report",), **settings):
    a = Assistant(make_settings(tmp_path, **settings), llm=fake, embedder=HashEmbedder())
    docs = make_clinic_docs(tmp_path / "docs")
    docs["report"] = write_pdf(tmp_path / "docs" / "checkup.pdf", REPORT_PAGES)
    drain(a.documents.ingest([docs[f] for f in files]))
    return a


def _doc_id(a, source):
    return a.documents.resolve([source])[0]


def _collect(task):
    events = []
    result = run_task(task, events.append)
    return events, result


def _numbers_in(prompt: str) -> list[int]:
    return [int(n) for n in re.findall(r"^\[(\d+)\] \(", prompt, re.MULTILINE)]


# --- summary --------------------------------------------------------------------
def test_long_document_is_summarized_map_reduce_with_global_page_citations(tmp_path):
    def respond(messages):
        user = messages[-1]["content"]
        if "Combine them" in user:
            return "Blood pressure is high [2] and cholesterol is raised [4]. Walk daily [6][31]."
        first = _numbers_in(user)[0]
        return f"Findings of this part [{first}]."

    llm = ListLLM(respond=respond, n_ctx=600)
    a = _assistant(tmp_path, llm, llm={"max_tokens": 100})
    events, summary = _collect(a.tasks.summarize([_doc_id(a, "checkup.pdf")]))

    maps = [m for m, _ in llm.calls if "Combine them" not in m[-1]["content"]]
    numbers = [n for m in maps for n in _numbers_in(m[-1]["content"])]
    assert len(maps) >= 2 and numbers == list(range(1, 7))  # windows: consecutive, global
    for messages, max_tokens in llm.calls:
        assert sum(llm.count_tokens(m["content"]) for m in messages) + max_tokens <= 600
    combine = llm.calls[-1][0][-1]["content"]
    assert "Combine them" in combine and "Findings of this part [1]" in combine
    assert any("[4]" in m[-1]["content"] or "[5]" in m[-1]["content"] for m in maps[1:])
    assert summary.text == ("Blood pressure is high [2] and cholesterol is raised [4]. "
                            "Walk daily [6].")  # [31] points to no source: dropped
    assert [(c.number, c.page) for c in summary.citations] == [(2, 2), (4, 4), (6, 6)]
    assert "148/94" in summary.citations[0].quote or "blood pressure" in summary.citations[0].quote
    assert summary.documents == ("checkup.pdf",) and len(summary.sources) == 6
    stages = [(e.stage, e.done, e.total) for e in events]
    assert ("summarize", len(maps), len(maps)) in stages and stages[-1] == ("combine", 1, 1)
    a.close()


def test_short_document_is_summarized_in_one_call(tmp_path):
    llm = ListLLM(["Adults take amoxicillin 500 mg every 8 hours [2]. Clinic hours [1]."])
    a = _assistant(tmp_path, llm, files=("pdf",))
    events, summary = _collect(a.tasks.summarize([_doc_id(a, "handbook.pdf")]))
    assert len(llm.calls) == 1
    prompt = llm.calls[0][0][-1]["content"]
    assert "[2] (handbook.pdf, page 2)" in prompt and "Write in English." in prompt
    first = summary.citations[0]
    assert (first.number, first.page) == (2, 2) and "500 mg" in first.quote
    assert events[-1] == TaskProgress("summarize", 1, 1)
    a.close()


def test_sentences_the_model_left_uncited_get_markers_from_word_overlap(tmp_path):
    llm = ListLLM([("The handbook covers clinic rules.\n"
                   "- For adults, the usual amoxicillin dose is 500 mg every 8 hours.\n"
                   "- Adults should get the influenza vaccine every autumn [3].")])
    a = _assistant(tmp_path, llm, files=("pdf",))
    summary = run_task(a.tasks.summarize([_doc_id(a, "handbook.pdf")]))
    assert summary.text.splitlines()[1:] == [
        "- For adults, the usual amoxicillin dose is 500 mg every 8 hours [2].",
        "- Adults should get the influenza vaccine every autumn [3]."]
    assert [(c.number, c.page, c.inferred) for c in summary.citations] == [
        (2, 2, True), (3, 3, False)]
    a.close()


def test_unknown_document_fails_at_once_and_names_are_resolved(tmp_path):
    a = _assistant(tmp_path, ListLLM(), files=("pdf", "txt"))
    with pytest.raises(KnowledgeError, match="nope"):
        a.tasks.summarize(["nope"])  # before any iteration
    with pytest.raises(KnowledgeError, match="nope.pdf"):
        a.documents.resolve(["handbook.pdf", "nope.pdf"])
    doc_id = _doc_id(a, "handbook.pdf")
    assert a.documents.resolve([doc_id, "handbook.pdf", "visitors.txt"])[0] == doc_id
    assert len(a.documents.resolve([doc_id, "handbook.pdf", "visitors.txt"])) == 2
    with pytest.raises(ValueError):
        a.tasks.exam_questions([])
    a.close()


# --- exam questions ---------------------------------------------------------------
@pytest.mark.parametrize("reply, expected", [
    (GOOD, ("How often is the influenza vaccine given to adults?", "Every autumn", "B")),
    (("**Question 1:** What is the usual adult dose?\n(A) 250 mg\n(B) 500 mg\n(C) 1 g\n(D) 2 g\n"
     "**Correct answer:** (B)"), ("What is the usual adult dose?", "500 mg", "B")),
    (("Here is a question:\n\n1. Which day is the clinic closed?\nA. Monday\nB. Friday\n"
     "C. Sunday\nD. Tuesday\nAnswer: Sunday"), ("Which day is the clinic closed?", "Sunday", "C")),
    ("Q: Which test was normal?\nA: HbA1c B: LDL C: Total cholesterol D: Weight\nAnswer: a",
     ("Which test was normal?", "HbA1c", "A")),
    ("问题：成人每天应少于多少克盐？\nＡ）3克\nＢ）5克\nＣ）8克\nＤ）10克\n正确答案：Ｂ\n解释：指南建议每天少于5克盐。",
     ("成人每天应少于多少克盐？", "5克", "B")),
    (("Câu hỏi: Huyết áp đo được là bao nhiêu?\nA) 120/80\nB) 148/94\nC) 100/60\nD) 160/100\n"
     "Đáp án: B"), ("Huyết áp đo được là bao nhiêu?", "148/94", "B")),
])
def test_exam_replies_are_parsed(reply, expected):
    q = parse_reply(reply)
    assert q is not None
    assert (q.question, q.options["ABCD".index(q.answer)], q.answer) == expected


@pytest.mark.parametrize("reply", [
    MALFORMED,
    "Q: Which dose?\nA) 5 mg\nB) 5 mg\nC) 10 mg\nD) 20 mg\nAnswer: A",      # options repeat
    "Q: Which dose?\nA) 5 mg\nB) 10 mg\nC) 20 mg\nAnswer: A",                # three options
    "Q: Which dose?\nA) 5 mg\nB) 10 mg\nC) 20 mg\nD) 40 mg\nAnswer: E",      # no such letter
    "Q: Which dose?\nA) 5 mg\nB) 10 mg\nC) 20 mg\nD) 40 mg",                 # no answer
])
def test_unusable_exam_replies_are_refused(reply):
    assert parse_reply(reply) is None


def test_exam_retries_a_bad_reply_once_then_skips_and_keeps_pages(tmp_path):
    replies = [GOOD,                        # passage 1
               MALFORMED, MALFORMED,        # passage 2: retried, then skipped
               MALFORMED, GOOD.replace("How often", "How many times"),  # passage 3: retry works
               GOOD.replace("How often", "When")]                     # a spare passage
    llm = ListLLM(replies)
    a = _assistant(tmp_path, llm)
    doc_id = _doc_id(a, "checkup.pdf")
    events, questions = _collect(a.tasks.exam_questions([doc_id], n=3))
    assert len(questions) == 3 and not llm.replies and events[-1].skipped == 1
    retry = llm.calls[2][0]
    assert retry[-2] == {"role": "assistant", "content": MALFORMED}
    assert "could not be read" in retry[-1]["content"]
    pages = {c.chunk_id: c.page for c in a.library.get("default").document_chunks(doc_id)}
    for q in questions:
        assert q.answer in "ABCD" and q.source == "checkup.pdf"
        assert q.page == pages[q.chunk_id] >= 1
    assert [q.page for q in questions] == sorted(q.page for q in questions)  # reading order
    assert len({q.page for q in questions}) == 3
    a.close()


def test_exam_in_traditional_chinese_is_written_in_traditional(tmp_path):
    text = ("高血壓患者應該每天量血壓，並減少鹽的攝取，每天少於五克。醫師建議每週運動五天，"
            "每次至少三十分鐘。體重過重的患者應該在六個月內減輕體重。") * 2
    (tmp_path / "guide.txt").write_text(text, encoding="utf-8")
    reply = "问题：高血压患者每天应少于多少克盐？\nA）三克\nB）五克\nC）八克\nD）十克\n答案：B"
    llm = ListLLM([reply])
    a = Assistant(make_settings(tmp_path), llm=llm, embedder=HashEmbedder())
    drain(a.documents.ingest([tmp_path / "guide.txt"]))
    (q,) = run_task(a.tasks.exam_questions([_doc_id(a, "guide.txt")], n=1))
    assert "Write in Traditional Chinese." in llm.calls[0][0][-1]["content"]
    assert q.question == "高血壓患者每天應少於多少克鹽？" and q.answer == "B"
    assert document_language_of_text(text) == "zh-Hant"
    a.close()


def test_exam_exports_round_trip():
    questions = [
        ExamQuestion('Which dose, "usual" or high?', ("250 mg", "500 mg, twice", "1 g", "2 g"),
                     "B", "handbook.pdf", 2, "c1", "Page 2 says 500 mg."),
        ExamQuestion("成人每天应少于多少克盐？", ("3克", "5克", "8克", "10克"), "B",
                     "指南.pdf", 7, "c2"),
    ]
    data = json.loads(exam_to_json(questions))
    assert data[0]["options"] == {"A": "250 mg", "B": "500 mg, twice", "C": "1 g", "D": "2 g"}
    assert (data[1]["question"], data[1]["answer"], data[1]["page"]) == (
        "成人每天应少于多少克盐？", "B", 7)
    rows = list(csv.reader(io.StringIO(exam_to_csv(questions))))
    assert tuple(rows[0]) == CSV_COLUMNS
    assert rows[1] == ['Which dose, "usual" or high?', "250 mg", "500 mg, twice", "1 g", "2 g",
                       "B", "handbook.pdf", "2", "Page 2 says 500 mg."]
    assert rows[2][:8] == ["成人每天应少于多少克盐？", "3克", "5克", "8克", "10克", "B", "指南.pdf", "7"]
    with pytest.raises(ValueError):
        ExamQuestion("Q?", ("a", "b", "c", "d"), "E", "x", 1, "c")


# --- advice -----------------------------------------------------------------------
def test_advice_uses_the_passages_matching_the_focus_and_cites_them(tmp_path):
    reply = "- [1] Eat less than 5 g of salt a day.\n- Measure at home [1].\n- Take aspirin [7]."
    llm = ListLLM([reply, "- Walk [1]."], n_ctx=600)
    a = _assistant(tmp_path, llm, llm={"max_tokens": 100})
    doc_id = _doc_id(a, "checkup.pdf")
    result = run_task(a.tasks.advice([doc_id], focus="patient with high blood pressure"))
    prompt = llm.calls[0][0][-1]["content"]
    assert "patient with high blood pressure" in prompt
    assert result.sources[0].page == 2 and len(result.sources) < 6  # cut to the context
    assert result.text == ("- Eat less than 5 g of salt a day [1].\n- Measure at home [1].\n"
                           "- Take aspirin.")
    (cite,) = result.citations
    assert cite.page == 2 and "salt" in cite.quote and cite.kb == "default"
    plain = run_task(a.tasks.advice([doc_id]))
    assert plain.sources[0].page == 1 and plain.focus == ""
    a.close()


# --- CLI --------------------------------------------------------------------------
def test_cli_task_exam_writes_csv_and_refuses_unknown_documents(tmp_path, monkeypatch, capsys):
    def respond(messages):
        page = re.search(r"page (\d+)", messages[-1]["content"]).group(1)
        return GOOD.replace("adults?", f"adults (page {page})?")

    llm = ListLLM(respond=respond)
    _assistant(tmp_path, llm, files=("pdf",)).close()
    monkeypatch.setattr(assistant.core, "Assistant",
                        lambda settings: Assistant(settings, llm=llm, embedder=HashEmbedder()))
    data = str(tmp_path / "data")
    out = tmp_path / "exam.csv"
    code = main(["--data-dir", data, "task", "exam", "--doc", "handbook.pdf", "--n", "2",
                 "--format", "csv", "--out", str(out)])
    assert code == 0
    rows = list(csv.reader(io.StringIO(out.read_text(encoding="utf-8-sig"))))
    assert tuple(rows[0]) == CSV_COLUMNS and len(rows) == 3
    assert {r[5] for r in rows[1:]} == {"B"} and {r[6] for r in rows[1:]} == {"handbook.pdf"}
    assert all(r[7] in ("1", "2", "3") for r in rows[1:])
    assert "questions 2/2" in capsys.readouterr().err
    code = main(["--data-dir", data, "task", "summarize", "--doc", "missing.pdf"])
    err = capsys.readouterr().err
    assert code == 2 and "No document 'missing.pdf'" in err


# --- real model -------------------------------------------------------------------
@pytest.mark.slow
def test_real_model_summarizes_and_writes_an_exam_question(tmp_path):
    settings = make_settings(tmp_path, llm={"model": "qwen2.5-coder-0.5b", "temperature": 0,
                                            "max_tokens": 200})
    a = Assistant(settings, embedder=HashEmbedder())
    drain(a.documents.ingest([make_clinic_docs(tmp_path / "docs")["pdf"]]))
    doc_id = _doc_id(a, "handbook.pdf")
    summary = run_task(a.tasks.summarize([doc_id]))
    assert len(summary.text) > 40 and summary.citations
    assert all(1 <= c.page <= 3 for c in summary.citations)
    questions = run_task(a.tasks.exam_questions([doc_id], n=2))
    assert questions and all(q.answer in "ABCD" and 1 <= q.page <= 3 for q in questions)
    assert all(len(set(q.options)) == 4 for q in questions)
    a.close()
