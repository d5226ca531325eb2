"""Document task results as Markdown (no gradio here, so they are easy to test)."""
from __future__ import annotations

import html
from collections.abc import Sequence

from assistant.tasks import Advice, ExamQuestion, Summary, TaskProgress
from assistant.types import Citation
from assistant.ui.format import citations_markdown

STAGES = {"summarize": "Summarizing", "combine": "Combining the parts",
          "questions": "Writing questions", "advise": "Collecting recommendations"}


def progress_text(event: TaskProgress) -> str:
    """A progress event in words.

    >>> progress_text(TaskProgress("questions", 2, 5, skipped=1))
    'Writing questions: 2 of 5 (1 skipped)'
    """
    stage = STAGES.get(event.stage, event.stage.capitalize())
    skipped = f" ({event.skipped} skipped)" if event.skipped else ""
    return f"{stage}: {event.done} of {event.total}{skipped}"


def _with_sources(heading: str, text: str, citations: Sequence[Citation]) -> str:
    return f"### {heading}\n\n{text.strip()}" + citations_markdown(citations)


def summary_markdown(summary: Summary) -> str:
    names = ", ".join(summary.documents) or "the documents"
    return _with_sources(f"Summary of {html.escape(names)}", summary.text, summary.citations)


def advice_markdown(advice: Advice) -> str:
    focus = f" for: {html.escape(advice.focus)}" if advice.focus.strip() else ""
    return _with_sources(f"Recommendations{focus}", advice.text, advice.citations)


def exam_markdown(questions: Sequence[ExamQuestion]) -> str:
    """Each question with its options, the answer and the page it is drawn from.

    >>> q = ExamQuestion("Dose?", ("250 mg", "500 mg", "1 g", "2 g"), "B", "a.pdf", 2, "c1")
    >>> print(exam_markdown([q]))
    ### Exam: 1 question
    <BLANKLINE>
    **1. Dose?**
    <BLANKLINE>
    - A. 250 mg
    - B. 500 mg
    - C. 1 g
    - D. 2 g
    <BLANKLINE>
    Answer: **B** (500 mg) · source: a.pdf, p. 2
    """
    if not questions:
        return "The model wrote no usable question for these documents; try again or pick others."
    count = f"{len(questions)} question" + ("s" if len(questions) != 1 else "")
    lines = [f"### Exam: {count}"]
    for i, q in enumerate(questions, start=1):
        lines += ["", f"**{i}. {html.escape(q.question)}**", ""]
        lines += [f"- {letter}. {html.escape(option)}" for letter, option in zip("ABCD", q.options)]
        where = f"{q.source}, p. {q.page}" if q.page else q.source
        answer = f"**{q.answer}** ({html.escape(q.correct_option)})"
        lines += ["", f"Answer: {answer} · source: {html.escape(where)}"]
        if q.explanation:
            lines.append(f"*{html.escape(q.explanation)}*")
    return "\n".join(lines)
