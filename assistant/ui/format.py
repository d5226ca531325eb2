"""Plain formatting helpers for the UI (no gradio here, so they are easy to test)."""
from __future__ import annotations

import html

from assistant.types import Answer
from ingest.types import IngestReport
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


RETRIEVAL_HEADERS = ["#", "cited", "knowledge base", "file", "page", "bm25", "vector", "fused", "text"]


def retrieval_rows(answer: Answer) -> list[list]:
    """Why each source was given to the model: its retriever scores, and whether cited."""
    cited = {c.number for c in answer.citations}
    def fmt(v):
        return round(v, 4) if isinstance(v, float) else ""
    return [[s.number, "yes" if s.number in cited else "", s.kb, s.source, s.page or "—",
             fmt(s.scores.get("bm25")), fmt(s.scores.get("dense")), fmt(s.scores.get("fused", s.score)),
             s.text[:160] + ("…" if len(s.text) > 160 else "")] for s in answer.sources]
