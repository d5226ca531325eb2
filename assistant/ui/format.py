"""Plain formatting helpers for the UI (no gradio here, so they are easy to test)."""
from __future__ import annotations

import html
import re
from collections.abc import Sequence
from datetime import datetime

from assistant.citation_view import CitationView
from assistant.conversations import ConversationInfo, Turn
from assistant.messages import say
from assistant.types import Answer, Citation, Source
from ingest.types import IngestReport
from knowledge.tokenize import tokenize
from knowledge.types import DocumentRecord


def answer_markdown(text: str, citations: Sequence[Citation], refused: bool = False) -> str:
    """An answer as the chat shows it: the text (notices and disclaimer are part of it),
    then its sources. A refusal or abstention is shown as it is, with no "no source"
    footer.

    >>> answer_markdown("I cannot answer that from your documents.", (), refused=True)
    'I cannot answer that from your documents.'
    """
    body = text.strip()
    if refused and not citations:
        return body
    return body + citations_markdown(citations)


def answer_view(answer: Answer) -> str:
    """``answer_markdown`` of a final ``Answer`` (its ``refused`` read where present); an
    answer withheld for want of evidence lists the closest passages it promises."""
    refused = getattr(answer, "refused", "")
    view = answer_markdown(answer.text, answer.citations, bool(refused))
    if refused in ("no_evidence", "unsupported") and answer.sources:
        view += closest_markdown(answer.sources, answer.language or "en")
    return view


def closest_markdown(sources: Sequence[Source], lang: str, count: int = 3,
                     chars: int = 240) -> str:
    """The first ``count`` sources as a list under a heading in the question's language.

    >>> src = Source(1, "c", "kb", "asthma.docx", 0, "Children with asthma cough at night.", 1.0)
    >>> print(closest_markdown([src], "vi"))
    <BLANKLINE>
    <BLANKLINE>
    ---
    **Những đoạn gần nhất**
    - **asthma.docx**: “Children with asthma cough at night.”
    """
    lines = ["", "", "---", f"**{say('closest', lang)}**"]
    for s in sources[:count]:
        text = " ".join(s.text.split())
        text = text if len(text) <= chars else text[:chars].rsplit(" ", 1)[0] + "…"
        lines.append(f"- **{html.escape(s.label)}**: “{html.escape(text)}”")
    return "\n".join(lines)


def draft_markdown(text: str, lang: str) -> str:
    """Streamed text that may still be withheld, shown as a draft until it is final."""
    return f"*({say('draft', lang)})*\n\n{text}"


def reading_markdown(sources: Sequence[Source]) -> str:
    """What the chat shows while the model reads its sources (before the first token).

    >>> src = lambda n, f, p: Source(n, "c", "kb", f, p, "text", 1.0)
    >>> reading_markdown([src(1, "a.pdf", 2), src(2, "a.pdf", 2), src(3, "b.txt", 0)])
    '*Reading 3 passages (a.pdf, p. 2; b.txt) before answering…*'
    """
    places = dict.fromkeys(s.label for s in sources)
    return (f"*Reading {len(sources)} passage{'s' if len(sources) != 1 else ''} "
            f"({html.escape('; '.join(places))}) before answering…*")


def citations_markdown(citations: Sequence[Citation]) -> str:
    if not citations:
        return "\n\n---\n*No source was cited for this answer.*"
    lines = ["", "", "---", "**Sources**"]
    for c in citations:
        note = " *(matched by content)*" if c.inferred else ""
        quote = html.escape(c.quote).replace("\n", " ")
        lines.append(f"- **[{c.number}] {html.escape(c.label)}**{note}: “{quote}”")
    return "\n".join(lines)


# --- conversations and citations ----------------------------------------------------
def turn_messages(turns: Sequence[Turn]) -> list[dict]:
    """A stored conversation as chat messages, each answer with its sources."""
    out: list[dict] = []
    for t in turns:
        out.append({"role": "user", "content": t.question})
        if t.status == "failed":
            content = failed_markdown(t.error, t.answer)
        elif t.status == "stopped":
            content = stopped_markdown(t.answer)
        elif t.status == "pending":
            content = "⏳ This question is being answered (or was, in another tab)."
        else:
            content = answer_markdown(t.answer, t.citations, t.refused)
        out.append({"role": "assistant", "content": content})
    return out


def failed_markdown(reason: str, partial: str = "") -> str:
    """A failed answer: what was streamed, then why, and that the question is kept.

    >>> print(failed_markdown("The model server was killed", "Adults take"))
    Adults take
    <BLANKLINE>
    ⚠️ **The answer failed**: The model server was killed. Your question is saved: click **Retry** to ask it again.
    """
    head = f"{partial.strip()}\n\n" if partial.strip() else ""
    return (f"{head}⚠️ **The answer failed**: {reason.rstrip('.')}. Your question is saved: "
            "click **Retry** to ask it again.")


def stopped_markdown(partial: str) -> str:
    """An answer the user stopped: what was streamed, marked as stopped."""
    return (f"{partial.strip()}\n\n*(Stopped.)*" if partial.strip()
            else "*(Stopped before the answer began.)*")


def conversation_choices(infos: Sequence[ConversationInfo]) -> list[tuple[str, str]]:
    """(label, id) for each conversation: its title and when it was last active (local
    time)."""
    return [(f"{c.title or 'Untitled conversation'} · {local_time(c.updated_at)}",
             c.conversation_id) for c in infos]


def local_time(iso: str) -> str:
    """An ISO 8601 UTC time as local "YYYY-MM-DD HH:MM" (or the text as given)."""
    try:
        return datetime.fromisoformat(iso).astimezone().strftime("%Y-%m-%d %H:%M")
    except ValueError:
        return iso[:16]


def citation_choices(citations: Sequence[Citation], turn: int) -> list[tuple[str, str]]:
    """Radio choices for the citations of answer ``turn`` (0-based): "[n] file, p. X".

    >>> citation_choices([Citation(2, "a.pdf", 3, "q", "c9", "default")], 0)
    [('[2] a.pdf, p. 3', '0:0')]
    """
    return [(f"[{c.number}] {c.label}", f"{turn}:{i}") for i, c in enumerate(citations)]


def citation_html(view: CitationView) -> str:
    """The cited passage as HTML, its quote in ``<mark>``.

    >>> v = CitationView("c1", "default", "a.pdf", 2, "Take 5 mg. <b>Rest</b>.", (0, 10), None)
    >>> citation_html(v).split("</p>", 1)[1]
    '<p class="passage"><mark>Take 5 mg.</mark> &lt;b&gt;Rest&lt;/b&gt;.</p>'
    """
    head = f"<strong>{html.escape(view.label)}</strong>"
    if view.heading:
        head += f" · <em>{html.escape(view.heading)}</em>"
    note = ""
    if view.span is None:
        note = "<p><em>The quoted sentence was not found word for word in the passage.</em></p>"
        body = _html_text(view.text)
    else:
        a, b = view.span
        body = (_html_text(view.text[:a]) + "<mark>" + _html_text(view.text[a:b]) + "</mark>"
                + _html_text(view.text[b:]))
    return f'<p>{head}</p>{note}<p class="passage">{body}</p>'


def _html_text(text: str) -> str:
    return html.escape(text, quote=False).replace("\n", "<br>")


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


RETRIEVAL_HEADERS = ["#", "cited", "knowledge base", "file", "page", "bm25", "vector", "heading",
                     "fused", "rerank", "text (query words in bold)"]
RETRIEVAL_TYPES = ["number", "str", "str", "str", "str", "number", "number", "number", "number",
                   "number", "markdown"]


def retrieval_rows(answer: Answer) -> list[list]:
    """Why each source was given to the model: its retriever scores (``heading``: its
    section heading scored alone, 0-1), and whether cited."""
    cited = {c.number for c in answer.citations}
    def fmt(v):
        return round(v, 4) if isinstance(v, float) else None
    query = answer.search_query or answer.question
    return [[s.number, "yes" if s.number in cited else "", s.kb, s.source, str(s.page or "—"),
             fmt(s.scores.get("bm25")), fmt(s.scores.get("dense")), fmt(s.scores.get("heading")),
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
