"""Is extracted text usable? Scores for garbled extraction, mojibake and OCR garbage.

>>> plausibility("Metformin 500 mg twice daily") == 1.0
True
>>> plausibility("ɹɹং Θͨ͘͠ͱ͍;ݱ") < 0.6   # a CJK font decoded with the wrong map
True
>>> repair_gbk_mojibake("¹Ø ÓÚ ºì ¾ü")   # GBK bytes shown as latin-1
'关于红军'
"""
from __future__ import annotations

import re
import unicodedata
from functools import lru_cache

from common.text import HAN

_LATIN1_RUN = re.compile(r"[\u00a0-\u00ff]")
_WORD = re.compile(r"[^\W\d_]{2,}", re.UNICODE)
WORD_LANGUAGES = ("en", "vi", "fr", "de", "es", "it", "pt", "nl")


_LIGATURES = str.maketrans({"\ufb00": "ff", "\ufb01": "fi", "\ufb02": "fl", "\ufb03": "ffi",
                            "\ufb04": "ffl", "\ufb05": "st", "\ufb06": "st"})
_LINE_HYPHEN = re.compile(r"(?<=[a-z])-\n(?=[a-z])")


def normalize(text: str) -> str:
    """NFC (Vietnamese diacritics composed), Latin ligatures spelled out, no NULs, Unix
    newlines, no trailing spaces."""
    text = unicodedata.normalize("NFC", text.replace("\x00", "")).translate(_LIGATURES)
    text = text.replace("\r\n", "\n").replace("\r", "\n")
    return "\n".join(line.rstrip() for line in text.split("\n")).strip()


def _good(ch: str) -> float:
    o = ord(ch)
    if o < 0x80 or 0xC0 <= o <= 0x24F or 0x1E00 <= o <= 0x1EFF or 0x2000 <= o <= 0x206F \
            or 0x3000 <= o <= 0x9FFF or 0xFF00 <= o <= 0xFFEF \
            or ch in "\u00b0\u00b1\u00b5\u00b7\u00d7\u00f7\u2122\ufb01\ufb02":
        return 1.0
    if ch == "\ufffd":
        return -2.0
    if unicodedata.category(ch).startswith("M"):
        return 0.0
    return 0.5 if ch.isalpha() else 0.8


def plausibility(text: str) -> float:
    """Share of characters in scripts people write in Docent's languages (Latin incl.
    Vietnamese, Han, kana, punctuation); other letters count half, combining
    marks left over after NFC nothing, U+FFFD minus two. 1.0 is clean text."""
    chars = [c for c in text if not c.isspace()]
    if not chars:
        return 0.0
    return max(0.0, sum(_good(c) for c in chars) / len(chars))


def looks_garbled(text: str) -> bool:
    """Worth trying another extractor: replacement characters, latin-1 mojibake, or a
    low share of plausible characters."""
    if not text.strip():
        return True
    if "\ufffd" in text:
        return True
    chars = [c for c in text if not c.isspace()]
    if len(_LATIN1_RUN.findall(text)) > 0.3 * len(chars):
        return True
    return plausibility(text) < 0.9


def repair_gbk_mojibake(text: str) -> str | None:
    """Text whose GBK bytes were read as latin-1 (a CJK font without ToUnicode), repaired;
    None when it does not decode to mostly Han characters."""
    out = []
    for token in re.split(r"(\s+)", text):
        if not token or token.isspace():
            out.append(token)
            continue
        try:
            out.append(token.encode("latin-1").decode("gbk"))
        except (UnicodeEncodeError, UnicodeDecodeError):
            out.append(token)
    fixed = "".join(out)
    # pypdf puts a space between glyphs: drop spaces between two Han characters
    fixed = re.sub(r"(?<=[\u3000-\u9fff\uff00-\uffef])[ \t]+(?=[\u3000-\u9fff\uff00-\uffef])", "", fixed)
    han = len(HAN.findall(fixed))
    return fixed if han >= 0.4 * max(1, len([c for c in fixed if not c.isspace()])) else None


@lru_cache(maxsize=65536)
def _known(word: str) -> bool:
    from wordfreq import zipf_frequency

    return any(zipf_frequency(word, lang) >= 2.0 for lang in WORD_LANGUAGES)


def known_word_ratio(text: str, sample: int = 400) -> float | None:
    """Share of lower-case alphabetic words (names and acronyms are left out; up to
    ``sample``) that are real words in one of ``WORD_LANGUAGES`` (wordfreq); None when
    there are too few words to judge."""
    words = [w for w in _WORD.findall(text)[: sample * 2] if w.islower() and not HAN.search(w)]
    words = words[:sample]
    if len(words) < 20:
        return None
    return sum(_known(w) for w in words) / len(words)


def is_ocr_garbage(text: str, threshold: float = 0.9) -> bool:
    """An OCR text layer too noisy to trust: under half plausible characters, or under
    ``threshold`` known words (born-digital prose scores 0.95-1.0 on the shared
    fixtures, the noisy OCR layer 0.81)."""
    if plausibility(text) < 0.5:
        return True
    ratio = known_word_ratio(text)
    return ratio is not None and ratio < threshold


def join_hyphenated_lines(text: str) -> str:
    """Undo line-end hyphenation of typeset text: ``"ef-\\nficient"`` -> ``"efficient"``.

    >>> join_hyphenated_lines("ef-\\nficient dual-\\nEncoder")
    'efficient dual-\\nEncoder'
    """
    return _LINE_HYPHEN.sub("", text)
