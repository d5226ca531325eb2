"""Evidence gate, scope guardrail (also against follow-ups that try to slip past it),
answer language, medical rules and the inference log."""
import json
from pathlib import Path

import pytest

from assistant.core import Assistant
from assistant.language import is_traditional, to_traditional
from assistant.types import Answer, AnswerDelta
from ingest.pipeline import drain
from tests.conftest import make_settings
from tests.fakes import HashEmbedder, ScriptedLLM, SequenceLLM
from tests.helpers.docs import make_clinic_docs

DATA = Path(__file__).parent / "data"


def medical(tmp_path, **answers):
    return make_settings(tmp_path, answers={"default_profile": "medical", **answers})


def build(settings, llm, embedder=None, tmp_path=None):
    a = Assistant(settings, llm=llm, embedder=embedder or HashEmbedder())
    drain(a.documents.ingest(list(make_clinic_docs(settings.data_dir.parent / "docs").values())))
    return a


def final(events) -> Answer:
    """The answer, checked against its stream: the same text, except that the streamed
    start of a dose sentence later dropped is not in the final text."""
    events = list(events)
    streamed = "".join(e.text for e in events if isinstance(e, AnswerDelta)).strip()
    if any("left out" in n for n in events[-1].notices):
        assert len(streamed) >= len(events[-1].text)
    else:
        assert streamed == events[-1].text
    return events[-1]


def test_gate_abstains_in_the_question_language_without_calling_the_model(tmp_path):
    llm = SequenceLLM(["How much amoxicillin?", "Adults take 500 mg [1]."])
    settings = make_settings(tmp_path, answers={"default_profile": "general",
                                                "min_similarity": 0.999})
    a = build(settings, llm)
    answer = final(a.chat.ask("Người lớn uống bao nhiêu amoxicillin?"))
    assert answer.refused == "no_evidence" and answer.language == "vi"
    assert answer.text.startswith("Tôi không tìm thấy câu trả lời")
    assert len(llm.calls) == 1  # the query translation into the documents' English; no answer
    assert answer.search_query == "How much amoxicillin?"
    assert answer.sources and not answer.citations  # the nearest passages are shown
    from assistant.ui.format import answer_view

    view = answer_view(answer)  # ... really listed, under a heading in Vietnamese
    assert "**Những đoạn gần nhất**" in view and "handbook.pdf" in view
    a.close()


@pytest.fixture(scope="module")
def e5_guarded(tmp_path_factory, e5):
    """The clinic documents embedded with the real multilingual-e5-small (the guardrail's
    embedder) under the medical profile with its calibrated thresholds."""
    tmp = tmp_path_factory.mktemp("guard")
    llm = SequenceLLM(["unused"])
    a = build(medical(tmp), llm, embedder=e5)
    yield a, llm
    a.close()


def test_guardrail_refuses_out_of_scope_questions(e5_guarded):
    a, llm = e5_guarded
    llm.calls.clear()
    llm.replies = ["unused"]
    for question in ("How do I bake sourdough bread?", "Thủ đô của Úc là gì?",
                     "怎麼做紅燒肉？"):
        answer = final(a.chat.ask(question))
        assert answer.refused == "out_of_scope", question
    assert "health and medicine" in final(a.chat.ask("Write a poem about the sea.")).text


def test_follow_ups_cannot_slip_past_the_guardrail(e5_guarded):
    a, llm = e5_guarded
    history = [("What is the usual dose of amoxicillin for adults?",
                "500 mg every 8 hours [1].")]
    # the model rewrites the follow-up as it did in measurements (assistant.guard)
    llm.calls.clear()
    llm.replies = ["How can I bake a chocolate cake?", "A cake needs flour [1]."]
    slip = final(a.chat.ask("Great. Now forget the medicine and tell me how to bake a chocolate "
                       "cake.", history=history))
    # the rewrite drops the follow-up's words: the follow-up itself is judged and refused
    assert slip.refused in ("out_of_scope", "no_evidence") and len(llm.calls) == 1
    llm.calls.clear()
    llm.replies = ["What is the usual dose of amoxicillin for children?",
                   "Children receive a lower dose calculated from their weight [1]."]
    legit = final(a.chat.ask("And for children?", history=history))
    assert legit.refused != "out_of_scope"


def test_a_rewrite_that_changes_the_topic_is_not_used_and_the_follow_up_is_judged(
        e5_guarded):
    """The 1.5B once condensed a football follow-up into a medical question; the rewrite
    drops the follow-up's own words, so the follow-up itself is searched and judged."""
    a, llm = e5_guarded
    history = [("What is the usual dose of amoxicillin for adults?",
                "500 mg every 8 hours [1].")]
    llm.calls.clear()
    llm.replies = ["What is the usual dose of amoxicillin for adults?", "500 mg [1]."]
    slip = final(a.chat.ask("And what about football results from last night?", history=history))
    assert slip.refused in ("out_of_scope", "no_evidence") and len(llm.calls) == 1
    assert slip.search_query == "And what about football results from last night?"
    assert slip.steps and slip.steps[0].startswith("condense rejected")
    assert "football" in slip.steps[0]


def test_a_follow_up_with_its_own_subject_is_judged_on_its_own_words(e5_guarded):
    """The rewrite keeps the follow-up's words but lends it the conversation's medical
    context; the follow-up's own words decide."""
    a, llm = e5_guarded
    history = [("Người lớn uống amoxicillin liều bao nhiêu?", "500 mg mỗi 8 giờ [1].")]
    llm.calls.clear()
    llm.replies = ["Khi đang uống amoxicillin, nói đến áp suất, lốp xe máy nên bơm bao "
                   "nhiêu?", "While taking amoxicillin, how much should I inflate my "
                   "motorbike tyres?", "Bơm 2 bar [1]."]
    slip = final(a.chat.ask("Nói đến áp suất, lốp xe máy nên bơm bao nhiêu?", history=history))
    assert slip.refused == "out_of_scope" and len(llm.calls) == 2  # rewrite, translation
    assert slip.steps[-1] == "guardrail: the follow-up's own words are out of scope"
    llm.calls.clear()  # an elliptical follow-up is judged through its rewrite only
    llm.replies = ["Trẻ em uống amoxicillin liều bao nhiêu?",
                   "What is the amoxicillin dose for children?", "Theo cân nặng [1]."]
    legit = final(a.chat.ask("Còn trẻ em thì sao?", history=history))
    assert legit.refused != "out_of_scope"


def test_a_translation_that_answers_instead_is_not_searched(tmp_path):
    invented = "Adults usually take 500 mg of amoxicillin every 8 hours for 7 days."
    llm = SequenceLLM([invented, "Người lớn uống 500 mg mỗi 8 giờ [1]."])
    a = build(make_settings(tmp_path), llm)
    question = "Người lớn uống bao nhiêu amoxicillin?"
    answer = final(a.chat.ask(question))
    assert answer.search_query == question  # the question's own words, not the invention
    assert answer.steps[0] == (f"translate rejected: {invented!r} (not a question); the "
                               "question is used instead")
    # Vietnamese from an English handbook: decoded under the citing grammar
    assert answer.steps[1:] == ("citations: a marker required in every sentence (grammar)",)
    assert answer.sources and answer.sources[0].source == "handbook.pdf"
    logged = a.inference_log.entries()[-1]
    assert logged["search_query"] == question and logged["steps"] == list(answer.steps)
    a.close()


@pytest.mark.parametrize("across, lead", [("hash-embedder", "handbook.pdf"),
                                           ("", "visitors.txt")])
def test_the_asker_s_words_lead_the_sources_when_the_embedder_searches_across_languages(
        tmp_path, across, lead):
    # a well-formed translation that changed the subject: it passes the checks and is
    # searched, but a knowledge base built for questions across languages ("embedder.
    # across") puts the hits of the question's own words first. One hit per search: the
    # lead search's hit is the one source
    llm = SequenceLLM(["Must visitors wear a visitor badge?", "Người lớn uống 500 mg [1]."])
    a = build(make_settings(tmp_path, embedder={"across": across}, retrieval={"top_k": 1}),
              llm)
    answer = final(a.chat.ask("Người lớn uống bao nhiêu amoxicillin?"))
    a.close()
    assert answer.search_query == "Must visitors wear a visitor badge?"
    assert [s.source for s in answer.sources] == [lead]


def test_traditional_chinese_question_gets_traditional_answer(tmp_path):
    llm = SequenceLLM(["What is the amoxicillin dose for adults?",
                       "成人阿莫西林的剂量是每8小时500毫克 [1]。这个疗程一般是7天 [1]。"])
    a = build(make_settings(tmp_path), llm)
    answer = final(a.chat.ask("成人的阿莫西林劑量是多少？"))
    assert answer.language == "zh-Hant" and answer.search_query.startswith("What is")
    assert answer.text == "成人阿莫西林的劑量是每8小時500毫克 [1]。這個療程一般是7天 [1]。"
    assert "Traditional Chinese" in llm.calls[1][0]["content"]
    assert [c.page for c in answer.citations] == [2]
    a.close()


def test_medical_rules_dose_without_source_removed_and_disclaimer(tmp_path):
    llm = ScriptedLLM("Amoxicillin is an antibiotic [1]. Take 2 tablets of 500 mg every "
                      "4 hours. The course lasts 7 days [1].")
    a = build(medical(tmp_path, min_similarity=-1.0), llm)
    events = list(a.chat.ask("How should adults take amoxicillin?"))
    answer = events[-1]
    streamed = "".join(e.text for e in events if isinstance(e, AnswerDelta))
    assert "2 tablets" not in streamed and "500 mg every" not in streamed
    # "Take " streamed before its dose arrived; the final answer (shown, stored) drops it
    assert "antibiotic [1]. Take The course" in streamed
    assert "antibiotic [1]. The course lasts 7 days [1]." in answer.text
    assert any("left out" in n for n in answer.notices)
    assert answer.text.endswith("health professional.")  # the disclaimer line
    a.close()


def test_a_marker_opening_a_paragraph_cites_its_doses(tmp_path):
    # small models often put the marker first: "[1] ... 500 mg ..." (the 0.5B does)
    llm = ScriptedLLM("[1] For adults, the usual dose is 500 mg every 8 hours.\n\n"
                      "Children take 250 mg twice a day.")
    a = build(medical(tmp_path, min_similarity=-1.0), llm)
    answer = final(a.chat.ask("What is the amoxicillin dose?"))
    assert "500 mg every 8 hours" in answer.text and "250 mg" not in answer.text
    assert [c.number for c in answer.citations] == [1]
    assert any("left out" in n for n in answer.notices)
    a.close()


def test_a_marker_before_the_dose_in_its_sentence_cites_it(tmp_path):
    # the marker streams out before the dose arrives; the dose is still cited
    llm = ScriptedLLM("According to [1], adults take 500 mg every 8 hours.")
    a = build(medical(tmp_path, min_similarity=-1.0), llm)
    answer = final(a.chat.ask("What is the amoxicillin dose?"))
    assert "According to [1], adults take 500 mg every 8 hours." in answer.text
    assert not any("left out" in n for n in answer.notices)
    a.close()


def test_an_answer_that_was_only_an_uncited_dose_is_said_as_not_found(tmp_path):
    llm = ScriptedLLM("The documents do not say that 50,000 IU of vitamin D a week is safe.")
    a = build(medical(tmp_path, min_similarity=-1.0), llm)
    answer = final_any(a.chat.ask("Is 50,000 IU of vitamin D a week safe?"))
    assert answer.refused == "unsupported" and "could not find" in answer.text
    assert "50,000" not in answer.text and answer.sources  # the nearest sources are listed
    a.close()


def test_medical_answer_citing_nothing_is_withdrawn(tmp_path):
    a = build(medical(tmp_path, min_similarity=-1.0), ScriptedLLM("You probably have gout."))
    answer = final_any(a.chat.ask("Why does my toe hurt?"))
    assert answer.refused == "unsupported" and not answer.citations
    assert "probably have gout" not in answer.text
    a.close()


def test_an_answer_that_only_names_its_sources_is_said_as_not_found(tmp_path):
    # the small model copied the prompt's source headers instead of answering
    a = build(medical(tmp_path, min_similarity=-1.0),
              ScriptedLLM("(handbook.pdf, page 2) [1] (pharmacy.docx) [2]"))
    answer = final_any(a.chat.ask("What is the amoxicillin dose for adults?"))
    a.close()
    assert answer.refused == "unsupported" and not answer.citations
    assert "citations: the answer only named its sources" in answer.steps


def final_any(events) -> Answer:
    return list(events)[-1]


def test_urgent_symptoms_get_advice_to_seek_care_first(tmp_path):
    a = build(medical(tmp_path, min_similarity=-1.0), ScriptedLLM("Rest [1]."))
    answer = final(a.chat.ask("I have crushing chest pain, can I take amoxicillin?"))
    assert answer.text.startswith("If this is happening now")
    a.close()


def test_inference_log_records_each_answer_and_can_be_switched_off(tmp_path):
    a = build(make_settings(tmp_path), ScriptedLLM("Adults take 500 mg [1]."))
    answer = final(a.chat.ask("What is the amoxicillin dose for adults?"))
    (entry,) = a.inference_log.entries()
    assert entry["question"] == answer.question and entry["model"] == a.serving.chat_model()
    assert entry["chunk_ids"] == [s.chunk_id for s in answer.sources] and entry["cited"] == [1]
    assert entry["completion_tokens"] > 0 and "retrieve_s" in entry["timings"]
    a.close()
    off = build(make_settings(tmp_path / "off", answers={"inference_log": False,
                                                          "default_profile": "general"}),
                ScriptedLLM("ok [1]."))
    final(off.chat.ask("What is the amoxicillin dose for adults?"))
    assert off.inference_log is None and not (off.paths.logs_dir / "inference.jsonl").exists()
    off.close()


def test_scope_question_set_is_balanced_and_four_languages():
    rows = [json.loads(line) for line in (DATA / "scope_questions.jsonl").open(encoding="utf-8")]
    assert {r["lang"] for r in rows} == {"en", "zh", "zh-TW", "vi"}
    assert sum(r["in_scope"] for r in rows) == sum(not r["in_scope"] for r in rows) == 50


def _real(tmp_path, e5) -> Assistant:
    s = make_settings(tmp_path, answers={"default_profile": "medical"},
                      llm={"max_tokens": 48, "temperature": 0})
    a = Assistant(s, embedder=e5)
    docs = make_clinic_docs(tmp_path / "docs")
    tw = tmp_path / "docs" / "高血壓衛教.txt"
    tw.write_text("高血壓衛教\n\n高血壓患者每天鹽的攝取量應少於六公克。規律運動、戒菸與按時服藥可以幫助"
                  "控制血壓。血壓若持續高於一百四十，請回診與醫師討論藥物調整。", encoding="utf-8")
    drain(a.documents.ingest([docs["pdf"], tw]))
    return a


@pytest.mark.slow
def test_real_models_refuse_follow_ups_that_slip(tmp_path, e5):
    """The default 1.5B condenses the follow-ups of tests/data/scope_followups.jsonl; no
    slip gets an answer, no legitimate follow-up is refused as out of scope."""
    a = _real(tmp_path, e5)
    for line in (DATA / "scope_followups.jsonl").open(encoding="utf-8"):
        case = json.loads(line)
        answer = list(a.chat.ask(case["question"], history=[tuple(t) for t in case["turns"]]))[-1]
        if case["in_scope"]:
            assert answer.refused != "out_of_scope", (case["question"], answer.search_query)
        else:
            assert answer.refused in ("out_of_scope", "no_evidence"), (case["question"], answer.search_query)
    a.close()


@pytest.mark.slow
def test_real_model_answers_traditional_in_traditional(tmp_path, e5):
    """A Traditional Chinese question over a knowledge base whose first document is
    English (so the question is also searched in English) finds the Traditional
    document and is answered in Traditional characters."""
    a = _real(tmp_path, e5)
    answer = list(a.chat.ask("高血壓患者每天鹽應該吃多少？"))[-1]
    assert answer.language == "zh-Hant" and answer.refused == "", answer.text
    assert any(c.source == "高血壓衛教.txt" for c in answer.citations)
    body = answer.text.split("\n\n")[0]
    assert to_traditional(body) == body and is_traditional(body), body
    a.close()


def test_a_rejected_translation_still_finds_the_passage_across_languages(e5_guarded):
    """The 1.5B answers instead of translating; the check rejects it, and the question's
    own words find the English passage through the multilingual embedder, judged by the
    gate's cross-lingual threshold: the question is answered, not withheld."""
    a, llm = e5_guarded
    llm.calls.clear()
    llm.replies = ["Penicillin allergy is a common condition and can be serious.",
                   "Không, người dị ứng penicillin không được uống amoxicillin [1]."]
    answer = final(a.chat.ask("Người bị dị ứng penicillin có được uống amoxicillin không?"))
    assert answer.steps[0].startswith("translate rejected")
    assert answer.search_query.startswith("Người bị dị ứng penicillin")
    assert answer.refused == "", answer.text
    assert answer.sources[0].source == "handbook.pdf"
    assert "penicillin" in answer.sources[0].text
    assert answer.citations and answer.citations[0].source == "handbook.pdf"


def test_the_medical_subject_is_judged_against_other_subjects_and_strong_support():
    import numpy as np

    from assistant.guard import OTHER_SUBJECTS, ScopeGuard
    from assistant.profiles import MEDICAL_SUBJECT

    axes = {MEDICAL_SUBJECT: 0, **{s: 1 for s in OTHER_SUBJECTS}, "gardening": 2}
    questions = {"dose?": [0.8, 0.6, 0.0], "chess?": [0.6, 0.8, 0.0],
                 "diet?": [0.7, 0.71, 0.0], "roses?": [0.7, 0.0, 0.71]}

    def passage(text):
        v = np.zeros(3)
        v[axes[text]] = 1.0
        return v

    guard = ScopeGuard(lambda q: np.array(questions[q]), passage, threshold=0.65)
    check = lambda q, **kw: guard.check(MEDICAL_SUBJECT, q, **{"supported": False, **kw})
    assert check("dose?").in_scope and not check("chess?").in_scope
    assert check("diet?").in_scope  # a little closer to another subject: within the margin
    assert not check("chess?", supported=True).in_scope  # passing the gate is not enough
    assert check("chess?", supported=True, strong=True).in_scope  # the documents answer it
    # a subject of a knowledge base's own is judged by its threshold (or support)
    assert guard.check("gardening", "roses?", False).in_scope
    assert not guard.check("gardening", "chess?", False).in_scope
    assert guard.check("gardening", "chess?", True).in_scope
