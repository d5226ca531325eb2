"""Checks around an answer: the evidence gate, the scope guardrail, urgent symptoms, and
dosing that no source supports.

Evidence gate: the best source's cosine similarity to the search query, against a
threshold per embedder (``CALIBRATED``; benchmarks/answers.md). all-MiniLM-L6-v2: 0.60,
the 5th percentile of the best-hit similarity of answerable questions (MedQuAD 0.618,
SciFact 0.598), so about 1 answerable question in 20 is held back. multilingual-e5-small
scores everything high and its scale depends on the text: answerable Toyhom questions
(short Chinese answers) have p5 0.930, but answerable English questions on the clinic
handbook score 0.90-0.92 and unanswerable ones 0.78-0.81, so 0.85 is used: it stops
questions far from the documents and holds back almost no answerable ones in either.

Scope guardrail: the standalone search query (so a follow-up is judged with its context
and cannot slip past by being short) is out of scope, for the medical subject, when it
is not closer (multilingual-e5-small) to that subject than to each of a list of other
everyday subjects, within a small margin, AND the knowledge base does not answer it
outright (its best passage clears the evidence gate by ``STRONG_SUPPORT``). On the 100
questions of tests/data/scope_questions.jsonl plus the 104 LiveQA questions: refusal
precision 0.98, recall 1.00; on 48 questions written afterwards
(benchmarks/data/scope_heldout.jsonl): 1.00 and 0.96. A subject of a knowledge base's
own is judged by its similarity alone (below ``scope_threshold`` and unsupported: out).
Asking the 1.5B model to classify the topic was measured and rejected: it called 12 of
the 104 LiveQA consumer-health questions off-topic.

>>> urgent_advice("I have crushing chest pain and my left arm is numb", "en") != ""
True
>>> urgent_advice("What is the usual dose of paracetamol?", "en")
''
>>> f = DoseFilter()
>>> "".join([f.feed("Rest well. Take 500 "), f.feed("mg twice a day. Drink water [1]."), f.flush()])
'Rest well. Drink water [1].'
>>> f.removed
1
"""
from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from functools import lru_cache

import numpy as np

from assistant.profiles import MEDICAL_SUBJECT
from common.text import MARKER
from knowledge.embedders import E5_NAME, EMBEDDINGGEMMA_NAME, MINILM_NAME
from knowledge.types import Hit

# best-hit cosine threshold per embedder (5th percentile of answerable questions;
# EmbeddingGemma: 0.579 on MedQuAD x LiveQA, 0.590 across languages, benchmarks/answers.md)
CALIBRATED = {MINILM_NAME: 0.60, E5_NAME: 0.85, EMBEDDINGGEMMA_NAME: 0.58}
# the same for a query in another language than the knowledge base: with e5 a Chinese or
# Vietnamese question scores lower against the English passage that answers it (p5 0.833
# on benchmarks/data/crosslingual, median 0.847); EmbeddingGemma scores both alike
CALIBRATED_ACROSS = {E5_NAME: 0.83, EMBEDDINGGEMMA_NAME: 0.58}


def support(hits: list[Hit]) -> float | None:
    """The best dense similarity among ``hits`` (None when no hit has one)."""
    values = [h.scores["dense"] for h in hits if "dense" in h.scores]
    return max(values) if values else None


def threshold_for(embedder: str, override: float | None, across: bool = False) -> float | None:
    """The gate's threshold for ``embedder`` (None: no calibration, the gate is off);
    ``across``: for a query in another language than the knowledge base."""
    if override is not None:
        return override
    return (CALIBRATED_ACROSS if across else CALIBRATED).get(embedder, CALIBRATED.get(embedder))


@dataclass(frozen=True)
class Verdict:
    in_scope: bool
    scope_similarity: float
    supported: bool


# Subjects a health question is not about. A question is in the medical scope when it is
# closer (e5) to the medical subject than to each of these, within CONTRAST_MARGIN: a
# single threshold on the similarity to the subject cannot tell "Explain the rules of
# chess" (0.804) from "How is rickets inherited?" (0.739), but each is closer to its own
# subject. The margin lets a health question near another subject ("what should people
# with high blood pressure eat": cooking) stay in scope. Measured with these lists on the
# 204 questions of the calibration set and 48 written afterwards
# (benchmarks/data/scope_heldout.jsonl, benchmarks/answers.md).
OTHER_SUBJECTS = (
    "cooking, food and recipes",
    "computers, phones, software, programming and the internet",
    "sports, games and hobbies",
    "money, taxes, banking, prices and shopping",
    "books, films, music, poetry, jokes and entertainment",
    "travel, geography, history and politics",
    "cars, machines, home repair and gardening",
    "jobs, school, writing letters and translation",
    "science, mathematics, space and nature",
    "weather and news",
)
CONTRAST_MARGIN = 0.0125
# how far above the evidence gate's threshold the best passage must score for the
# documents to answer a question whatever its subject (a clinic handbook's visiting
# hours): e5 scores the handbook's own questions 0.90-0.92, off-topic ones below 0.87
STRONG_SUPPORT = 0.03


class ScopeGuard:
    """Tells in-scope questions from others by similarity to the scope's subject: for a
    subject with contrasting subjects (``contrasts``; the medical one by default), by
    being closer to it than to each of them; for any other subject, by a threshold."""

    def __init__(self, embed_query: Callable[[str], np.ndarray],
                 embed_passage: Callable[[str], np.ndarray], threshold: float,
                 contrasts: dict[str, tuple[str, ...]] | None = None,
                 margin: float = CONTRAST_MARGIN):
        self._query, self._passage, self.threshold = embed_query, embed_passage, threshold
        self._subject = lru_cache(maxsize=64)(self._passage)
        self._contrasts = {MEDICAL_SUBJECT: OTHER_SUBJECTS} if contrasts is None else contrasts
        self.margin = margin

    def check(self, subject: str, query: str, supported: bool, strong: bool = False) -> Verdict:
        """``supported``: the knowledge base's best passage passes the evidence gate;
        ``strong``: it passes it by ``STRONG_SUPPORT`` (the documents answer it)."""
        vector = self._query(query)
        similarity = float(np.dot(vector, self._subject(subject)))
        others = self._contrasts.get(subject)
        if not others:
            return Verdict(supported or similarity >= self.threshold, similarity, supported)
        nearest_other = max(float(np.dot(vector, self._subject(o))) for o in others)
        in_scope = strong or similarity - nearest_other > -self.margin
        return Verdict(in_scope, similarity, supported)


# --- urgent symptoms ---------------------------------------------------------------
_URGENT = re.compile("|".join([
    r"chest pain", r"crushing (?:chest|pain)", r"can(?:no|')t breathe", r"(?:trouble|difficulty|short(?:ness)? of) breath",
    r"face (?:is )?droop", r"slurred speech", r"sudden (?:numbness|weakness|confusion|severe headache)",
    r"stroke", r"heart attack", r"unconscious", r"passed out", r"faint(?:ed|ing)", r"seizure",
    r"severe bleeding", r"bleeding (?:heavily|a lot|that won)", r"vomiting blood", r"coughing (?:up )?blood",
    r"overdos", r"poison", r"anaphyla", r"throat (?:is )?swelling", r"suicid", r"kill myself",
    r"self[- ]harm", r"stiff neck and (?:a )?fever",
    "胸痛", "胸口痛", "呼吸困难", "呼吸困難", "喘不过气", "喘不過氣", "中风", "中風", "口齿不清", "口齒不清",
    "昏迷", "晕倒", "暈倒", "抽搐", "大出血", "吐血", "咳血", "过量", "過量", "中毒", "自杀", "自殺", "轻生", "輕生",
    r"đau ngực", r"tức ngực", r"khó thở", r"đột quỵ", r"ngất", r"bất tỉnh", r"co giật", r"chảy máu nhiều",
    r"nôn ra máu", r"ho ra máu", r"quá liều", r"ngộ độc", r"tự tử", r"tự sát",
]), re.IGNORECASE)

_URGENT_TEXT = {
    "en": ("If this is happening now (chest pain, trouble breathing, signs of a stroke, heavy "
           "bleeding, fainting, poisoning or thoughts of harming yourself), call your local "
           "emergency number or go to the nearest emergency department now."),
    "zh-Hans": "如果这些情况正在发生（胸痛、呼吸困难、中风迹象、大出血、晕倒、中毒或有伤害自己的念头），请立即拨打当地急救电话或前往最近的急诊科。",
    "zh-Hant": "如果這些情況正在發生（胸痛、呼吸困難、中風跡象、大出血、暈倒、中毒或有傷害自己的念頭），請立即撥打當地急救電話或前往最近的急診室。",
    "vi": ("Nếu tình trạng này đang xảy ra (đau ngực, khó thở, dấu hiệu đột quỵ, chảy máu nhiều, "
           "ngất, ngộ độc hoặc có ý nghĩ tự làm hại bản thân), hãy gọi ngay số cấp cứu địa "
           "phương hoặc đến khoa cấp cứu gần nhất."),
}


def urgent_advice(question: str, lang: str) -> str:
    """Advice to seek care now when the question describes an emergency, else ""."""
    return _URGENT_TEXT.get(lang, _URGENT_TEXT["en"]) if _URGENT.search(question) else ""


# --- dosing without a cited source ---------------------------------------------------
_DOSE = re.compile(
    r"\d+(?:[.,]\d+)?\s*(?:-|to|–)?\s*\d*(?:[.,]\d+)?\s*"
    r"(?:mg|mcg|µg|μg|g\b|ml|mL|IU|units?\b|tablets?|capsules?|drops?|puffs?|viên|giọt|"
    r"毫克|微克|克|毫升|片|粒|滴)", re.IGNORECASE)
_LEADING_MARKER = re.compile(r"\s*" + MARKER.pattern)
_END = re.compile(r"(?:[!?。！？]|\.(?!\d))\s*(?:\[\d{1,3}(?:\s*[,;]\s*\d{1,3})*\]\s*)*")
# a number at the end of the text whose unit may arrive in the next piece
_PENDING = re.compile(r"\d[\d.,]*\s*(?:(?:-|to|–)\s*\d[\d.,]*\s*)?[^\W\d_]{0,8}$")


class DoseFilter:
    r"""Streams text through, but a sentence that states a dose is held until it ends and
    dropped when it carries no ``[n]`` marker (a dose must come from a cited source).
    A marker that opens a paragraph ("[1] For adults, 500 mg ...", as small models often
    write it) cites the whole paragraph. Sentences without a dose stream unchanged.

    Words of a sentence that streamed out before its dose arrived cannot be taken back
    from the stream; ``text`` is the whole output without them, for the final answer.

    >>> f = DoseFilter()
    >>> f.feed("[1] For adults: 500 mg daily.\n\nChildren take 250 mg. ") + f.flush()
    '[1] For adults: 500 mg daily.\n\n'
    >>> f = DoseFilter()
    >>> f.feed("Rest well. Children take ") + f.feed("250 mg. Drink water.") + f.flush()
    'Rest well. Children take Drink water.'
    >>> f.text
    'Rest well. Drink water.'
    >>> f = DoseFilter()  # a marker before the dose, in the part that already streamed
    >>> f.feed("Per [3], stop estradiol ") + f.feed("75g patches 4 weeks before. ") + f.flush()
    'Per [3], stop estradiol 75g patches 4 weeks before. '
    >>> f = DoseFilter()
    >>> f.feed("Dosage\nAdults take ") + f.feed("2 tablets. Ask a nurse.") + f.flush()
    'Dosage\nAdults take Ask a nurse.'
    >>> f.text
    'Dosage\nAsk a nurse.'
    """

    def __init__(self):
        self._buf = ""
        self._paragraph = ""  # the current paragraph so far (what came through or was dropped)
        self._kept = ""  # the output so far, less the streamed starts of dropped sentences
        self.removed = 0

    @property
    def text(self) -> str:
        return self._kept

    def feed(self, piece: str) -> str:
        self._buf += piece
        out = []
        while True:
            if not _DOSE.search(self._buf):
                pending = _PENDING.search(self._buf)
                cut = self._sentence_start(self._buf, pending.start()) if pending else len(self._buf)
                out.append(self._emit(self._buf[:cut]))
                self._buf = self._buf[cut:]
                break
            end = self._sentence_end(self._buf)
            if end is None:
                # emit what precedes the sentence holding the dose, hold the rest
                start = self._sentence_start(self._buf, _DOSE.search(self._buf).start())
                out.append(self._emit(self._buf[:start]))
                self._buf = self._buf[start:]
                break
            sentence, self._buf = self._buf[:end], self._buf[end:]
            out.append(self._check(sentence))
        return "".join(out)

    def flush(self) -> str:
        rest, self._buf = self._buf, ""
        return self._check(rest) if _DOSE.search(rest) else self._emit(rest)

    def _check(self, sentence: str) -> str:
        """``sentence`` (or the rest of one whose start already streamed), if it may stand."""
        start = self._sentence_start(self._kept, len(self._kept))
        cited = (MARKER.search(self._kept[start:] + sentence)
                 or _LEADING_MARKER.match(self._paragraph + sentence))
        if cited or not _DOSE.search(sentence):
            return self._emit(sentence)
        self._seen(sentence)
        self.removed += 1
        self._kept = self._kept[:start]
        return ""

    def _emit(self, text: str) -> str:
        self._kept += text
        return self._seen(text)

    def _seen(self, text: str) -> str:
        self._paragraph = (self._paragraph + text).rsplit("\n\n", 1)[-1]
        return text

    @staticmethod
    def _sentence_end(text: str) -> int | None:
        """End of the first complete sentence (with markers after its full stop), or
        None while it may still go on."""
        for m in _END.finditer(text):
            if m.end() < len(text):  # something follows: the sentence (and markers) ended
                return m.end()
        return None

    @staticmethod
    def _sentence_start(text: str, pos: int) -> int:
        """Start of the sentence holding ``pos``: after the last full stop or line break."""
        ends = [m.end() for m in _END.finditer(text[:pos])]
        return max(ends[-1] if ends else 0, text.rfind("\n", 0, pos) + 1)
