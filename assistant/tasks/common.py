"""What the document tasks share: progress events, the document's language (and
Traditional Chinese output), numbered sources, context windows and ``[n]`` markers
(invalid ones dropped, missing ones added from word overlap).

>>> language_name("zh-Hant")
'Traditional Chinese'
>>> document_language_of_text("高血壓患者可以口服黨參嗎？黨參有降血脂，降血壓的作用。")
'zh-Hant'
>>> document_language_of_text("高血压患者可以口服党参吗？党参有降血脂，降血压的作用。")
'zh-Hans'
"""
from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, replace

from assistant.citations import add_missing_markers, build_citations, clean_markers, marker_numbers
from assistant.errors import AssistantError
from assistant.language import is_traditional, to_traditional
from assistant.llm import LLM
from assistant.prompts import fit_sources, format_source
from assistant.types import Citation, Source
from common.text import LANGUAGE_NAMES, detect_language
from knowledge.types import Chunk, Hit

PROMPT_MARGIN = 64  # tokens kept free for the chat template


class TaskError(AssistantError):
    """A document task cannot run (no text, context too small for the prompt)."""


@dataclass(frozen=True)
class TaskProgress:
    """``done`` of ``total`` steps of ``stage`` are finished; ``skipped`` counts items
    given up on so far (exam questions the model did not write in a usable form)."""

    stage: str
    done: int
    total: int
    skipped: int = 0

    def __post_init__(self):
        if self.done < 0 or self.total < 0 or self.skipped < 0:
            raise ValueError(f"negative progress: {self}")

    @property
    def fraction(self) -> float:
        return min(1.0, self.done / self.total) if self.total else 0.0


# --- language -----------------------------------------------------------------
def document_language_of_text(text: str) -> str:
    """``en``, ``zh-Hans``, ``zh-Hant``, ``vi`` or ``other``."""
    language = detect_language(text)
    if language == "zh":
        return "zh-Hant" if is_traditional(text) else "zh-Hans"
    return language


def document_language(chunks: Sequence[Chunk]) -> str:
    """The language of the documents the chunks come from (a sample of their text)."""
    sample, size = [], 0
    for c in chunks:
        sample.append(c.text)
        size += len(c.text)
        if size > 20_000:
            break
    return document_language_of_text("\n".join(sample))


def language_name(language: str) -> str:
    return LANGUAGE_NAMES.get(language, "the same language as the document")


def write_in(language: str) -> str:
    """The language instruction every task prompt ends with."""
    return f"Write in {language_name(language)}."


def localize(text: str, language: str) -> str:
    """The model's text, converted to Traditional Chinese (Taiwan usage) when the
    document is Traditional: small models drift to Simplified."""
    return to_traditional(text) if language == "zh-Hant" and text else text


# --- sources and windows ------------------------------------------------------
def as_chunks(items: Iterable[Chunk | Hit]) -> list[tuple[Chunk, str]]:
    """(chunk, knowledge base name) for chunks or search hits."""
    return [(i.chunk, i.kb) if isinstance(i, Hit) else (i, "") for i in items]


def chunk_sources(chunks: Sequence[Chunk], kb: str = "", start: int = 1) -> list[Source]:
    """The chunks as numbered sources ``[start]``, ``[start + 1]``, ..."""
    return [Source(n, c.chunk_id, kb, c.source, c.page, c.text, 0.0)
            for n, c in enumerate(chunks, start=start)]


def pack(items: Sequence, cost: Callable[[object], int], budget: int) -> list[list]:
    """Consecutive ``items`` grouped so each group's total ``cost`` fits ``budget``
    (an item costing more than ``budget`` gets a group of its own).

    >>> pack([3, 4, 2, 6, 1], cost=lambda x: x, budget=7)
    [[3, 4], [2], [6, 1]]
    """
    groups: list[list] = []
    used = 0
    for item in items:
        c = cost(item)
        if groups and groups[-1] and used + c <= budget:
            groups[-1].append(item)
            used += c
        else:
            groups.append([item])
            used = c
    return groups


def windows(sources: Sequence[Source], budget: int,
            count: Callable[[str], int]) -> list[list[Source]]:
    """Consecutive sources grouped so each group's formatted text fits ``budget``
    tokens; a source too long for a window alone is cut to fit."""
    fitted = [s if count(format_source(s)) + 2 <= budget else fit_sources([s], budget, count)[0]
              for s in sources]
    return pack(fitted, lambda s: count(format_source(s)) + 2, budget)


def source_block(sources: Sequence[Source]) -> str:
    return "\n\n".join(format_source(s) for s in sources)


def context_budget(llm: LLM, max_tokens: int, prompt: str) -> int:
    """Tokens left for sources once the prompt and the reply are accounted for."""
    budget = llm.n_ctx - max_tokens - llm.count_tokens(prompt) - PROMPT_MARGIN
    if budget < 64:
        raise TaskError(f"The model's context ({llm.n_ctx} tokens) is too small for this task "
                        f"with max_tokens={max_tokens}; raise llm.n_ctx or lower llm.max_tokens.")
    return budget


def generate(llm: LLM, messages: list[dict], max_tokens: int, temperature: float) -> str:
    return "".join(llm.stream_chat(messages, max_tokens, temperature)).strip()


def require_text(chunks: Sequence) -> None:
    if not chunks:
        raise TaskError("The selected documents have no text to work on.")


# --- markers ------------------------------------------------------------------
_TAIL = re.compile(r"[\s.!?:;,。！？：；，]*$")


_LEADING = re.compile(r"^(\s*(?:[-*•]|\d+[.)])\s+)((?:\[\d{1,3}(?:,\s*\d{1,3})*\]\s*)+)(\S.*)$",
                      re.MULTILINE)


def trailing_markers(text: str) -> str:
    """Markers a bullet starts with moved to its end, where the house style puts them.

    >>> trailing_markers("- [2] Eat less salt.\\n- Walk daily [3].")
    '- Eat less salt [2].\\n- Walk daily [3].'
    """
    def move(m: re.Match) -> str:
        body = m.group(3).rstrip()
        tail = _TAIL.search(body).group(0)
        return f"{m.group(1)}{body[: len(body) - len(tail)]} {m.group(2).strip()}{tail}"

    return _LEADING.sub(move, text)


def cite(raw: str, sources: Sequence[Source], language: str) -> tuple[str, tuple[Citation, ...]]:
    """The model's text with invalid markers dropped, missing ones added from word
    overlap (their citations marked ``inferred``), in the document's script."""
    valid = {s.number for s in sources}
    text = trailing_markers(localize(clean_markers(raw, valid).strip(), language))
    own = set(marker_numbers(text))
    text = add_missing_markers(text, sources)
    citations = tuple(c if c.number in own else replace(c, inferred=True)
                      for c in build_citations(text, sources))
    return text, citations
