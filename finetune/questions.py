"""Questions written by the local LLM for passages of a knowledge base.

Used to train a knowledge base's reranker (``finetune.reranker``) and, later, to build
fine-tuning sets. The questions come from the corpus only, never from evaluation
queries.

>>> clean_question('Question: "What dose of metformin is usual?"\\nThe passage says...')
'What dose of metformin is usual?'
>>> clean_question("Here is a question about the passage.") is None
True
"""
from __future__ import annotations

import random
import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

from common.text import detect_language
from knowledge.types import Chunk

_LANGUAGE_NAMES = {"en": "English", "zh": "Chinese", "vi": "Vietnamese"}
_PREFIX = re.compile(r"^\s*(?:\*\*)?(?:question|q|问题|問題|câu hỏi)\s*\d*\s*[:：]\s*", re.IGNORECASE)
_QUESTION_END = re.compile(r"[?？]")

SYSTEM = ("You write search questions. Given a passage, you write one question that a "
          "person might type to find it. The question names its subject, so it makes sense "
          "without the passage. Reply with the question only.")


@dataclass(frozen=True)
class GeneratedQuestion:
    chunk: Chunk
    question: str


def clean_question(reply: str) -> str | None:
    """The first question in an LLM reply, without labels or quotes; None if none."""
    for line in reply.strip().splitlines():
        line = _PREFIX.sub("", line.strip()).strip(" \"'“”*")
        m = _QUESTION_END.search(line)
        if m and len(line[: m.end()]) >= 8:
            return line[: m.end()].strip(" \"'“”*")
    return None


def prompt_for(chunk: Chunk, avoid: Sequence[str] = (), max_chars: int = 1500) -> list[dict]:
    """The question prompt for ``chunk``; ``avoid``: questions already written for it,
    so that the next one asks about something else in the passage."""
    language = _LANGUAGE_NAMES.get(detect_language(chunk.text), "the passage's language")
    ask = f"Write one question in {language} that this passage answers."
    if avoid:
        listed = "\n".join(f"- {q}" for q in avoid)
        ask += (f" It must ask about a different fact than these questions:\n{listed}")
    return [
        {"role": "system", "content": SYSTEM},
        {"role": "user", "content": f"Passage:\n{chunk.index_text[:max_chars]}\n\n{ask}"},
    ]


def generate_questions(llm, chunks: Sequence[Chunk], max_tokens: int = 48,
                       temperature: float = 0.3, per_chunk: int = 1
                       ) -> Iterator[GeneratedQuestion | None]:
    """``per_chunk`` questions per chunk (each asked to differ from the ones before), in
    order; ``None`` where a reply held no new question (so callers can count progress
    per attempt)."""
    for chunk in chunks:
        written: list[str] = []
        for _ in range(per_chunk):
            # later questions sample warmer: small models otherwise repeat the first one
            temp = max(temperature, 0.8) if written else temperature
            reply = "".join(llm.stream_chat(prompt_for(chunk, written), max_tokens, temp))
            q = clean_question(reply)
            if q and q.casefold() in {w.casefold() for w in written}:
                q = None
            if q:
                written.append(q)
            yield GeneratedQuestion(chunk, q) if q else None


def sample_chunks(chunks: Sequence[Chunk], n: int, seed: int = 0,
                  min_chars: int = 200) -> list[Chunk]:
    """Up to ``n`` chunks spread over documents: round-robin over documents in a seeded
    random order, skipping fragments too short to ask about."""
    rng = random.Random(seed)
    by_doc: dict[str, list[Chunk]] = {}
    for c in chunks:
        if len(c.text) >= min_chars:
            by_doc.setdefault(c.doc_id, []).append(c)
    docs = list(by_doc)
    rng.shuffle(docs)
    for d in docs:
        rng.shuffle(by_doc[d])
    picked: list[Chunk] = []
    while len(picked) < n and any(by_doc.values()):
        for d in docs:
            if by_doc[d] and len(picked) < n:
                picked.append(by_doc[d].pop())
    return picked
