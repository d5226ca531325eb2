"""Plain formatting helpers for the UI (no gradio here, so they are easy to test)."""
from __future__ import annotations

import html
import re

from assistant.types import Answer
from ingest.types import IngestReport
from knowledge.tokenize import tokenize
from knowledge.types import DocumentRecord


def citations_markdown(answer: Answer) -> str:
    if not answer.citations:
        return "\n\n---\n*No source was cited for this answer.*"
    lines = ["", "", "---", "**Sources**"]
    for c in answer.citations:
        note = " *(matched by content)*" if c.inferred else ""
        quote = html.escape(c.quote).replace("\n", " ")
        lines.append(f"- **[{c.number}] {html.escape(c.label)}**{note}: “{quote}”")
    return "\n".join(lines)


OUTCOME = {"added": "added", "replaced": "replaced (new version)",
           "unchanged": "unchanged (already indexed)", "failed": "FAILED",
           "deleted": "removed (file gone)"}
REPORT_HEADERS = ["file", "result", "chunks", "duplicate chunks", "pages", "reason / notes", "seconds"]
DOC_HEADERS = ["file", "pages", "chunks", "duplicate chunks", "characters", "added", "id"]


def report_rows(report: IngestReport) -> list[list]:
    return [[r.source, OUTCOME[r.status], r.chunks, r.duplicates, r.pages or "—", r.reason or "",
             r.seconds] for r in report.results]


def document_rows(docs: list[DocumentRecord]) -> list[list]:
    return [[d.source, d.pages or "—", d.chunks, d.duplicates, d.chars, d.added_at[:19], d.doc_id]
            for d in docs]


def document_choices(docs: list[DocumentRecord]) -> list[tuple[str, str]]:
    return [(f"{d.source} ({d.chunks} chunks)", d.doc_id) for d in docs]


RETRIEVAL_HEADERS = ["#", "cited", "knowledge base", "file", "page", "bm25", "vector", "fused",
                     "rerank", "text (query words in bold)"]
RETRIEVAL_TYPES = ["number", "str", "str", "str", "str", "number", "number", "number", "number",
                   "markdown"]


def retrieval_rows(answer: Answer) -> list[list]:
    """Why each source was given to the model: its retriever scores, and whether cited."""
    cited = {c.number for c in answer.citations}
    def fmt(v):
        return round(v, 4) if isinstance(v, float) else None
    query = answer.search_query or answer.question
    return [[s.number, "yes" if s.number in cited else "", s.kb, s.source, str(s.page or "—"),
             fmt(s.scores.get("bm25")), fmt(s.scores.get("dense")),
             fmt(s.scores.get("fused", s.score)), fmt(s.scores.get("rerank")),
             highlight(s.text[:300] + ("…" if len(s.text) > 300 else ""), query)]
            for s in answer.sources]


def highlight(text: str, query: str) -> str:
    """``text`` as Markdown-safe text with the words that match ``query`` (same BM25
    token) in bold.

    >>> highlight("Take metformin with meals.", "metformin meal")
    'Take **metformin** with **meals**.'
    """
    wanted = set(tokenize(query))
    out, last = [], 0
    for m in re.finditer(r"\w+(?:[.\-/]\w+)*", text):
        out.append(_escape(text[last:m.start()]))
        word = _escape(m.group())
        out.append(f"**{word}**" if wanted.intersection(tokenize(m.group())) else word)
        last = m.end()
    out.append(_escape(text[last:]))
    return "".join(out)


def _escape(text: str) -> str:
    return re.sub(r"([\\`*_{}\[\]<>#|~])", r"\\\1", html.escape(text, quote=False)).replace("\n", " ")


def past_turns(history: list[dict]) -> list[tuple[str, str]]:
    """(question, answer) pairs of a Gradio messages history, citations stripped.

    >>> past_turns([{"role": "user", "content": "Dose?"},
    ...             {"role": "assistant", "content": "500 mg [1].\\n\\n---\\n**Sources**"}])
    [('Dose?', '500 mg [1].')]
    """
    pairs, question = [], None
    for m in history:
        content = m.get("content") if isinstance(m, dict) else None
        if not isinstance(content, str):
            continue
        if m.get("role") == "user":
            question = content
        elif m.get("role") == "assistant" and question is not None:
            pairs.append((question, content.split("\n\n---\n")[0].strip()))
            question = None
    return pairs
