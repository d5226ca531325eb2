"""Small models sometimes loop, writing the same sentence again and again until the
token limit. ``RepeatStop`` passes a streamed answer through sentence by sentence, drops
a sentence the answer has already given (same words; markers, spaces and punctuation
aside), and asks the caller to stop the model at the second repeat. Given the
question (``echo``), it also drops a sentence that only restates the question or a part
of it (a small model often restates the question first).

>>> r = RepeatStop()
>>> out = [r.feed(p) for p in ["PCOS comes from hormones. [1] ", "It runs in ",
...                            "families [2]. PCOS comes from hormones. [1] Yes. "]]
>>> out, r.repeats, r.stopped
(['PCOS comes from hormones. [1] ', 'It runs in ', 'families [2]. Yes. '], 1, False)
>>> r.feed("PCOS comes from hormones. [1] More."), r.flush(), r.stopped
('', '', True)
>>> q = RepeatStop(echo="Chồng tôi bị viêm gan C. Ăn chung có bị lây không?")
>>> q.feed("Ăn chung có bị lây không? [1] Viêm gan C lây qua máu [1]. "), q.flush(), q.echoed
('Viêm gan C lây qua máu [1]. ', '', 1)
>>> q = RepeatStop(echo="Ăn chung, hôn nhau có bị lây không, và cả nhà nên làm gì?")
>>> q.feed("Ăn chung, hôn nhau có bị lây không? [1] "), q.flush(), q.echoed
('', '', 1)
"""
from __future__ import annotations

import re

# A sentence ends at 。！？, at .!? before a space, or at a line end, with the markers
# that follow it; it is complete once something else follows.
_END = re.compile(r"(?:[。！？]|[.!?](?=\s)|\n)(?:\s?\[[\d,;\s]*\])*\s*")
_MARKER = re.compile(r"\[[\d,;\s]*\]")
_PUNCT = re.compile(r"[\W_]+")
MIN_KEY = 8  # shorter sentences ("Yes.", list numbers) may repeat on purpose


def _sentences(text: str) -> list[str]:
    out, start = [], 0
    for m in _END.finditer(text):
        out.append(text[start:m.end()])
        start = m.end()
    return out + [text[start:]]


def _key(sentence: str) -> str:
    return _PUNCT.sub("", _MARKER.sub("", sentence)).lower()


class RepeatStop:
    """``feed``/``flush`` like the other stream stages; ``stopped`` turns true at the
    ``max_repeats``-th repeated sentence, ``repeats`` counts the sentences dropped.

    Text streams through as it comes; only while the sentence being written could still
    be one already given (its words so far begin one) is it held back, and released as
    soon as it differs."""

    def __init__(self, max_repeats: int = 2, echo: str = ""):
        self.max_repeats = max_repeats
        self.repeats = 0
        self.echoed = 0  # sentences of ``echo`` (the question) the model wrote again
        self.stopped = False
        self._question = _key(echo)
        # a sentence that begins like one of the question's is held until it differs
        self._seen: set[str] = {k for k in map(_key, _sentences(echo)) if k}
        self._buf = ""  # the sentence being written
        self._sent = 0  # how much of it has been passed on

    def feed(self, piece: str) -> str:
        self._buf += piece
        out, start = [], 0
        for m in _END.finditer(self._buf):
            if m.end() >= len(self._buf):
                break  # a marker or more of the sentence may still follow
            out.append(self._complete(self._buf[start:m.end()]))
            start = m.end()
        self._buf = self._buf[start:]
        out.append(self._partial())
        return "".join(out)

    def flush(self) -> str:
        rest, self._buf = self._buf, ""
        return self._complete(rest)

    def _partial(self) -> str:
        key = _key(self._buf)
        if self.stopped or any(s.startswith(key) for s in self._seen):
            return ""  # perhaps a repeat or the question again: held until it differs or ends
        out, self._sent = self._buf[self._sent:], len(self._buf)
        return out

    def _complete(self, sentence: str) -> str:
        sent, self._sent = self._sent, 0
        if self.stopped:
            return ""
        key = _key(sentence)
        if len(key) >= MIN_KEY and key in self._question:  # the question, or a part of it,
            # said again: not an answer, and not a loop
            self.echoed += 1
            return ""
        if len(key) >= MIN_KEY and key in self._seen:
            self.repeats += 1
            self.stopped = self.repeats >= self.max_repeats
            return ""
        if len(key) >= MIN_KEY:
            self._seen.add(key)
        return sentence[sent:]
