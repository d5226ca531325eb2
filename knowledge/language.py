"""Which embedder a knowledge base gets, for the languages it holds and is asked in.

Docent is asked in English, Chinese and Vietnamese whatever language its documents are
in, so the "auto" embedder is the multilingual one for every knowledge base: a question
in Vietnamese about English documents is searched with its own words, not only through
the small model's translation. ``all-MiniLM-L6-v2`` retrieves English MedQuAD a little
better (0.618 against 0.596 nDCG@10, dense) and embeds ~7x faster on long passages, so
it stays available by name for a knowledge base that is only ever English; one that
receives a document or a question in another language is re-embedded with the
multilingual model (``KnowledgeBase.reembed``).
"""
from __future__ import annotations

from knowledge.embedders import E5_NAME, MINILM_NAME

AUTO = "auto"

# embedders that only read English (a knowledge base holding or asked in another language
# must not use them)
ENGLISH_ONLY = frozenset({MINILM_NAME})
MULTILINGUAL = E5_NAME


def embedder_for(language: str) -> str:
    """The installed embedder Docent picks for a new knowledge base ("auto"), whatever the
    first document's ``language`` (see the module's docstring)."""
    return MULTILINGUAL


def multilingual(embedder: str) -> bool:
    """Whether ``embedder`` reads every language Docent is asked in."""
    return embedder not in ENGLISH_ONLY


def reads(embedder: str, language: str) -> bool:
    """Whether ``embedder`` can embed text in ``language`` (unknown folders: assumed yes).

    >>> reads("all-MiniLM-L6-v2", "en"), reads("all-MiniLM-L6-v2", "zh"), reads("multilingual-e5-small", "vi")
    (True, False, True)
    """
    return language == "en" or multilingual(embedder)
