"""Checks on what the small model writes for an intermediate step, before it is used.

The chat model is asked to translate a question or to rewrite a follow-up so that it
stands alone; a 1.5B model sometimes answers instead, switches language, or changes the
topic. Each output is held to simple rules that need no model, and a rejected one is
not used: the caller falls back to the user's own words.

A translation must be in the target language, shaped as a question when the original
is one, of a plausible length, and bring no number the question did not have:

>>> check_translation("兒童氣喘有哪些症狀？", "What are the symptoms of asthma in children?", "en")
StepCheck(ok=True, reason='')
>>> check_translation("兒童氣喘有哪些症狀？",
...                   "Children with asthma may experience a variety of symptoms, including:", "en")
StepCheck(ok=False, reason='not a question')
>>> check_translation("Trẻ sốt 40 độ có nguy hiểm không?",
...                   "Is a fever of 105°F dangerous for a child?", "en")
StepCheck(ok=False, reason='brings numbers the question does not have: 105')
>>> check_translation("幫我寫一封求職信", "Sure, I can help you write a job application letter.", "en")
StepCheck(ok=False, reason='a reply, not a translation')
>>> check_translation("Triệu chứng của viêm gan A là gì?", "viêm gan A là gì?", "en")
StepCheck(ok=False, reason='not in English')

A rewritten follow-up must be in the follow-up's language and keep its own words:

>>> check_condensed("And what about football results from last night?",
...                 "What are the symptoms of diabetes?")
StepCheck(ok=False, reason="drops the follow-up's own words (football, results, last, night)")
>>> check_condensed("And for children?", "What is the paracetamol dose for children?")
StepCheck(ok=True, reason='')
>>> check_condensed("運動有幫助嗎？", "Does exercise help?")
StepCheck(ok=False, reason='not in the language of the question')
>>> check_condensed("運動有幫助嗎？", "運動對糖尿病有幫助嗎？")
StepCheck(ok=True, reason='')
"""
from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass

from assistant.language import question_language
from common.text import FAMILY_NAMES, HAN, HAN_RANGE, family

_HAN_RUN = re.compile(f"[{HAN_RANGE}]+")
_WORD = re.compile(r"[^\W\d_]+", re.UNICODE)
_NUMBER = re.compile(r"\d+(?:[.,]\d+)?")

# Words that open a question, or end one (Chinese particles, Vietnamese tags).
_EN_OPENERS = frozenset(
    "what which who whom whose when where why how is are was were do does did can could "
    "should would will shall may might must has have had am".split())
_ZH_MARKERS = ("吗", "嗎", "呢", "什么", "什麼", "哪", "怎", "为何", "為何", "为什么", "為什麼",
               "如何", "多少", "几", "幾", "是否", "是不是", "有没有", "有沒有", "能否", "可否")
_VI_MARKERS = ("không", "gì", "nào", "sao", "bao nhiêu", "bao lâu", "như thế nào", "thế nào",
               "ai", "đâu", "chưa", "có nên", "tại sao", "vì sao", "hay không")

# How the model's replies open (assent, an offer): a person's message, translated, does not.
_REPLY_OPENER = re.compile(r"^\W*(?:sure|certainly|of course|absolutely|i can help|i'd be happy|"
                           r"i would be happy|i will help|i'll help|here is|here's)\b",
                           re.IGNORECASE)

# Function words of the follow-up that carry no topic of their own.
_STOP = frozenset("""
a an the and or but so of to in on at for from with about by as is are was were be been
do does did can could should would will what which who whom whose when where why how
this that these those it its they them their there here i me my we our you your he she
his her him again also too more then than any some just only very much many what's
và hoặc nhưng của cho với về từ là có không được thì còn nữa cũng này đó kia gì nào sao
thế như bao nhiêu lâu khi ở tại những các một người ai đâu vậy chứ nhé ạ hả hay
""".split())
_ZH_FUNCTION = set("的了吗嗎呢吧啊呀么麼是有在和与與及或也都还還就又再那这這个個些什怎哪为為如何多少几幾能可会會要该該应應")


@dataclass(frozen=True)
class StepCheck:
    ok: bool
    reason: str = ""


def check_translation(original: str, candidate: str, target: str) -> StepCheck:
    """Whether ``candidate`` can stand for ``original`` translated into ``target``
    ("en", "zh" or "vi")."""
    candidate = candidate.strip()
    if not candidate:
        return StepCheck(False, "empty")
    if family(question_language(candidate)) != target:
        return StepCheck(False, f"not in {FAMILY_NAMES[target]}")
    if _REPLY_OPENER.match(candidate):
        return StepCheck(False, "a reply, not a translation")
    if is_question(original) and not is_question(candidate):
        return StepCheck(False, "not a question")
    ratio = _size(candidate) / max(_size(original), 1.0)
    if not 0.25 <= ratio <= 4.0:
        return StepCheck(False, f"length {ratio:.1f} times the question's")
    new = new_numbers(original, candidate)
    if new:
        return StepCheck(False, f"brings numbers the question does not have: {', '.join(new)}")
    return StepCheck(True)


def check_condensed(question: str, rewrite: str) -> StepCheck:
    """Whether ``rewrite`` can stand for the follow-up ``question`` made standalone: in
    its language, at most a few times longer, keeping at least half of its own content
    words (a rewrite that drops them changed the topic)."""
    rewrite = rewrite.strip()
    if not rewrite:
        return StepCheck(False, "empty")
    if question_language(rewrite) != question_language(question):
        return StepCheck(False, "not in the language of the question")
    if len(rewrite) > 4 * len(question) + 80:
        return StepCheck(False, "much longer than the question")
    own = content_words(question)
    kept = content_words(rewrite)
    lost = [w for w in own if w not in kept]
    if own and len(lost) * 2 > len(own):
        return StepCheck(False, f"drops the follow-up's own words ({', '.join(lost)})")
    return StepCheck(True)


def is_question(text: str) -> bool:
    """Shaped as a question: a question mark, an opening question word (English), or a
    question word or particle (Chinese, Vietnamese).

    >>> is_question("Symptoms of asthma in children"), is_question("Tell me the dose?")
    (False, True)
    >>> is_question("Bệnh tiểu đường có chữa được không"), is_question("糖尿病怎么治疗")
    (True, True)
    """
    text = text.strip()
    if text.endswith(("?", "？")):
        return True
    if HAN.search(text):
        return any(m in text for m in _ZH_MARKERS)
    words = _WORD.findall(text.lower())
    if not words:
        return False
    joined = " ".join(words)
    if any(re.search(rf"(?:^| ){re.escape(m)}(?: |$)", joined) for m in _VI_MARKERS) and \
            question_language(text) == "vi":
        return True
    return words[0] in _EN_OPENERS


def content_words(text: str) -> list[str]:
    """The words that carry the topic: Latin-script words other than function words
    (lower case), and Chinese character pairs with no function character.

    >>> content_words("And what about football results from last night?")
    ['football', 'results', 'last', 'night']
    >>> content_words("運動有幫助嗎？")
    ['運動', '幫助']
    """
    text = unicodedata.normalize("NFC", text.lower())
    words = [w for w in _WORD.findall(_HAN_RUN.sub(" ", text)) if w not in _STOP and len(w) > 1]
    for run in _HAN_RUN.findall(text):
        pairs = [run[i:i + 2] for i in range(len(run) - 1)]
        words += [p for p in pairs if not set(p) & _ZH_FUNCTION]
        if len(run) == 1 and run not in _ZH_FUNCTION:
            words.append(run)
    return list(dict.fromkeys(words))


def new_numbers(original: str, candidate: str) -> list[str]:
    """Numbers in ``candidate`` that ``original`` does not have (full-width digits count
    as digits). Not applied to rewritten follow-ups: they may rightly bring the numbers
    of earlier turns.

    >>> new_numbers("Liều 500 mg cho người lớn?", "Is 500 mg or 1000 mg the dose for adults?")
    ['1000']
    """
    have = set(_NUMBER.findall(unicodedata.normalize("NFKC", original)))
    found = _NUMBER.findall(unicodedata.normalize("NFKC", candidate))
    return list(dict.fromkeys(n for n in found if n not in have))


def _size(text: str) -> float:
    """A language-neutral length: Latin-script words, plus Chinese characters at about
    1.5 characters a word."""
    han = len(HAN.findall(text))
    return len(_WORD.findall(_HAN_RUN.sub(" ", text))) + han / 1.5
