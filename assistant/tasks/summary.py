"""Summaries of whole documents, map-reduce over their chunks, cited by page.

Every chunk is a numbered source ``[n] (file, page p)`` in one numbering for the whole
selection. Map: consecutive sources are packed into windows that fit the model's
context and each window is summarized with ``[n]`` markers. Reduce: the partial
summaries (markers kept, they refer to the global numbering) are combined into one,
in several rounds when they do not fit one prompt. A selection that fits one window
is summarized in one call.
"""
from __future__ import annotations

import logging
from collections.abc import Generator, Sequence
from dataclasses import dataclass

from assistant.citations import clean_markers
from assistant.llm import LLM
from assistant.tasks.common import (
    TaskProgress,
    add_missing_markers,
    chunk_sources,
    cite,
    context_budget,
    generate,
    pack,
    require_text,
    source_block,
    windows,
    write_in,
)
from assistant.types import Citation, Source
from knowledge.types import Chunk

log = logging.getLogger(__name__)

SYSTEM = ("You summarize documents for their reader, using only the numbered sources. After "
          "each sentence, cite the source it comes from with its number in square brackets, "
          "like [1] or [2]. Do not add facts the sources do not state.")
_CITE = ("End every sentence and every bullet with the number of the source it comes from "
         "in square brackets, for example [2].")
_WHOLE = ("Summarize this document in a short paragraph, then up to 8 bullet points with its "
          "key facts, findings, numbers and recommendations. " + _CITE)
_PART = ("These sources are one part of a longer document. Summarize this part in up to 5 "
         "bullet points with its key facts, findings, numbers and recommendations. " + _CITE)
_COMBINE = ("Above are summaries of consecutive parts of a document, with source numbers in "
            "square brackets. Combine them into one summary of the whole document: a short "
            "paragraph, then up to 8 bullet points with the key facts, findings, numbers and "
            "recommendations. Keep each [n] source number after the sentence it supports; do "
            "not invent new numbers.")
MAX_ROUNDS = 8


@dataclass(frozen=True)
class Summary:
    text: str
    citations: tuple[Citation, ...]
    sources: tuple[Source, ...]
    documents: tuple[str, ...]  # file names of the summarized documents


def _messages(body: str, instruction: str, language: str) -> list[dict]:
    return [{"role": "system", "content": SYSTEM},
            {"role": "user", "content": f"{body}\n\n{instruction} {write_in(language)}"}]


def _sources_prompt(sources: Sequence[Source]) -> str:
    return f"Sources:\n\n{source_block(sources)}"


def _parts_prompt(parts: Sequence[str]) -> str:
    return "\n\n".join(f"Part {i}:\n{p.strip()}" for i, p in enumerate(parts, start=1))


def summarize(llm: LLM, chunks: Sequence[Chunk], language: str, max_tokens: int = 512,
              temperature: float = 0.2, kb: str = "") -> Generator[TaskProgress, None, Summary]:
    """Progress events, then (as the generator's return value) the ``Summary`` of
    ``chunks`` (one or several documents, in reading order) in ``language``."""
    require_text(chunks)
    sources = chunk_sources(chunks, kb)
    budget = context_budget(llm, max_tokens, SYSTEM + max(_WHOLE, _PART, key=len)
                            + write_in(language))
    groups = windows(sources, budget, llm.count_tokens)
    if len(groups) == 1:
        yield TaskProgress("summarize", 0, 1)
        raw = generate(llm, _messages(_sources_prompt(groups[0]), _WHOLE, language),
                       max_tokens, temperature)
        yield TaskProgress("summarize", 1, 1)
    else:
        raw = yield from _map_reduce(llm, groups, language, max_tokens, temperature)
    text, citations = cite(raw, sources, language)
    documents = tuple(dict.fromkeys(c.source for c in chunks))
    return Summary(text, citations, tuple(sources), documents)


def _map_reduce(llm: LLM, groups: list[list[Source]], language: str, max_tokens: int,
                temperature: float) -> Generator[TaskProgress, None, str]:
    combine_budget = context_budget(llm, max_tokens, SYSTEM + _COMBINE + write_in(language))
    part_tokens = max(48, min(max_tokens, combine_budget // len(groups) - 8))
    partials = []
    for i, group in enumerate(groups):
        yield TaskProgress("summarize", i, len(groups))
        raw = generate(llm, _messages(_sources_prompt(group), _PART, language), part_tokens,
                       temperature)
        partials.append(add_missing_markers(clean_markers(raw, {s.number for s in group}), group))
    yield TaskProgress("summarize", len(groups), len(groups))
    return (yield from _combine(llm, partials, language, max_tokens, temperature,
                                combine_budget))


def _combine(llm: LLM, partials: list[str], language: str, max_tokens: int,
             temperature: float, budget: int) -> Generator[TaskProgress, None, str]:
    """Partial summaries combined into one, in rounds while they do not fit one prompt."""
    def cost(text: str) -> int:
        return llm.count_tokens(text) + 8

    step_tokens = max(32, min(max_tokens, budget // 3))
    for _ in range(MAX_ROUNDS):
        groups = pack(partials, cost, budget)
        if len(groups) == 1:
            break
        partials = []
        for i, group in enumerate(groups):
            yield TaskProgress("combine", i, len(groups))
            partials.append(generate(llm, _messages(_parts_prompt(group), _COMBINE, language),
                                     step_tokens, temperature))
    groups = pack(partials, cost, budget)
    if len(groups) > 1:
        log.warning("Summary: %d partial summaries left after %d rounds; combining the "
                    "first %d", len(partials), MAX_ROUNDS, len(groups[0]))
    yield TaskProgress("combine", 0, 1)
    text = generate(llm, _messages(_parts_prompt(groups[0]), _COMBINE, language),
                    max_tokens, temperature)
    yield TaskProgress("combine", 1, 1)
    return text
