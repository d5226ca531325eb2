"""The answer path with a scripted LLM: prompt, streaming, marker filtering, citations."""
import pytest

from assistant.core import Assistant
from assistant.types import Answer, AnswerDelta, Reading
from ingest.pipeline import drain
from tests.conftest import make_settings
from tests.fakes import HashEmbedder, ScriptedLLM
from tests.helpers.docs import make_clinic_docs


@pytest.fixture
def setup(tmp_path):
    llm = ScriptedLLM("Adults take 500 mg every 8 hours [1]. See also [7].")
    a = Assistant(make_settings(tmp_path), llm=llm, embedder=HashEmbedder())
    drain(a.documents.ingest(list(make_clinic_docs(tmp_path / "docs").values())))
    yield a, llm
    a.close()


def test_prompt_numbers_sources_and_answer_streams_with_citations(setup):
    a, llm = setup
    events = list(a.chat.ask("What is the amoxicillin dose for adults?"))
    deltas = [e.text for e in events if isinstance(e, AnswerDelta)]
    final = events[-1]
    assert isinstance(final, Answer) and len(deltas) > 3
    # the sources come first, while the model reads them, and are the answer's sources
    assert isinstance(events[0], Reading) and events[0].sources == final.sources
    assert "".join(deltas).strip() == final.text
    assert final.text == "Adults take 500 mg every 8 hours [1]. See also."
    prompt = llm.calls[0][-1]["content"]
    assert "[1] (handbook.pdf, page 2)" in prompt and "Question: What is the amoxicillin" in prompt
    # the rule to cite is repeated after the question, where the small model heeds it
    after_question = prompt.split("Question: ")[1]
    assert "Write the answer in English" in after_question and "like [1]" in after_question
    (cite,) = final.citations
    assert (cite.number, cite.source, cite.page) == (1, "handbook.pdf", 2)
    assert "500 mg every 8 hours" in cite.quote
    assert final.timings["retrieve_s"] >= 0 and "first_token_s" in final.timings


def test_sources_are_cut_to_the_context_budget(tmp_path):
    llm = ScriptedLLM("ok", n_ctx=512)
    s = make_settings(tmp_path, llm={"n_ctx": 512, "max_tokens": 100})
    a = Assistant(s, llm=llm, embedder=HashEmbedder())
    drain(a.documents.ingest(list(make_clinic_docs(tmp_path / "docs").values())))
    final = a.chat.answer("amoxicillin")
    total = sum(llm.count_tokens(m["content"]) for m in llm.calls[0])
    assert total + 100 <= 512
    assert 1 <= len(final.sources) < 5
    a.close()


def test_empty_question_is_refused(setup):
    a, _ = setup
    with pytest.raises(ValueError):
        list(a.chat.ask("   "))


@pytest.mark.parametrize("question, mode, constrained", [
    ("成人的阿莫西林剂量是多少？", "across", True),  # Chinese from English sources
    ("What is the amoxicillin dose for adults?", "across", False),
    ("What is the amoxicillin dose for adults?", "always", True),
    ("成人的阿莫西林剂量是多少？", "never", False),
])
def test_an_answer_across_languages_is_decoded_under_the_citing_grammar(
        tmp_path, question, mode, constrained):
    llm = ScriptedLLM("成人每8小时服用500毫克[1]。")
    a = Assistant(make_settings(tmp_path, answers={"cite_grammar": mode}), llm=llm,
                  embedder=HashEmbedder())
    drain(a.documents.ingest(list(make_clinic_docs(tmp_path / "docs").values())))
    final = a.chat.answer(question)
    a.close()
    assert bool(llm.grammars) == constrained
    if constrained:
        (grammar,) = llm.grammars
        numbers = {s.number for s in final.sources}
        # the grammar names exactly the sources given to the model
        assert 'ref ::= "[" (' + " | ".join(f'"{n}"' for n in sorted(numbers)) + ') "]"' in grammar
        assert any("grammar" in step for step in final.steps)


def test_a_model_that_loops_is_stopped_and_its_repeats_are_not_shown(tmp_path):
    loop = "Adults take 500 mg every 8 hours [1]. " * 6 + "Never shown."
    llm = ScriptedLLM(loop)
    a = Assistant(make_settings(tmp_path), llm=llm, embedder=HashEmbedder())
    drain(a.documents.ingest(list(make_clinic_docs(tmp_path / "docs").values())))
    events = list(a.chat.ask("What is the amoxicillin dose for adults?"))
    a.close()
    final = events[-1]
    streamed = "".join(e.text for e in events if isinstance(e, AnswerDelta))
    assert streamed.strip() == final.text
    assert final.text.count("500 mg every 8 hours") == 1 and "Never shown" not in final.text
    assert any(step.startswith("repetition: stopped") for step in final.steps)


def test_the_question_restated_as_the_answer_is_not_shown(tmp_path):
    llm = ScriptedLLM("What is the amoxicillin dose for adults? [1] Adults take 500 mg "
                      "every 8 hours [1].")
    a = Assistant(make_settings(tmp_path), llm=llm, embedder=HashEmbedder())
    drain(a.documents.ingest(list(make_clinic_docs(tmp_path / "docs").values())))
    final = a.chat.answer("What is the amoxicillin dose for adults?")
    a.close()
    assert final.text == "Adults take 500 mg every 8 hours [1]."
    assert [c.number for c in final.citations] == [1]
    assert "echo: 1 sentence(s) restating the question not shown" in final.steps


def test_an_answer_that_only_restated_the_question_is_said_as_not_found(tmp_path):
    llm = ScriptedLLM("What is the amoxicillin dose for adults? [1]")
    a = Assistant(make_settings(tmp_path), llm=llm, embedder=HashEmbedder())
    drain(a.documents.ingest(list(make_clinic_docs(tmp_path / "docs").values())))
    final = a.chat.answer("What is the amoxicillin dose for adults?")
    a.close()
    assert final.refused == "unsupported" and not final.citations and final.sources
    assert "did not find" in final.text or "not find" in final.text
