"""Document tasks: summaries, exam questions and advice over whole documents.

Each task is a generator: it yields ``TaskProgress`` events and *returns* its result
(``Summary``, ``list[ExamQuestion]``, ``Advice``), which ends up in ``StopIteration.value``
— the same style as ingestion. ``run_task`` drives one to the end::

    summary = run_task(assistant.tasks.summarize([doc_id]), on_progress=print)
"""
from __future__ import annotations

from ingest.pipeline import drain

from collections.abc import Callable, Generator
from typing import TypeVar

from assistant.tasks.common import (
    TaskError,
    TaskProgress,
    document_language,
    document_language_of_text,
    language_name,
)
from assistant.tasks.exam import (
    ExamQuestion,
    exam_questions,
    exam_to_csv,
    exam_to_json,
    parse_reply,
)
from assistant.tasks.guidance import Advice, advice, rank_chunks
from assistant.tasks.summary import Summary, summarize

T = TypeVar("T")

__all__ = ["Advice", "ExamQuestion", "Summary", "TaskError", "TaskProgress", "advice",
           "document_language", "document_language_of_text", "exam_questions", "exam_to_csv",
           "exam_to_json", "language_name", "parse_reply", "rank_chunks", "run_task",
           "summarize"]


def run_task(task: Generator[TaskProgress, None, T],
             on_progress: Callable[[TaskProgress], None] | None = None) -> T:
    """Run a task generator to the end and return its result."""
    return drain(task, on_progress)
