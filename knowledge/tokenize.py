"""Language-aware tokens for BM25.

English words are lower-cased and Snowball-stemmed; runs of Han characters are cut
into words with jieba (Simplified and Traditional); Vietnamese and other scripts are
split on word boundaries (Vietnamese syllables stay whole, with their diacritics).
Medical tokens keep their shape: doses (``500mg``), codes (``E11.9``), hyphenated
drug names.

>>> tokenize("Metformin 500mg for E11.9 diabetes")
['metformin', '500mg', 'e11.9', 'diabet']
>>> tokenize("糖尿病患者")
['糖尿病', '患者']
>>> tokenize("Bệnh tiểu đường")
['bệnh', 'tiểu', 'đường']
"""
from __future__ import annotations

import logging
import re
from functools import lru_cache

import snowballstemmer

_HAN = r"\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff"
_SPLIT = re.compile(rf"([{_HAN}]+)")
_WORD = re.compile(r"\w+(?:[.\-/]\w+)*", re.UNICODE)
_ASCII_ALPHA = re.compile(r"^[a-z]+$")
_STOP = frozenset(
    "a an and are as at be by for from has have in is it its of on or that the to was "
    "were will with what which who how when where why do does did this these those "
    "i you he she we they my your can could should would".split()
)


@lru_cache(maxsize=1)
def _stemmer():
    return snowballstemmer.stemmer("english")


@lru_cache(maxsize=1)
def _jieba():
    import jieba

    jieba.setLogLevel(logging.WARNING)
    return jieba


def tokenize(text: str) -> list[str]:
    """BM25 tokens of ``text`` (see module doc)."""
    out: list[str] = []
    for i, part in enumerate(_SPLIT.split(text.lower())):
        if not part:
            continue
        if i % 2 == 1:  # a run of Han characters
            out.extend(w for w in _jieba().cut(part) if w.strip())
        else:
            out.extend(_word_tokens(part))
    return out


def _word_tokens(text: str) -> list[str]:
    words = [w.strip("._-/") for w in _WORD.findall(text)]
    words = [w for w in words if w and w not in _STOP]
    stem = _stemmer().stemWord
    return [stem(w) if _ASCII_ALPHA.match(w) else w for w in words]
