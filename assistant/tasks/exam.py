"""Multiple-choice exam questions about documents, one per passage, with an answer key
and the page each question comes from; exported as JSON or CSV.

The model is asked for a strict line format; the parser also accepts the variants
small models write instead ("A." / "A:" / "(A)", full-width punctuation, Chinese or
Vietnamese labels, the answer given as the option's text):

>>> q = parse_reply("问题：成人流感疫苗多久接种一次？\\nA．每月\\nB．每年秋季\\nC．每十年\\nD．只需一次\\n答案：B")
>>> q.question, q.options[1], q.answer
('成人流感疫苗多久接种一次？', '每年秋季', 'B')
>>> parse_reply("Q: Which dose?\\nA) 5 mg\\nB) 5 mg\\nC) 10 mg\\nD) 20 mg\\nAnswer: A") is None
True
"""
from __future__ import annotations

import csv
import io
import json
import re
from collections.abc import Generator, Sequence
from dataclasses import dataclass

from assistant.citations import best_quote
from assistant.llm import LLM
from assistant.tasks.common import (
    TaskProgress,
    generate,
    localize,
    require_text,
    write_in,
)
from knowledge.types import Chunk

LETTERS = ("A", "B", "C", "D")
CSV_COLUMNS = ("question", "A", "B", "C", "D", "answer", "source", "page", "explanation")
MIN_CHARS = 200  # passages shorter than this are used only when there are too few others
QUESTION_TOKENS = 384

SYSTEM = ("You write multiple-choice exam questions that test a reader's understanding of a "
          "passage. Each question has four different options; exactly one is correct "
          "according to the passage, the other three are plausible but wrong.")
FORMAT = ("Q: <question>\nA) <option>\nB) <option>\nC) <option>\nD) <option>\n"
          "Answer: <the letter of the correct option>\n"
          "Explanation: <one sentence of the passage that supports the answer>")

_FULL = str.maketrans("ＡＢＣＤａｂｃｄ", "ABCDabcd")
_BOLD = r"(?:\*\*|__)?"
_Q = re.compile(rf"^(?:#+\s*)?{_BOLD}\s*(?:q|question|问题|問題|题目|題目|câu hỏi)\s*\d*\s*{_BOLD}"
                rf"\s*[:：.)）]\s*{_BOLD}\s*(.*)$", re.IGNORECASE)
_OPT = re.compile(rf"^(?:[-*•]\s*)?{_BOLD}\s*[(（]?([A-DＡ-Ｄ])\s*{_BOLD}\s*[).．:：、）]\s*{_BOLD}"
                  r"\s*(.+)$")
_INLINE = re.compile(r"\s+(?=[(（]?[B-DＢ-Ｄ][).．、）:：]\s)")
_ANSWER = re.compile(rf"^{_BOLD}\s*(?:correct\s+answer|correct\s+option|answer|key|正确答案|"
                     rf"正確答案|答案|đáp án(?:\s+đúng)?)\s*{_BOLD}"
                     rf"(?:\s*[:：]\s*(?:is\b|是|là\b)?|\s*(?:is\b|是|là\b)\s*[:：]?)\s*{_BOLD}\s*(.+)$",
                     re.IGNORECASE)
_LETTER = re.compile(r"^[(（]?\s*([A-DＡ-Ｄa-dａ-ｄ])(?![A-Za-z])")
_EXPLAIN = re.compile(rf"^{_BOLD}\s*(?:explanation|reason|解释|解釋|说明|說明|解析|giải thích)"
                      rf"\s*{_BOLD}\s*[:：]\s*{_BOLD}\s*(.+)$", re.IGNORECASE)
_NUMBERED = re.compile(r"^\s*\d+\s*[.)、．]\s*")


@dataclass(frozen=True)
class ExamQuestion:
    """One multiple-choice question; ``answer`` is the letter of the correct option."""

    question: str
    options: tuple[str, str, str, str]
    answer: str
    source: str
    page: int
    chunk_id: str
    explanation: str = ""

    def __post_init__(self):
        if len(self.options) != 4 or not all(o.strip() for o in self.options):
            raise ValueError(f"an exam question needs four non-empty options: {self.options}")
        if self.answer not in LETTERS:
            raise ValueError(f"answer must be one of A-D, not {self.answer!r}")

    @property
    def correct_option(self) -> str:
        return self.options[LETTERS.index(self.answer)]


@dataclass(frozen=True)
class ParsedQuestion:
    question: str
    options: tuple[str, str, str, str]
    answer: str
    explanation: str = ""


# --- parsing ------------------------------------------------------------------
def _clean(text: str) -> str:
    return text.strip().strip("*_`\"“”").strip()


def _lines(reply: str) -> list[str]:
    """Lines of the reply; options written on one line ("A) x B) y ...") are split."""
    out: list[str] = []
    for line in reply.splitlines():
        line = line.strip()
        out.extend(_INLINE.split(line) if _OPT.match(line) else [line])
    return [line for line in out if line]


def _answer_letter(text: str, options: dict[str, str]) -> str | None:
    m = _LETTER.match(text.strip().strip("*_"))
    if m:
        return m.group(1).translate(_FULL).upper()
    wanted = _clean(text).rstrip(".。").casefold()
    for letter, option in options.items():
        if option.rstrip(".。").casefold() == wanted:
            return letter
    return None


def parse_reply(reply: str) -> ParsedQuestion | None:
    """The first complete, valid question in a model reply, or None."""
    question = loose = explanation = ""
    options: dict[str, str] = {}
    answer: str | None = None
    for line in _lines(reply):
        if len(options) == 4 and answer and _Q.match(line):
            break  # a second question starts
        if (m := _ANSWER.match(line)) and options:
            answer = answer or _answer_letter(m.group(1), options)
        elif m := _EXPLAIN.match(line):
            explanation = explanation or _clean(m.group(1))
        elif m := _OPT.match(line):
            options.setdefault(m.group(1).translate(_FULL), _clean(m.group(2)))
        elif not options and (m := _Q.match(line)):
            question = _clean(m.group(1)) or question
        elif not options:
            loose = _clean(_NUMBERED.sub("", line))  # an unlabelled question line
    return _validated(question or loose, options, answer, explanation)


def _validated(question: str, options: dict[str, str], answer: str | None,
               explanation: str) -> ParsedQuestion | None:
    texts = tuple(options.get(letter, "") for letter in LETTERS)
    if len(question) < 4 or not all(texts) or answer not in LETTERS:
        return None
    if len({t.casefold() for t in texts}) < 4:
        return None
    return ParsedQuestion(question, texts, answer, explanation)  # type: ignore[arg-type]


# --- generation ---------------------------------------------------------------
def spread_chunks(chunks: Sequence[Chunk], k: int) -> list[Chunk]:
    """Up to ``k`` chunks evenly spaced over the selection (reading order), taken from
    the passages long enough to ask about when there are enough of them.

    Unlike ``finetune.questions.sample_chunks`` (random, for training variety), an exam
    should cover the document from beginning to end."""
    long = [c for c in chunks if len(c.text) >= MIN_CHARS]
    pool = long if len(long) >= k else [c for c in chunks if len(c.text.strip()) >= 40] or list(chunks)
    if k >= len(pool):
        return list(pool)
    return [pool[int((i + 0.5) * len(pool) / k)] for i in range(k)]


def _prompt(chunk: Chunk, language: str) -> list[dict]:
    where = f"{chunk.source}, page {chunk.page}" if chunk.page else chunk.source
    user = (f"Passage ({where}):\n{chunk.index_text.strip()}\n\nWrite one multiple-choice "
            f"question about this passage. {write_in(language)} Keep the labels Q:, A), B), "
            f"C), D), Answer: and Explanation: as they are, and reply in exactly this format "
            f"and nothing else:\n\n{FORMAT}")
    return [{"role": "system", "content": SYSTEM}, {"role": "user", "content": user}]


def _retry(messages: list[dict], reply: str, language: str) -> list[dict]:
    firmer = ("Your reply could not be read. Reply again with exactly these seven lines and "
              "nothing else: a question, four different options A to D, the letter of the "
              f"one correct option after Answer:, and an explanation. {write_in(language)}"
              f"\n\n{FORMAT}")
    return [*messages, {"role": "assistant", "content": reply or "(empty)"},
            {"role": "user", "content": firmer}]


def question_for(llm: LLM, chunk: Chunk, language: str, max_tokens: int = QUESTION_TOKENS,
                 temperature: float = 0.2) -> ExamQuestion | None:
    """One question about ``chunk``; the model gets a second, firmer try when its first
    reply cannot be parsed; None when neither can."""
    messages = _prompt(chunk, language)
    reply = generate(llm, messages, max_tokens, temperature)
    parsed = parse_reply(reply)
    if parsed is None:
        parsed = parse_reply(generate(llm, _retry(messages, reply, language), max_tokens,
                                      temperature))
    if parsed is None:
        return None
    correct = parsed.options[LETTERS.index(parsed.answer)]
    explanation = parsed.explanation or best_quote(chunk.text, f"{parsed.question} {correct}")
    return ExamQuestion(localize(parsed.question, language),
                        tuple(localize(o, language) for o in parsed.options),  # type: ignore[arg-type]
                        parsed.answer, chunk.source, chunk.page, chunk.chunk_id,
                        localize(explanation, language))


def exam_questions(llm: LLM, chunks: Sequence[Chunk], n: int, language: str,
                   max_tokens: int = QUESTION_TOKENS, temperature: float = 0.2
                   ) -> Generator[TaskProgress, None, list[ExamQuestion]]:
    """Progress events (``skipped`` counts passages given up on), then up to ``n``
    questions in reading order. Passages whose question cannot be parsed twice are
    skipped and a spare passage is tried instead (at most ``n // 2 + 1`` spares)."""
    if n < 1:
        raise ValueError("Ask for at least one question.")
    require_text(chunks)
    picked = spread_chunks(chunks, n)
    taken = {c.chunk_id for c in picked}
    spares = spread_chunks([c for c in chunks if c.chunk_id not in taken], n // 2 + 1)
    questions: list[ExamQuestion] = []
    skipped = 0
    yield TaskProgress("questions", 0, n)
    for chunk in [*picked, *spares]:
        if len(questions) >= n:
            break
        q = question_for(llm, chunk, language, min(max_tokens, QUESTION_TOKENS), temperature)
        if q is None or any(q.question == other.question for other in questions):
            skipped += 1
        else:
            questions.append(q)
        yield TaskProgress("questions", len(questions), n, skipped)
    order = {c.chunk_id: i for i, c in enumerate(chunks)}
    return sorted(questions, key=lambda q: order[q.chunk_id])


# --- export -------------------------------------------------------------------
def exam_to_dicts(questions: Sequence[ExamQuestion]) -> list[dict]:
    return [{"question": q.question, "options": dict(zip(LETTERS, q.options)),
             "answer": q.answer, "source": q.source, "page": q.page, "chunk_id": q.chunk_id,
             "explanation": q.explanation} for q in questions]


def exam_to_json(questions: Sequence[ExamQuestion]) -> str:
    """A JSON list; each question's ``options`` maps the letters A-D to their text."""
    return json.dumps(exam_to_dicts(questions), ensure_ascii=False, indent=2)


def exam_to_csv(questions: Sequence[ExamQuestion]) -> str:
    """CSV with a header row: question,A,B,C,D,answer,source,page,explanation."""
    buf = io.StringIO()
    writer = csv.writer(buf)
    writer.writerow(CSV_COLUMNS)
    for q in questions:
        writer.writerow([q.question, *q.options, q.answer, q.source, q.page, q.explanation])
    return buf.getvalue()
