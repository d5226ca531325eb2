"""The language of a text, and which embedder a knowledge base gets.

Docent is asked in English, Chinese and Vietnamese whatever language its documents are
in, so the "auto" embedder is the multilingual one for every knowledge base: a question
in Vietnamese about English documents is searched with its own words, not only through
the small model's translation. ``all-MiniLM-L6-v2`` retrieves English MedQuAD a little
better (0.618 against 0.596 nDCG@10, dense) and embeds ~7x faster on long passages, so
it stays available by name for a knowledge base that is only ever English; one that
receives a document or a question in another language is re-embedded with the
multilingual model (``KnowledgeBase.reembed``).

>>> detect_language("Take one tablet of metformin with food twice a day. " * 5)
'en'
>>> detect_language("高血压患者可以口服党参吗？党参有降血脂，降血压的作用。")
'zh'
>>> detect_language("Bệnh nhân tiểu đường nên uống thuốc sau bữa ăn. " * 5)
'vi'
"""
from __future__ import annotations

import re

from knowledge.embedders import E5_NAME, MINILM_NAME

AUTO = "auto"
_HAN = re.compile(r"[\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff]")
_LETTER = re.compile(r"[^\W\d_]", re.UNICODE)
_ASCII_LETTER = re.compile(r"[A-Za-z]")
# letters only Vietnamese uses among Latin scripts (with its tone marks)
_VI = re.compile(r"[ăâđêôơưạảấầẩẫậắằẳẵặẹẻẽếềểễệỉịọỏốồổỗộớờởỡợụủứừửữựỳỵỷỹ]", re.IGNORECASE)
_ENGLISH = frozenset(
    "the of and to in is that for with as are be this by on or from it not can your you "
    "may if should which have has at an when more other".split()
)


def detect_language(text: str, sample: int = 20_000) -> str:
    """``en``, ``zh``, ``vi`` or ``other`` for a sample of ``text``."""
    text = text[:sample]
    letters = len(_LETTER.findall(text)) or 1
    if len(_HAN.findall(text)) / letters > 0.2:
        return "zh"
    if len(_VI.findall(text)) / letters > 0.02:
        return "vi"
    if len(_ASCII_LETTER.findall(text)) / letters < 0.95:
        return "other"
    words = re.findall(r"[a-z]+", text.lower())
    if words and sum(w in _ENGLISH for w in words) / len(words) >= 0.12:
        return "en"
    return "other"


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
