"""Recommendations drawn from guideline documents, each citing the text it comes from.

With a ``focus`` ("patient with high blood pressure"), the passages of the selected
documents are ranked by BM25 against it (an index built over the selection only, so
every selected passage competes and no other document can crowd it out), the passages
that match first, then the rest in reading order; without one, the passages are taken
in reading order. As many as fit the model's context become numbered sources.
"""
from __future__ import annotations

from collections.abc import Generator, Sequence
from dataclasses import dataclass

from assistant.llm import LLM
from assistant.prompts import fit_sources
from assistant.tasks.common import (
    TaskProgress,
    as_chunks,
    cite,
    context_budget,
    generate,
    require_text,
    source_block,
    write_in,
)
from assistant.types import Citation, Source
from knowledge.bm25 import BM25Index
from knowledge.tokenize import tokenize
from knowledge.types import Chunk, Hit

SYSTEM = ("You give practical recommendations drawn only from the numbered guideline "
          "sources. End every recommendation with the number of the source it comes from "
          "in square brackets, like [1] or [2]. Do not give advice the sources do not "
          "contain.")


@dataclass(frozen=True)
class Advice:
    text: str
    citations: tuple[Citation, ...]
    sources: tuple[Source, ...]
    focus: str = ""


def rank_chunks(chunks: Sequence[Chunk], focus: str) -> list[Chunk]:
    """``chunks`` with those matching ``focus`` first (best BM25 score first), then the
    others in their original order."""
    index = BM25Index()
    for c in chunks:
        index.add(c, tokenize(c.index_text))
    ranked = [h.chunk for h in index.search(focus, len(chunks)) if h.score > 0]
    seen = {c.chunk_id for c in ranked}
    return ranked + [c for c in chunks if c.chunk_id not in seen]


def _instruction(focus: str, language: str) -> str:
    target = f" for this situation: {focus.strip()}" if focus.strip() else ""
    return (f"Give the recommendations these sources make{target}, as a bulleted list, one "
            "recommendation per bullet, each ending with its source number like [1]. Use "
            "only what the sources say; if they make no recommendation for this, say so. "
            + write_in(language))


def _sources(items: Sequence[tuple[Chunk, str]]) -> list[Source]:
    return [Source(n, c.chunk_id, kb, c.source, c.page, c.text, 0.0)
            for n, (c, kb) in enumerate(items, start=1)]


def advice(llm: LLM, chunks_or_hits: Sequence[Chunk | Hit], focus: str, language: str,
           max_tokens: int = 512, temperature: float = 0.2, kb: str = ""
           ) -> Generator[TaskProgress, None, Advice]:
    """Progress events, then the ``Advice``. Chunks are ranked against ``focus`` here;
    hits (from a search) are taken in their given order."""
    items = as_chunks(chunks_or_hits)
    require_text(items)
    if focus.strip() and not any(isinstance(i, Hit) for i in chunks_or_hits):
        order = {c.chunk_id: i for i, (c, _) in enumerate(items)}
        items = [items[order[c.chunk_id]] for c in rank_chunks([c for c, _ in items], focus)]
    items = [(c, k or kb) for c, k in items]
    instruction = _instruction(focus, language)
    budget = context_budget(llm, max_tokens, SYSTEM + instruction)
    sources = fit_sources(_sources(items), budget, llm.count_tokens)
    yield TaskProgress("advise", 0, 1)
    user = f"Sources:\n\n{source_block(sources)}\n\n{instruction}"
    raw = generate(llm, [{"role": "system", "content": SYSTEM},
                         {"role": "user", "content": user}], max_tokens, temperature)
    yield TaskProgress("advise", 1, 1)
    text, citations = cite(raw, sources, language)
    return Advice(text, citations, tuple(sources), focus.strip())
