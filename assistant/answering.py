"""One answer, start to finish: language, follow-up condensing, query translation,
retrieval, the scope guardrail and the evidence gate, then the streamed, cited answer.

``Answerer.ask`` yields a ``Reading`` (the sources, when the model is asked),
``AnswerDelta``s, then one ``Answer``. What it adds to the model's
text (urgent-care advice first, notices and the disclaimer last) is streamed too, so the
concatenated deltas always equal ``Answer.text``.
"""
from __future__ import annotations

import logging
import time
from dataclasses import replace
from collections.abc import Callable, Iterator, Sequence

from assistant.cite_grammar import cited_answer_grammar
from assistant.citations import (MarkerFilter, add_missing_markers, build_citations, marker_numbers,
                                 only_labels)
from assistant.condense import condense, translate_query
from assistant.step_checks import (StepCheck, check_condensed, check_translation,
                                   content_words)
from assistant.guard import (STRONG_SUPPORT, DoseFilter, ScopeGuard, support, threshold_for,
                             urgent_advice)
from assistant.inference_log import InferenceLog
from assistant.language import (LatinOnlyStream, TraditionalStream, question_language,
                                to_traditional)
from assistant.llm import LLM
from assistant.messages import say
from assistant.profiles import MEDICAL_DISCLAIMER, Profile
from assistant.repetition import RepeatStop
from assistant.prompts import answer_messages, fit_sources, source_from_hit
from assistant.settings import Settings
from assistant.types import Answer, AnswerDelta, Citation, Reading, Source
from knowledge.fusion import reciprocal_rank_fusion
from knowledge.library import Library
from knowledge.types import Hit

log = logging.getLogger(__name__)

_KB_LANG = {"en": "en", "zh": "zh", "vi": "vi"}  # manifest language -> comparable code
# A follow-up with at least this many content words has a subject of its own (fewer:
# elliptical, like "And for children?", and judged through its rewrite only).
OWN_WORDS = 3


class Answerer:
    def __init__(self, settings: Settings, library: Library, guard: Callable[[], ScopeGuard],
                 inference_log: InferenceLog | None):
        self.settings, self.library = settings, library
        self._guard, self._log = guard, inference_log

    def ask(self, llm: LLM, question: str, kbs: list[str], history: Sequence[tuple[str, str]],
            profile: Profile, model: str, user: str = "") -> Iterator[Reading | AnswerDelta | Answer]:
        timings: dict[str, float] = {}
        steps: list[str] = []  # which intermediate outputs were used, for the log
        lang = question_language(question)
        standalone = self._standalone(llm, question, history, timings, steps)
        query = self._translated(llm, standalone, kbs, lang, timings, steps)
        t0 = time.perf_counter()
        top_k = self.settings.retrieval.top_k
        searched = self._search_order(query, standalone, kbs[0])
        found = [self.library.search(kbs, q, top_k) for q in searched]
        hits = _interleave(found, top_k)
        timings["retrieve_s"] = time.perf_counter() - t0
        best = max((b for b in map(support, found) if b is not None), default=None)
        margin = self._support_margin(searched, found, kbs[0])
        supported, strong = margin >= 0, margin >= STRONG_SUPPORT
        urgent = urgent_advice(question, lang) if profile.medical else ""
        run = _Run(question, query, lang, kbs, model, timings, best, urgent, steps)
        run.user = user
        if profile.scope:
            t0 = time.perf_counter()
            verdict = self._guard().check(profile.subject, standalone, supported and bool(hits),
                                          strong and bool(hits))
            if verdict.in_scope and standalone != question and \
                    len(content_words(question)) >= OWN_WORDS:
                # a follow-up with a subject of its own is judged on its own words too:
                # a rewrite may have lent it the conversation's medical context
                own = self._guard().check(profile.subject, question, False)
                if not own.in_scope:
                    verdict = own
                    steps.append("guardrail: the follow-up's own words are out of scope")
                    run.steps = tuple(steps)
            timings["scope_s"] = time.perf_counter() - t0
            if not verdict.in_scope:
                text = say("out_of_scope", lang, scope=profile.scope, kb=", ".join(kbs))
                yield from self._finish_refusal(run, "out_of_scope", text, [], profile)
                return
        if not hits or (self.settings.answers.gate and not supported):
            text = say("no_evidence", lang, kb=", ".join(kbs))
            yield from self._finish_refusal(run, "no_evidence", text, hits[:3], profile)
            return
        yield from self._generate(llm, run, hits, profile)

    # --- steps ----------------------------------------------------------------------
    @staticmethod
    def _standalone(llm: LLM, question: str, history: Sequence[tuple[str, str]],
                    timings: dict[str, float], steps: list[str]) -> str:
        """The question rewritten to stand alone (judged by the guardrail as such); the
        question itself when the rewrite fails its checks (``step_checks``)."""
        if not history:
            return question
        t0 = time.perf_counter()
        rewrite = condense(llm, history, question)
        timings["condense_s"] = time.perf_counter() - t0
        return _vetted("condense", question, rewrite, check_condensed, steps)

    def _search_order(self, query: str, standalone: str, kb: str) -> list[str]:
        """The searches to run, the one whose hits lead the sources first.

        A translated query is searched beside the question: documents in the question's
        own language (a mixed knowledge base) are still found. Which leads depends on the
        embedder: a knowledge base embedded by ``embedder.across`` (built for questions
        asked in another language) finds passages from the question's own words better
        than from the small model's translation, which may have changed its subject, so
        the asker's words lead; with other embedders the translation leads, as their
        search across languages is weaker than BM25 and dense search on English words."""
        across = self.settings.embedder.across
        own_first = bool(across) and self.library.get(kb).manifest.embedder == across
        return list(dict.fromkeys([standalone, query] if own_first else [query, standalone]))

    def _support_margin(self, searched: list[str], found: list[list[Hit]], kb: str) -> float:
        """The evidence gate: how far the best hit of the best search clears its query's
        threshold (negative: the gate holds the answer back; infinite: no calibration,
        the gate is off). A query in another language than the knowledge base's (the
        question itself, beside its translation or when that was rejected) is held to the
        threshold calibrated for questions asked across languages, which score lower
        when answerable."""
        manifest = self.library.get(kb).manifest
        kb_lang = _KB_LANG.get(manifest.language or "")
        margin = float("-inf")
        for query, hits in zip(searched, found):
            across = bool(kb_lang) and question_language(query).split("-")[0] != kb_lang
            threshold = threshold_for(manifest.embedder, self.settings.answers.min_similarity,
                                      across)
            best = support(hits)
            if threshold is None:
                return float("inf")
            if best is not None:
                margin = max(margin, best - threshold)
        return margin

    def _translated(self, llm: LLM, query: str, kbs: list[str], lang: str,
                    timings: dict[str, float], steps: list[str]) -> str:
        """``query`` in the knowledge base's language, for keyword and vector search;
        ``query`` itself when the translation fails its checks (it is searched anyway,
        through the dense retriever and BM25 on its own words)."""
        kb_lang = _KB_LANG.get(self.library.get(kbs[0]).manifest.language or "")
        if not kb_lang or kb_lang == lang.split("-")[0]:
            return query
        t0 = time.perf_counter()
        translation = translate_query(llm, query, kb_lang)
        timings["translate_s"] = time.perf_counter() - t0
        return _vetted("translate", query, translation,
                       lambda q, t: check_translation(q, t, kb_lang), steps)

    def _generate(self, llm: LLM, run: "_Run", hits: list[Hit], profile: Profile
                  ) -> Iterator[Reading | AnswerDelta | Answer]:
        cfg = self.settings.llm
        t0 = time.perf_counter()
        sources = self._sources(run.query, hits)
        if self.settings.retrieval.compress_budget:
            run.timings["compress_s"] = time.perf_counter() - t0
        bare = answer_messages(run.question, [], profile.system_prompt, run.lang)
        budget = (cfg.n_ctx - cfg.max_tokens - 64
                  - sum(llm.count_tokens(m["content"]) for m in bare))
        sources = fit_sources(sources, budget, llm.count_tokens)
        messages = answer_messages(run.question, sources, profile.system_prompt, run.lang)
        valid = {s.number for s in sources}
        dose = DoseFilter() if profile.medical else None
        stages = [MarkerFilter(valid)] + ([dose] if dose else [])
        stages += [TraditionalStream()] if run.lang == "zh-Hant" else []
        latin = LatinOnlyStream() if run.lang in ("en", "vi") else None
        stages += [latin] if latin else []
        repeat = RepeatStop(echo=run.question)  # last: it judges the text as shown
        stages.append(repeat)
        if latin:
            llm = llm.latin_only()  # CJK tokens cannot be sampled (where the backend can)
        if self._cite_while_writing(run.lang, sources):
            llm = llm.constrained(cited_answer_grammar(valid))
            run.steps += ("citations: a marker required in every sentence (grammar)",)
        yield Reading(tuple(sources), run.lang)
        shown: list[str] = []
        if run.urgent:
            shown.append(run.urgent + "\n\n")
            yield AnswerDelta(shown[-1])
        pieces: list[str] = []
        t1 = time.perf_counter()
        stream = llm.stream_chat(messages, cfg.max_tokens, cfg.temperature)
        for piece in stream:
            if not pieces:
                run.timings["first_token_s"] = time.perf_counter() - t1
            pieces.append(piece)
            out = _through(stages, piece)
            if out:
                shown.append(out)
                yield AnswerDelta(out)
            if repeat.stopped:  # the model loops: end its request, keep what it said
                getattr(stream, "close", lambda: None)()
                run.steps += (f"repetition: stopped after {repeat.repeats} repeated "
                              "sentences",)
                break
        tail = _flush(stages)
        if tail:
            shown.append(tail)
            yield AnswerDelta(tail)
        run.timings["generate_s"] = time.perf_counter() - t1
        if repeat.echoed:
            run.steps += (f"echo: {repeat.echoed} sentence(s) restating the question not shown",)
        if latin and latin.removed:
            run.steps += (f"script: {latin.removed} East Asian characters removed from the "
                          f"{run.lang} answer",)
        body = "".join(shown)[len(run.urgent) + 2 if run.urgent else 0:].strip()
        if dose and dose.removed:  # the final text loses the streamed starts of dropped doses
            body = (to_traditional(dose.text) if run.lang == "zh-Hant" else dose.text).strip()
        citations = _citations(body, sources)
        if citations and only_labels(body, sources):
            citations = []  # the sources' headers copied: nothing was answered
            run.steps += ("citations: the answer only named its sources",)
        refused = ""
        if not body or (profile.medical and not citations):
            # nothing grounded (medical), or nothing left to show (the model only
            # restated the question): said as "not found", the sources listed
            refused = "unsupported"
            body = say("no_evidence", run.lang, kb=", ".join(run.kbs))
            yield AnswerDelta("\n\n" + body)
        notices = []
        if dose and dose.removed:
            notices.append(say("dose_removed", run.lang))
        notices += self._disclaimer(profile, run.lang)
        text = self._assemble(run, body, notices)
        if notices:
            yield AnswerDelta("\n\n" + "\n\n".join(notices))
        tokens = llm.count_tokens("".join(pieces)) if pieces else 0
        prompt_tokens = sum(llm.count_tokens(m["content"]) for m in messages)
        answer = Answer(run.question, text, tuple(citations) if not refused else (), tuple(sources),
                        run.model, run.timings, tokens=tokens, search_query=run.query,
                        refused=refused, language=run.lang, notices=tuple(notices),
                        prompt_tokens=prompt_tokens, support=run.support, steps=run.steps)
        self._record(answer, run)
        yield answer

    def _cite_while_writing(self, lang: str, sources: Sequence[Source]) -> bool:
        """Whether the answer is decoded under the citing grammar: always, never, or
        (the default) when it is written in another language than its sources, where a
        forgotten marker cannot be inferred from shared words afterwards."""
        mode = self.settings.answers.cite_grammar
        if mode != "across" or not sources:
            return mode == "always" and bool(sources)
        sample = "\n".join(s.text for s in sources)[:4000]
        return question_language(sample).split("-")[0] != lang.split("-")[0]

    def _finish_refusal(self, run: "_Run", reason: str, text: str, hits: list[Hit],
                        profile: Profile) -> Iterator[AnswerDelta | Answer]:
        notices = self._disclaimer(profile, run.lang)
        full = self._assemble(run, text, notices)
        yield AnswerDelta(full)
        sources = tuple(source_from_hit(i, h) for i, h in enumerate(hits, start=1))
        answer = Answer(run.question, full, (), sources, run.model, run.timings,
                        search_query=run.query, refused=reason, language=run.lang,
                        notices=tuple(notices), support=run.support, steps=run.steps)
        self._record(answer, run)
        yield answer

    def _sources(self, query: str, hits: list[Hit]) -> list[Source]:
        budget = self.settings.retrieval.compress_budget
        if not budget:
            return [source_from_hit(i, h) for i, h in enumerate(hits, start=1)]
        return [source_from_hit(i, c.hit, c.text) for i, c in enumerate(
            self.library.compress(query, hits, budget), start=1)]

    @staticmethod
    def _disclaimer(profile: Profile, lang: str) -> list[str]:
        if not profile.disclaimer.strip():
            return []
        return [say("disclaimer", lang) if profile.disclaimer == MEDICAL_DISCLAIMER
                else profile.disclaimer.strip()]

    @staticmethod
    def _assemble(run: "_Run", body: str, notices: list[str]) -> str:
        parts = ([run.urgent] if run.urgent else []) + [body] + notices
        return "\n\n".join(p for p in parts if p)

    def _record(self, answer: Answer, run: "_Run") -> None:
        if self._log is not None:
            self._log.record(answer, run.kbs, run.user)


class _Run:
    """What one answer has found out so far (mutable on purpose: timings fill in)."""

    def __init__(self, question: str, query: str, lang: str, kbs: list[str], model: str,
                 timings: dict[str, float], best: float | None, urgent: str,
                 steps: list[str]):
        self.question, self.query, self.lang, self.kbs = question, query, lang, kbs
        self.model, self.timings, self.support, self.urgent = model, timings, best, urgent
        self.steps = tuple(steps)
        self.user = ""  # the account asking, for the inference log


def _citations(body: str, sources: list[Source]) -> list[Citation]:
    """Citations for the markers in ``body``, plus ``inferred`` ones for sentences the
    model left unmarked whose words mostly come from one source (small models often
    answer faithfully but forget the marker). The text itself is left as streamed."""
    own = set(marker_numbers(body))
    marked = add_missing_markers(body, sources)
    return [c if c.number in own else replace(c, inferred=True)
            for c in build_citations(marked, sources)]


def _interleave(lists: list[list[Hit]], k: int) -> list[Hit]:
    """Several ranked lists (the question and its translation) as one, by the knowledge
    layer's reciprocal rank fusion.

    >>> from knowledge.types import Chunk
    >>> h = lambda cid, d: Hit(Chunk(cid, "d", "s", "t", 1, 0, 1, 0), d, scores={"dense": d})
    >>> [x.chunk.chunk_id for x in _interleave([[h("a", .9), h("b", .8)], [h("c", .95), h("a", .7)]], 3)]
    ['a', 'c', 'b']
    """
    if len(lists) == 1:
        return lists[0][:k]
    return reciprocal_rank_fusion({f"query{i}": hits for i, hits in enumerate(lists)},
                                  k=59, limit=k)  # 59: ranks count from 1 there


def _vetted(step: str, original: str, output: str,
            check: Callable[[str, str], StepCheck], steps: list[str]) -> str:
    """The model's ``output`` for ``step`` when it passes ``check``, else ``original``;
    noted in ``steps`` either way (unless the model gave ``original`` back).

    >>> steps = []
    >>> _vetted("translate", "Q?", "An answer.", lambda q, t: StepCheck(False, "no"), steps)
    'Q?'
    >>> steps
    ["translate rejected: 'An answer.' (no); the question is used instead"]
    """
    if output == original:
        return original
    verdict = check(original, output)
    steps.append(f"{step} {'used' if verdict.ok else 'rejected'}: {output!r}"
                 + ("" if verdict.ok else f" ({verdict.reason}); the question is used instead"))
    return output if verdict.ok else original


def _through(stages, piece: str) -> str:
    for stage in stages:
        piece = stage.feed(piece)
    return piece


def _flush(stages) -> str:
    out = ""
    for stage in stages:
        out = stage.feed(out) + stage.flush() if out else stage.flush()
    return out
