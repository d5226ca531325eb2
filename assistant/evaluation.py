"""The real-task evaluation: real questions, asked with RAG, of the base model and of
adapters, scored against reference answers and judged-relevant documents.

A question set is a JSONL file, one question a line::

    {"id": "7", "question": "Can I take ibuprofen with lisinopril?",
     "answers": ["Ibuprofen may reduce the effect of ..."],   # or "answer": "..."
     "relevant": ["lisinopril.pdf"]}                          # optional: documents

Each model answers every question the way the chat does (search, guardrail, gate,
citations). Per model: the share of answers citing a judged-relevant document (over the
questions that name some), token-F1 and ROUGE-L of the answer against the best
reference (over the questions that have some; citation markers and notices left out),
the share refused, and the median seconds. Every reply is kept (``replies.jsonl``), so
a run that stops resumes where it was.

>>> q = EvalQuestion("1", "Dose?", ("Take 500 mg twice a day.",), ("leaflet.pdf",))
>>> row = score(q, EvalReply("Take 500 mg [1] twice daily.", False, ("leaflet.pdf",), ()))
>>> row["cited_relevant"], round(row["f1"], 2), round(row["rouge_l"], 2)
(True, 0.73, 0.73)
"""
from __future__ import annotations

import json
import statistics
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

from assistant.errors import AssistantError
from common.text import MARKER
from finetune.evaluate import rouge_l, token_f1

REPLIES = "replies.jsonl"
METRICS = ("cited_relevant", "retrieved_relevant", "f1", "rouge_l", "refused")


class EvaluationError(AssistantError):
    """A question set that cannot be used, or an evaluation that cannot run."""


@dataclass(frozen=True)
class EvalQuestion:
    id: str
    question: str
    references: tuple[str, ...] = ()  # reference answers
    relevant: tuple[str, ...] = ()  # documents judged relevant (file names)


@dataclass(frozen=True)
class EvalReply:
    text: str  # the answer without its notices (disclaimer, advice)
    refused: bool
    cited: tuple[str, ...]  # documents its citations point to
    given: tuple[str, ...]  # documents among the sources it was given
    seconds: float = 0.0


Answerer = Callable[[EvalQuestion, str], EvalReply]  # (question, model) -> reply


def load_questions(path: Path | str) -> list[EvalQuestion]:
    """The question set in ``path``; every bad line is named in one error."""
    path = Path(path)
    if not path.is_file():
        raise EvaluationError(f"No question set at {path}.")
    questions, problems, seen = [], [], set()
    for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        try:
            q = _question(json.loads(line), str(n))
        except (ValueError, TypeError, AttributeError) as exc:
            problems.append(f"line {n}: {exc}")
            continue
        if q.id in seen:
            problems.append(f"line {n}: id {q.id!r} appears twice")
        seen.add(q.id)
        questions.append(q)
    if problems:
        raise EvaluationError(f"{path.name} has {len(problems)} bad line(s): "
                              + "; ".join(problems[:5]) + (" …" if len(problems) > 5 else ""))
    if not any(q.references or q.relevant for q in questions):
        raise EvaluationError(f"{path.name}: no question has reference answers ('answers' "
                              "or 'answer') or relevant documents ('relevant'), so there is "
                              "nothing to score against.")
    return questions


def _question(record: dict, line: str) -> EvalQuestion:
    if not isinstance(record, dict):
        raise ValueError("not a JSON object")
    text = record.get("question") or record.get("text") or record.get("query")
    if not isinstance(text, str) or not text.strip():
        raise ValueError("no 'question'")
    refs = record.get("answers", record.get("reference_answers", []))
    refs = [refs] if isinstance(refs, str) else list(refs or [])
    if isinstance(record.get("answer"), str):
        refs.append(record["answer"])
    refs = [r["answer"] if isinstance(r, dict) else r for r in refs]
    if not all(isinstance(r, str) for r in refs):
        raise ValueError("'answers' must be strings")
    relevant = record.get("relevant", [])
    relevant = [relevant] if isinstance(relevant, str) else list(relevant)
    qid = str(record.get("id", record.get("_id", line)))
    return EvalQuestion(qid, text.strip(), tuple(r for r in refs if r.strip()),
                        tuple(map(str, relevant)))


def score(q: EvalQuestion, reply: EvalReply) -> dict:
    """One reply's scores (None where the question has nothing to score it by)."""
    body = MARKER.sub("", reply.text).strip()
    relevant = set(q.relevant)
    return {
        "cited_relevant": bool(relevant & set(reply.cited)) if relevant else None,
        "retrieved_relevant": bool(relevant & set(reply.given)) if relevant else None,
        "f1": max((token_f1(body, r) for r in q.references), default=None),
        "rouge_l": max((rouge_l(body, r) for r in q.references), default=None),
        "refused": reply.refused,
    }


def run(questions: Sequence[EvalQuestion], models: Sequence[str], answer: Answerer,
        out: Path) -> Iterator[tuple[int, int, str]]:
    """Ask every question of every model, appending each scored reply to ``out`` as it
    comes; replies already in ``out`` are kept and not asked again. Yields (done, total,
    message) after each."""
    done = {(r["id"], r["model"]) for r in read_rows(out)}
    total = len(questions) * len(models)
    count = len(done & {(q.id, m) for q in questions for m in models})
    for model in models:
        for q in questions:
            if (q.id, model) in done:
                continue
            reply = answer(q, model)
            row = {"id": q.id, "model": model, "question": q.question, **score(q, reply),
                   "seconds": round(reply.seconds, 2), "answer": reply.text,
                   "cited": list(reply.cited), "given": list(reply.given)}
            with out.open("a", encoding="utf-8") as f:
                f.write(json.dumps(row, ensure_ascii=False) + "\n")
            count += 1
            yield count, total, f"{model}: {count}/{total}"


def read_rows(out: Path) -> list[dict]:
    if not out.is_file():
        return []
    rows = []
    for line in out.read_text(encoding="utf-8").splitlines():
        try:
            rows.append(json.loads(line))
        except json.JSONDecodeError:
            break  # a line cut by a crash: the rest is asked again
    return rows


def summarize(rows: Sequence[dict]) -> dict[str, dict]:
    """Per model, in the order first met: questions, each metric's mean over the rows
    that have it (None when none has), and the median seconds."""
    by_model: dict[str, list[dict]] = {}
    for row in rows:
        by_model.setdefault(row["model"], []).append(row)
    out = {}
    for model, mine in by_model.items():
        summary = {"questions": len(mine)}
        for metric in METRICS:
            values = [float(r[metric]) for r in mine if r.get(metric) is not None]
            summary[metric] = round(statistics.mean(values), 4) if values else None
        summary["median_seconds"] = round(statistics.median(r["seconds"] for r in mine), 2)
        out[model] = summary
    return out


# the rows of a comparison table: (label, metric, shown as a percentage)
TABLE = (("Answers citing a judged-relevant document", "cited_relevant", True),
         ("A judged-relevant document among the sources", "retrieved_relevant", True),
         ("Token-F1 against the reference answer", "f1", False),
         ("ROUGE-L against the reference answer", "rouge_l", False),
         ("Refused", "refused", True),
         ("Seconds per answer (median)", "median_seconds", False),
         ("Questions asked", "questions", False))


def comparison(summary: dict[str, dict]) -> tuple[list[str], list[list]]:
    """``summarize``'s result as a table: one row per metric, one column per model.

    >>> comparison({"base": {"f1": 0.2, "refused": 0.1}})[1][2:5]
    [['Token-F1 against the reference answer', 0.2], ['ROUGE-L against the reference answer', None], ['Refused', 10.0]]
    """
    models = list(summary)
    rows = [[label, *(_shown(summary[m].get(key), pct) for m in models)]
            for label, key, pct in TABLE]
    return ["Metric", *models], rows


def _shown(value, percent: bool):
    if value is None:
        return None
    return round(100 * value, 1) if percent else value
