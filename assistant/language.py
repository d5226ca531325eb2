"""The language of a question, the instruction that makes the model answer in it, and
Traditional Chinese kept Traditional (the default model drifts to Simplified).

>>> question_language("What is the usual dose of paracetamol?")
'en'
>>> question_language("高血压患者应该注意什么饮食？")
'zh-Hans'
>>> question_language("高血壓患者應該注意什麼飲食？")
'zh-Hant'
>>> question_language("Người bị cao huyết áp nên ăn uống như thế nào?")
'vi'
>>> c = TraditionalStream()
>>> "".join([c.feed("这个药物的剂"), c.feed("量是多少？"), c.flush()])
'這個藥物的劑量是多少？'
"""
from __future__ import annotations

import re
from functools import lru_cache

from common.text import EAST_ASIAN, HAN, HAN_RANGE, LANGUAGE_NAMES, detect_language

_HAN_TAIL = re.compile(f"[{HAN_RANGE}]{{1,6}}$")


@lru_cache(maxsize=4)
def _opencc(config: str):
    import opencc

    return opencc.OpenCC(config)


def is_traditional(text: str) -> bool:
    """True when more Han characters change from Traditional to Simplified than back."""
    han = "".join(HAN.findall(text))
    if not han:
        return False
    to_simplified = sum(a != b for a, b in zip(han, _opencc("t2s").convert(han)))
    to_traditional = sum(a != b for a, b in zip(han, _opencc("s2t").convert(han)))
    return to_simplified > to_traditional


def question_language(text: str) -> str:
    """``en``, ``zh-Hans``, ``zh-Hant`` or ``vi``; other Latin-script text counts as
    English (the models answer it best), other scripts too."""
    lang = detect_language(text)
    if lang == "zh":
        return "zh-Hant" if is_traditional(text) else "zh-Hans"
    return "vi" if lang == "vi" else "en"


def answer_instruction(lang: str) -> str:
    name = LANGUAGE_NAMES.get(lang, "English")
    extra = " Use Traditional Chinese characters (繁體中文), not Simplified." if lang == "zh-Hant" else ""
    return f"Write the answer in {name}, the language of the question.{extra}"


def to_traditional(text: str) -> str:
    return _opencc("s2twp").convert(text)


class TraditionalStream:
    """Converts streamed text to Traditional Chinese (Taiwan phrasing), holding back a
    trailing run of Han characters so a phrase split across pieces converts whole."""

    def __init__(self):
        self._buf = ""

    def feed(self, piece: str) -> str:
        self._buf += piece
        tail = _HAN_TAIL.search(self._buf)
        cut = tail.start() if tail and len(self._buf) - tail.start() < 6 else len(self._buf)
        ready, self._buf = self._buf[:cut], self._buf[cut:]
        return to_traditional(ready) if ready else ""

    def flush(self) -> str:
        ready, self._buf = self._buf, ""
        return to_traditional(ready) if ready else ""


class LatinOnlyStream:
    """Drops East Asian characters from a Vietnamese or English answer as it streams:
    the net under decoding-time prevention (``LLM.latin_only``), for backends that
    cannot bias tokens. ``removed`` counts what it dropped.

    >>> s = LatinOnlyStream()
    >>> s.feed("Mệt mỏi và呕吐 [1]."), s.removed
    ('Mệt mỏi và [1].', 2)
    """

    def __init__(self):
        self.removed = 0

    def feed(self, piece: str) -> str:
        kept = EAST_ASIAN.sub("", piece)
        self.removed += len(piece) - len(kept)
        return kept

    def flush(self) -> str:
        return ""
