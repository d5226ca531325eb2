"""The real-task evaluation as a service (``assistant.evaluation`` scores it).

From the page it is a job of the one job system: its worker process asks the running
app's own API (``/v1/chat/completions`` with RAG, one model after the other) over
loopback, so the answers are exactly the chat's, the model server is shared, and a
crash costs the evaluation, not the app. From the CLI and the benchmark (no app
running) the same questions are asked here, in-process, through the chat service."""
from __future__ import annotations

import shutil
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

from assistant.background import EVAL_QUESTIONS, EVAL_TOKEN, EVALUATION
from assistant.evaluation import (
    REPLIES, EvalQuestion, EvalReply, EvaluationError, load_questions, read_rows, run,
    summarize,
)
from assistant.services.bases import KnowledgeBases
from assistant.services.chat import Chat
from assistant.services.serving import Serving
from assistant.types import Answer
from common.jobs import JobQueue, TaskRecord



@dataclass(frozen=True)
class EvalResults:
    job: TaskRecord
    summary: dict[str, dict]  # model -> metrics (``assistant.evaluation.summarize``)
    rows: list[dict]  # every scored reply
    replies: Path  # the file that keeps them


class Evaluations:
    def __init__(self, queue: JobQueue, bases: KnowledgeBases, chat: Chat, serving: Serving,
                 api_url: str, internal_token: Callable[[], str]):
        self._queue, self._bases, self._chat, self._serving = queue, bases, chat, serving
        self._api_url, self._token = api_url, internal_token

    def submit(self, questions: Path | str, models: Sequence[str], kb: str | None = None,
               limit: int = 0) -> TaskRecord:
        """Queue asking ``questions`` (a question set file) of each of ``models`` (ids of
        ``Serving.model_ids``) with RAG over ``kb``; the job copies the file."""
        kb = self._bases.name(kb)
        self._bases.get(kb)  # an unknown knowledge base is refused now
        found = load_questions(questions)  # a bad file is refused now, not in the job
        models = self._models(models)
        job_id, folder = self._queue.new_folder()
        shutil.copyfile(questions, folder / EVAL_QUESTIONS)
        _private(folder / EVAL_TOKEN, self._token())
        record = TaskRecord(job_id, EVALUATION, kb, {
            "models": list(models), "limit": max(0, int(limit)), "url": self._api_url,
            "questions": min(len(found), limit or len(found))}, created=time.time(),
            path=folder)
        return self._queue.submit_record(record)

    def jobs(self) -> list[TaskRecord]:
        return self._queue.list(EVALUATION)

    def results(self, job_id: str) -> EvalResults:
        """What a job has scored so far (all of it once it has succeeded)."""
        job = self._queue.get(job_id)
        rows = read_rows(job.path / REPLIES)
        return EvalResults(job, summarize(rows), rows, job.path / REPLIES)

    def run_here(self, questions: Path | str, models: Sequence[str], out: Path,
                 kb: str | None = None, limit: int = 0) -> Iterator[tuple[int, int, str]]:
        """Ask in this process (no app running: the CLI, the benchmark); replies go to
        ``out`` (and a run that stopped resumes from it). Yields progress."""
        kb = self._bases.name(kb)
        asked = load_questions(questions)[: limit or None]
        yield from run(asked, self._models(models), self._answerer(kb), out)

    def _models(self, models: Sequence[str]) -> list[str]:
        known = self._serving.model_ids()
        models = [m for m in dict.fromkeys(models) if m]
        unknown = [m for m in models if m not in known]
        if unknown or not models:
            raise EvaluationError(
                f"Unknown model(s) {', '.join(unknown)}; choose among {', '.join(known)}."
                if unknown else "Choose at least one model to evaluate.")
        return models

    def _answerer(self, kb: str):
        def answer(q: EvalQuestion, model: str) -> EvalReply:
            t0 = time.perf_counter()
            final = None
            for event in self._chat.ask(q.question, kb, model=model):
                if isinstance(event, Answer):
                    final = event
            assert final is not None
            return reply_of(final, self._chat.holders([*final.sources, *final.citations]),
                            time.perf_counter() - t0)
        return answer


def reply_of(answer: Answer, holders: dict[str, list[str]], seconds: float) -> EvalReply:
    """An ``Answer`` as the evaluation scores it: the model's text without Docent's
    notices, and the documents behind its citations and its sources."""
    text = answer.text
    for notice in answer.notices:
        text = text.replace(notice, "")
    cited = {doc for c in answer.citations for doc in holders.get(c.chunk_id, [c.source])}
    given = {doc for s in answer.sources for doc in holders.get(s.chunk_id, [s.source])}
    return EvalReply(text.strip(), bool(answer.refused), tuple(sorted(cited)),
                     tuple(sorted(given)), seconds)


def _private(path: Path, text: str) -> None:
    import os

    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        f.write(text)
