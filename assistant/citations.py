"""``[n]`` markers in answers: filtering invalid ones (also while streaming) and mapping
valid ones to citations with a supporting quote.

>>> clean_markers("Take 500 mg [1][4]. Rest [2, 9].", valid={1, 2})
'Take 500 mg [1]. Rest [2].'
>>> f = MarkerFilter(valid={1})
>>> "".join([f.feed("Dose is 5 mg ["), f.feed("3] or [1"), f.feed("]."), f.flush()])
'Dose is 5 mg or [1].'
"""
from __future__ import annotations

import re
from collections.abc import Iterable, Sequence

from assistant.types import Citation, Source
from common.text import MARKER
from knowledge.tokenize import tokenize

_PARTIAL = re.compile(r"\s?\[[\d,;\s]{0,16}$")
_SENTENCE = re.compile(r"[^.!?。！？\n]+[.!?。！？]*")


def _numbers(group: str) -> list[int]:
    return [int(n) for n in re.split(r"\s*[,;]\s*", group.strip())]


def _rewrite(match: re.Match, valid: set[int]) -> str:
    keep = [n for n in dict.fromkeys(_numbers(match.group(1))) if n in valid]
    if not keep:
        return ""
    lead = " " if match.group(0).startswith(" ") else ""
    return lead + "[" + ", ".join(map(str, keep)) + "]"


def clean_markers(text: str, valid: set[int]) -> str:
    """Drop marker numbers that point to no source; drop a marker left empty."""
    out = MARKER.sub(lambda m: _rewrite(m, valid), text)
    return re.sub(r"\[(\d+)\](\s?\[\1\])+", r"[\1]", out)


_PAGE = re.compile(r"\b(?:page|p\.)\s*\d+", re.I)
_LETTER = re.compile(r"[^\W\d_]")


def only_labels(body: str, sources: Sequence[Source]) -> bool:
    """Whether ``body`` says nothing but its sources' names, pages and markers: a small
    model copying the prompt's source headers instead of answering.

    >>> s = [Source(1, "c1", "kb", "handbook.pdf", 2, "Adults take 500 mg.", 0.9)]
    >>> only_labels("(handbook.pdf, page 2) [1]", s), only_labels("Take 500 mg [1].", s)
    (True, False)
    """
    rest = MARKER.sub(" ", body)
    for src in sources:
        rest = rest.replace(src.source, " ")
    return not _LETTER.search(_PAGE.sub(" ", rest))


def marker_numbers(text: str) -> list[int]:
    """Marker numbers in order of first use."""
    seen: dict[int, None] = {}
    for m in MARKER.finditer(text):
        for n in _numbers(m.group(1)):
            seen.setdefault(n, None)
    return list(seen)


class MarkerFilter:
    """Streams text through, holding back only a possible marker until it is complete."""

    def __init__(self, valid: set[int]):
        self.valid = valid
        self._buf = ""
        self._last = ""

    def feed(self, piece: str) -> str:
        self._buf += piece
        partial = _PARTIAL.search(self._buf)
        cut = partial.start() if partial else len(self._buf)
        ready, self._buf = self._buf[:cut], self._buf[cut:]
        return self._emit(ready)

    def flush(self) -> str:
        ready, self._buf = self._buf, ""
        return self._emit(ready)

    def _emit(self, text: str) -> str:
        out = MARKER.sub(lambda m: _rewrite(m, self.valid), text)
        # a marker repeating the one just emitted ("[1][1]") is dropped
        if self._last and out.startswith(self._last) and MARKER.fullmatch(self._last):
            out = out[len(self._last):]
        tail = MARKER.search(out[-12:]) if out else None
        self._last = tail.group(0) if tail and out.endswith(tail.group(0)) else ""
        return out


def best_quote(chunk_text: str, claim: str, max_chars: int = 240) -> str:
    """The sentence of ``chunk_text`` sharing most tokens with ``claim``."""
    sentences = [s.strip() for s in _SENTENCE.findall(chunk_text) if s.strip()]
    if not sentences:
        return chunk_text[:max_chars]
    claim_tokens = set(tokenize(claim))
    overlaps = [len(claim_tokens & set(tokenize(s))) for s in sentences]
    best = sentences[overlaps.index(max(overlaps))] if max(overlaps) > 0 else max(sentences, key=len)
    return best if len(best) <= max_chars else best[: max_chars - 1] + "…"


def _claims_by_number(answer: str) -> dict[int, str]:
    """For each marker number, the answer sentence(s) it is attached to. A marker
    standing after the full stop ("... 8 hours. [1]") belongs to the sentence before."""
    claims: dict[int, str] = {}
    previous = ""
    for sentence in _SENTENCE.findall(answer):
        plain = MARKER.sub("", sentence).strip(" .,;:!?。！？")
        claim = plain or previous
        for n in marker_numbers(sentence):
            claims[n] = claims.get(n, "") + " " + claim
        if plain:
            previous = plain
    return claims


def build_citations(answer: str, sources: Sequence[Source],
                    min_overlap: float = 0.35) -> list[Citation]:
    """Citations for the sources the answer used.

    With markers: one citation per valid marker number, in order of first use. Without
    any valid marker: the sources whose tokens cover at least ``min_overlap`` of the
    answer's tokens, marked ``inferred``.
    """
    by_number = {s.number: s for s in sources}
    claims = _claims_by_number(answer)
    cited = [n for n in marker_numbers(answer) if n in by_number]
    if cited:
        return [_citation(by_number[n], claims.get(n, answer)) for n in cited]
    return list(_inferred(answer, sources, min_overlap))


def _citation(src: Source, claim: str, inferred: bool = False) -> Citation:
    return Citation(src.number, src.source, src.page, best_quote(src.text, claim),
                    src.chunk_id, src.kb, inferred)


def _inferred(answer: str, sources: Sequence[Source], min_overlap: float) -> Iterable[Citation]:
    answer_tokens = set(tokenize(answer))
    if not answer_tokens:
        return
    for src in sources:
        overlap = len(answer_tokens & set(tokenize(src.text))) / len(answer_tokens)
        if overlap >= min_overlap:
            yield _citation(src, answer, inferred=True)


# --- markers the model forgot -------------------------------------------------------
_CLAUSE = re.compile(r".+?(?:[.!?](?=\s|$)|[。！？]|$)")
_TAIL = re.compile(r"[\s.!?:;,。！？：；，]*$")


def _best_source(sentence: str, sources: Sequence[tuple[int, set[str]]],
                 min_overlap: float) -> int | None:
    tokens = set(tokenize(sentence))
    if len(tokens) < 3:
        return None
    shared, number = max(((len(tokens & toks), n) for n, toks in sources), default=(0, None),
                         key=lambda pair: pair[0])
    return number if shared >= 3 and shared / len(tokens) >= min_overlap else None


def add_missing_markers(text: str, sources: Sequence[Source], min_overlap: float = 0.5) -> str:
    """``text`` with a ``[n]`` marker added to each sentence or bullet that has none and
    whose words mostly (``min_overlap`` of its tokens) come from source ``n``: small
    models often summarize faithfully but forget the markers.

    >>> src = [Source(1, "c1", "", "a.pdf", 1, "Clinic hours are 8 am to 6 pm.", 0.0),
    ...        Source(2, "c2", "", "a.pdf", 2, "Adults take 500 mg every 8 hours.", 0.0)]
    >>> add_missing_markers("Summary:\\n- Adults take 500 mg every 8 hours. Hours: 8 am to 6 pm [1].", src)
    'Summary:\\n- Adults take 500 mg every 8 hours [2]. Hours: 8 am to 6 pm [1].'
    """
    indexed = [(s.number, set(tokenize(s.text))) for s in sources]
    lines = []
    for line in text.split("\n"):
        parts = []
        for m in _CLAUSE.finditer(line):
            sentence = m.group(0)
            lead_in = line.lstrip().startswith("#") or sentence.rstrip().endswith((":", "："))
            number = (None if lead_in or MARKER.search(sentence)
                      else _best_source(sentence, indexed, min_overlap))
            if number is not None:
                tail = _TAIL.search(sentence).group(0)
                body = sentence[: len(sentence) - len(tail)]
                sentence = f"{body} [{number}]{tail.lstrip()}" + (" " if tail.endswith(" ") else "")
            parts.append(sentence)
        lines.append("".join(parts))
    return "\n".join(lines)
