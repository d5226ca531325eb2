"""Data the assistant hands to its callers (UI, CLI, HTTP API)."""
from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class Source:
    """A numbered source given to the model (``number`` matches ``[n]`` in the answer)."""

    number: int
    chunk_id: str
    kb: str
    source: str
    page: int
    text: str
    score: float
    scores: dict[str, float] = field(default_factory=dict, compare=False, hash=False)

    @property
    def label(self) -> str:
        return f"{self.source}, p. {self.page}" if self.page else self.source


@dataclass(frozen=True)
class Citation:
    """A source the answer used, with the sentence of the source that supports it."""

    number: int
    source: str
    page: int
    quote: str
    chunk_id: str
    kb: str
    inferred: bool = False  # True when the model gave no marker and overlap chose it

    @property
    def label(self) -> str:
        return f"{self.source}, p. {self.page}" if self.page else self.source


@dataclass(frozen=True)
class Reading:
    """The numbered sources the model is about to read, yielded before its first token:
    reading them takes most of an answer's wait on a CPU, so a page can show them."""

    sources: tuple[Source, ...]
    language: str = ""  # the question's, which the answer is written in


@dataclass(frozen=True)
class AnswerDelta:
    """A piece of streamed answer text."""

    text: str


@dataclass(frozen=True)
class Answer:
    question: str
    text: str
    citations: tuple[Citation, ...]
    sources: tuple[Source, ...]
    model: str
    timings: dict[str, float] = field(default_factory=dict)
    tokens: int = 0
    search_query: str = ""  # what was searched: the question, or its standalone rewrite
    # "" (answered), "no_evidence" (evidence gate), "out_of_scope" (guardrail) or
    # "unsupported" (a medical answer that cited nothing, withdrawn)
    refused: str = ""
    language: str = ""  # en, zh-Hans, zh-Hant or vi: the question's, and the answer's
    notices: tuple[str, ...] = ()  # lines added to the model's text (disclaimer, ...)
    prompt_tokens: int = 0
    support: float | None = None  # the best source's similarity (what the gate judged)
    # the model's intermediate outputs (a condensed follow-up, a translated query), each
    # "used" or "rejected" with why: the search then used the question itself
    steps: tuple[str, ...] = ()
