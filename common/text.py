"""Text rules every layer shares: scripts, language codes, sentences, token counts and
the citation marker. One definition of each, so ingestion, search, answering and
fine-tuning agree.

>>> detect_language("Take one tablet of metformin with food twice a day. " * 5)
'en'
>>> detect_language("高血压患者可以口服党参吗？党参有降血脂，降血压的作用。")
'zh'
>>> detect_language("Bệnh nhân tiểu đường nên uống thuốc sau bữa ăn. " * 5)
'vi'
>>> text = "First sentence here. Second one! Third?\\n\\nNew paragraph."
>>> [text[s:e] for s, e in sentence_spans(text)]
['First sentence here.', 'Second one!', 'Third?', 'New paragraph.']
>>> zh = "他发烧了。需要休息！好的"
>>> [zh[s:e] for s, e in sentence_spans(zh)]
['他发烧了。', '需要休息！', '好的']
>>> count_tokens("Take 500 mg, twice.") , count_tokens("每日两次")
(6, 4)
>>> [m.group(1) for m in MARKER.finditer("Rest [1]. Drink water [2, 3].")]
['1', '2, 3']
>>> words("Fever: 38.5 °C, 发烧")
['fever', '38', '5', 'c', '发', '烧']
"""
from __future__ import annotations

import re

# --- scripts --------------------------------------------------------------------------
HAN_RANGE = "\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff"  # CJK ideographs, for [...] classes
HAN = re.compile(f"[{HAN_RANGE}]")
# Han, kana, Hangul and CJK punctuation: never part of a Vietnamese or English text.
EAST_ASIAN_RANGE = "\u3000-\u303f\u3040-\u30ff\uac00-\ud7af" + HAN_RANGE
EAST_ASIAN = re.compile(f"[{EAST_ASIAN_RANGE}]+")

# --- language codes -------------------------------------------------------------------
# The languages Docent is asked in. ``detect_language`` answers with a family ("zh" for
# both Chinese scripts, "other" for the rest); ``assistant.language.question_language``
# tells Simplified from Traditional.
LANGUAGE_NAMES = {"en": "English", "zh-Hans": "Simplified Chinese",
                  "zh-Hant": "Traditional Chinese", "vi": "Vietnamese"}
FAMILY_NAMES = {"en": "English", "zh": "Chinese", "vi": "Vietnamese"}


def family(language: str) -> str:
    """The family code of a language code: ``zh-Hant`` -> ``zh``.

    >>> family("zh-Hant"), family("vi")
    ('zh', 'vi')
    """
    return language.split("-")[0]


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
    if len(HAN.findall(text)) / letters > 0.2:
        return "zh"
    if len(_VI.findall(text)) / letters > 0.02:
        return "vi"
    if len(_ASCII_LETTER.findall(text)) / letters < 0.95:
        return "other"
    latin = re.findall(r"[a-z]+", text.lower())
    if latin and sum(w in _ENGLISH for w in latin) / len(latin) >= 0.12:
        return "en"
    return "other"


# --- tokens and sentences -------------------------------------------------------------
# Approximate model tokens: a Latin word or number counts one, each Han character one,
# each punctuation mark one.
TOKEN = re.compile(f"[{HAN_RANGE}]|\\w+|[^\\w\\s]", re.UNICODE)
_WORD = re.compile(f"[{HAN_RANGE}]|[^\\W_]+", re.UNICODE)
_PARAGRAPH = re.compile(r"\n\s*\n")
# End of a sentence: Latin .!? (+ closing quotes/brackets) before whitespace, or CJK 。！？；
_SENTENCE_END = re.compile(r"(?:[.!?]+[\"'”’)\]]*(?=\s)|[。！？；]+[”’」』）]*)")
_TABLE_ROW = re.compile(r"^[ \t]*\|.*\|[ \t]*$", re.MULTILINE)


def words(text: str) -> list[str]:
    """Lower-cased words without punctuation; Han characters one by one (for overlap
    scores such as token-F1)."""
    return _WORD.findall(text.lower())


def count_tokens(text: str) -> int:
    """Approximate model tokens in ``text`` (see ``TOKEN``)."""
    return len(TOKEN.findall(text))


def sentence_spans(text: str, lo: int = 0, hi: int | None = None) -> list[tuple[int, int]]:
    """Character spans of sentences in ``text[lo:hi]``: never crossing a paragraph break;
    each Markdown table row (``| a | b |``) is one unit of its own."""
    return [(a, b) for a, b, _ in sentence_units(text, lo, len(text) if hi is None else hi)]


def sentence_units(text: str, lo: int, hi: int) -> list[tuple[int, int, bool]]:
    """``(start, end, is_table_row)`` units of ``text[lo:hi]``, stripped, in order."""
    out: list[tuple[int, int, bool]] = []
    para_start = lo
    for para_end in [m.start() for m in _PARAGRAPH.finditer(text, lo, hi)] + [hi]:
        cut = para_start
        for row in _TABLE_ROW.finditer(text, para_start, para_end):
            out.extend(_sentences(text, cut, row.start()))
            out.append((*_strip(text, row.start(), row.end()), True))
            cut = row.end()
        out.extend(_sentences(text, cut, para_end))
        para_start = para_end
    return [u for u in out if u[1] > u[0]]


def _sentences(text: str, lo: int, hi: int) -> list[tuple[int, int, bool]]:
    spans, cut = [], lo
    for m in _SENTENCE_END.finditer(text, lo, hi):
        spans.append((cut, m.end()))
        cut = m.end()
    spans.append((cut, hi))
    return [(*_strip(text, a, b), False) for a, b in spans]


def _strip(text: str, a: int, b: int) -> tuple[int, int]:
    while a < b and text[a].isspace():
        a += 1
    while b > a and text[b - 1].isspace():
        b -= 1
    return a, b



# --- the citation marker --------------------------------------------------------------
# ``[1]``, ``[2, 3]`` or ``[1; 4]`` after a claim; group 1 holds the numbers.
MARKER = re.compile(r"\s?\[(\d{1,3}(?:\s*[,;]\s*\d{1,3})*)\]")
