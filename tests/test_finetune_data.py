"""Fine-tuning datasets: shapes, row-numbered validation, held-out split, specs, and the
knowledge-base pair generator's filters (with a scripted LLM)."""
from __future__ import annotations

import json
import re

import pytest

from finetune.data import (
    DatasetError,
    get_dataset,
    import_dataset,
    load_file,
    preview,
    read_split,
    replace_examples,
)
from finetune.generate import GenerateOptions, generate_pairs
from finetune.specs import SpecError, spec_from_dict, to_dict
from knowledge.types import Chunk
from tests.fakes import ScriptedLLM


def _jsonl(path, rows):
    path.write_text("\n".join(json.dumps(r, ensure_ascii=False) for r in rows) + "\n")
    return path


def test_all_shapes_load(tmp_path):
    _jsonl(tmp_path / "pr.jsonl", [{"prompt": "Hi?", "response": "Hello."}])
    _jsonl(tmp_path / "alpaca.jsonl", [{"instruction": "Add", "input": "1+1", "output": "2"}])
    _jsonl(tmp_path / "chat.jsonl", [{"messages": [{"role": "system", "content": "Be brief."},
                                                   {"role": "user", "content": "Hi"},
                                                   {"role": "assistant", "content": "Hey"}]}])
    _jsonl(tmp_path / "text.jsonl", [{"text": "Raw paragraph about clinics."}])
    _jsonl(tmp_path / "dpo.jsonl", [{"prompt": "Q?", "chosen": "Good.", "rejected": "Bad."}])
    (tmp_path / "pr.csv").write_text("prompt,response\n\"Hi, there?\",Hello.\nBye?,Bye.\n")
    import pyarrow as pa
    import pyarrow.parquet as pq

    pq.write_table(pa.Table.from_pylist([{"instruction": "Say hi", "output": "Hi"}]),
                   tmp_path / "alpaca.parquet")
    shapes = {name: load_file(tmp_path / name)
              for name in ("pr.jsonl", "alpaca.jsonl", "chat.jsonl", "text.jsonl", "dpo.jsonl",
                           "pr.csv", "alpaca.parquet")}
    assert shapes["pr.jsonl"][1][0].messages == (("user", "Hi?"), ("assistant", "Hello."))
    assert shapes["alpaca.jsonl"][1][0].messages[0] == ("user", "Add\n\n1+1")
    assert shapes["chat.jsonl"][1][0].messages[0] == ("system", "Be brief.")
    assert shapes["text.jsonl"][0] == "text"
    assert shapes["dpo.jsonl"][0] == "preference"
    assert shapes["dpo.jsonl"][1][0].rejected == "Bad."
    assert [e.question for e in shapes["pr.csv"][1]] == ["Hi, there?", "Bye?"]
    assert shapes["alpaca.parquet"][1][0].answer == "Hi"


def test_validation_names_the_rows(tmp_path):
    path = tmp_path / "bad.jsonl"
    path.write_text('{"prompt": "a", "response": "b"}\n\n{"prompt": "c"}\n'
                    '{"prompt": "d", "response": ""}\n{"prompt": "e", "response": "f"}\n')
    with pytest.raises(DatasetError) as err:
        load_file(path)
    msg = str(err.value)
    assert "row 3: 'response' is missing or empty" in msg  # 1-based file line
    assert "row 4: 'response'" in msg and "row 5" not in msg and "2 bad row(s)" in msg

    path.write_text('{"prompt": "a", "response": "b"}\n{not json}\n')
    with pytest.raises(DatasetError, match="line 2: not valid JSON"):
        load_file(path)
    chat = _jsonl(tmp_path / "chat.jsonl", [
        {"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "yo"}]},
        {"messages": [{"role": "user", "content": "hi"}]}])
    with pytest.raises(DatasetError, match="row 2: the last message must be the assistant"):
        load_file(chat)
    csv = tmp_path / "x.csv"
    csv.write_text("prompt,response\nok,fine\nmissing,\n")
    with pytest.raises(DatasetError, match="row 2: 'response'"):
        load_file(csv)
    with pytest.raises(DatasetError, match="unsupported file type"):
        load_file(_jsonl(tmp_path / "a.txt", [{}]))


def test_import_stores_a_deterministic_heldout_split(tmp_path):
    rows = [{"prompt": f"Question {i}?", "response": f"Answer {i}."} for i in range(40)]
    src = _jsonl(tmp_path / "qa.jsonl", rows)
    root = tmp_path / "datasets"
    rec = import_dataset(root, src)
    assert (rec.train, rec.heldout) == (35, 5)  # 10% = 4, at least 5
    meta = json.loads((rec.path / "meta.json").read_text())
    assert meta["hash"] == rec.hash and meta["shape"] == "chat" and meta["origin"].endswith("qa.jsonl")
    held = [e.question for e in read_split(rec, "heldout")]
    # same content elsewhere -> same split
    rec2 = import_dataset(tmp_path / "other", _jsonl(tmp_path / "copy.jsonl", rows), name="qa")
    assert [e.question for e in read_split(rec2, "heldout")] == held
    assert rec2.hash == rec.hash
    assert len(set(held) & {e.question for e in read_split(rec, "train")}) == 0
    small = import_dataset(root, _jsonl(tmp_path / "small.jsonl", rows[:10]))
    assert (small.train, small.heldout) == (10, 0)
    assert preview(root, rec.id, 2)[0]["messages"][0]["role"] == "user"
    assert get_dataset(root, rec.id) == rec
    edited = replace_examples(root, rec.id, rows[:30])
    assert edited.id != rec.id and edited.train + edited.heldout == 30
    with pytest.raises(DatasetError, match="No dataset"):
        get_dataset(root, "nope")


def test_specs_validate_up_front():
    spec = spec_from_dict("lora", {"target_modules": "q_proj,v_proj", "r": 4})
    assert spec.target_modules == ("q_proj", "v_proj") and spec.alpha == 8
    assert spec_from_dict("lora", to_dict(spec)) == spec
    with pytest.raises(SpecError, match="Unknown LoRA target module"):
        spec_from_dict("lora", {"target_modules": ["qq_proj"]})
    with pytest.raises(SpecError, match="Unknown field"):
        spec_from_dict("lora", {"rank": 4})
    with pytest.raises(SpecError, match="QLoRA is unavailable"):
        spec_from_dict("lora", {"qlora": True})
    with pytest.raises(SpecError, match="positions"):
        spec_from_dict("reft", {"positions": "x3"})
    assert spec_from_dict("reft", {"layers": "0,1"}).layers == (0, 1)
    assert spec_from_dict("dpo", {"beta": 0.3}).beta == 0.3
    with pytest.raises(SpecError, match="Unknown training method"):
        spec_from_dict("sft", {})


# --- generation filters --------------------------------------------------------------------
PASSAGES = [
    ("Amoxicillin for adults is usually 500 mg taken three times daily for seven days. "
    "Patients allergic to penicillin must not take amoxicillin."),
    ("The clinic opens at 8 am on weekdays and closes at 6 pm. On Saturdays it opens at 9 am "
    "and closes at noon; it is closed on Sundays and public holidays."),
    ("Visitors must sign in at the front desk and wear a visitor badge at all times. Children "
    "under twelve need an adult with them in the wards during visiting hours."),
]


def _chunks():
    return [Chunk(f"c{i}", f"d{i}", f"doc{i}.txt", t * 2, 1, 0, len(t) * 2, 0)
            for i, t in enumerate(PASSAGES)]


class PairLLM(ScriptedLLM):
    """Writes the scripted (question, answer) of the passage whose key word is in the
    prompt: ``script`` = [(key word, question reply, answer reply), ...]."""

    def __init__(self, script):
        super().__init__("")
        self.script = script

    def stream_chat(self, messages, max_tokens, temperature):
        self.calls.append(list(messages))
        prompt = messages[-1]["content"]
        for key, question, answer in self.script:
            if key in prompt:
                yield answer if "Question:" in prompt else question
                return
        yield "?"


def _run(gen):
    events = []
    try:
        while True:
            events.append(next(gen))
    except StopIteration as stop:
        return events, stop.value


def test_generation_keeps_grounded_pairs_with_their_chunk():
    llm = PairLLM([("Amoxicillin", "Question: What is the adult dose of amoxicillin?",
                    "Answer: Adults take 500 mg three times daily for seven days."),
                   ("clinic opens", "When does the clinic open on Saturdays?",
                    "It opens at 9 am on Saturdays."),
                   ("Visitors", "Who must wear a visitor badge?",
                    "Visitors must wear a visitor badge.")])
    events, examples = _run(generate_pairs(llm, _chunks(), GenerateOptions(n=3, refusals=True,
                                                                   questions_per_chunk=1)))
    assert [e.index for e in events] == [1, 2, 3] and events[-1].kept == 3
    qa = [e for e in examples if e.source != "refusal"]
    assert {e.source for e in qa} == {"c0", "c1", "c2"}
    dose = next(e for e in qa if e.source == "c0")
    assert dose.answer == "Adults take 500 mg three times daily for seven days."
    refusals = [e for e in examples if e.source == "refusal"]
    assert len(refusals) == 2 and "outside the documents" in refusals[0].answer


def test_generation_filters_repetition_duplicates_and_unsupported_answers():
    llm = PairLLM([("Amoxicillin", "What is the adult dose of amoxicillin?",
                    "Adults take 500 mg three times daily for seven days."),
                   ("Visitors", "Who must wear a visitor badge?",
                    "badge badge badge badge badge badge badge badge badge badge badge")])
    chunks = _chunks()
    # the same passage in another document: the same pair again (a duplicate)
    chunks = [chunks[0], Chunk("c0b", "d9", "copy.txt", chunks[0].text, 1, 0, 10, 0), chunks[2]]
    events, examples = _run(generate_pairs(llm, chunks, GenerateOptions(n=3, refusals=False,
                                                                   questions_per_chunk=1)))
    assert events[-1].dropped == {"duplicate": 1, "repetitive": 1}
    assert [e.answer for e in examples] == ["Adults take 500 mg three times daily for seven days."]

    llm = PairLLM([("Amoxicillin", "What is the adult dose of amoxicillin?",
                    "Take two aspirin with whisky and call a lawyer tomorrow morning."),
                   ("clinic opens", "When does the clinic open?", "It opens at 8 am on weekdays."),
                   ("Visitors", "Who must wear a visitor badge?",
                    "Every visitor must wear the visitor badge at all times in the wards.")])
    events, examples = _run(generate_pairs(llm, _chunks(), GenerateOptions(n=3, refusals=False,
                                                                   questions_per_chunk=1)))
    assert events[-1].dropped == {"unsupported": 1}
    assert {e.source for e in examples} == {"c1", "c2"}


def test_two_questions_per_passage_and_a_heldout_question_about_a_trained_passage(tmp_path):
    class TwoQuestionLLM(PairLLM):
        """Asks the scripted question first, then (told to differ) a second one."""

        def stream_chat(self, messages, max_tokens, temperature):
            prompt = messages[-1]["content"]
            if "Question:" not in prompt and "different fact" in prompt:
                self.calls.append(list(messages))
                key = next(k for k, *_ in self.script if k in prompt)
                yield f"What else does the passage say about {key}?"
                return
            yield from super().stream_chat(messages, max_tokens, temperature)

    llm = TwoQuestionLLM([("Amoxicillin", "What is the adult dose of amoxicillin?",
                           "Adults take 500 mg three times daily for seven days."),
                          ("clinic opens", "When does the clinic open?",
                           "The clinic opens at 8 am on weekdays."),
                          ("Visitors", "Who must wear a visitor badge?",
                           "Visitors must wear a visitor badge.")])
    events, examples = _run(generate_pairs(llm, _chunks(), GenerateOptions(n=6, refusals=False)))
    assert [e.index for e in events] == [1, 2, 3, 4, 5, 6] and events[-1].total == 6
    assert sorted(e.source for e in examples) == ["c0", "c0", "c1", "c1", "c2", "c2"]
    second = [c for c in llm.calls if "different fact" in c[-1]["content"]]
    assert len(second) == 3 and "- What is the adult dose of amoxicillin?" in second[0][-1]["content"]

    # 20 passages x 2 pairs: the held-out pairs are about passages trained on
    from finetune.data import Example, save_dataset, read_split
    many = [Example(messages=(("user", f"Question {i} about passage {i // 2}?"),
                              ("assistant", f"Answer {i}.")), source=f"p{i // 2}")
            for i in range(40)]
    record = save_dataset(tmp_path, many, "chat", "pairs", "test")
    held, train = read_split(record, "heldout"), read_split(record, "train")
    assert record.heldout == 5 and len({e.source for e in held}) == 5
    assert {e.source for e in held} <= {e.source for e in train}


def test_raft_samples_hold_the_oracle_among_distractors():
    llm = PairLLM([("Amoxicillin", "What is the adult dose of amoxicillin?",
                    "Adults take 500 mg three times daily."),
                   ("clinic opens", "When does the clinic open?", "It opens at 8 am on weekdays."),
                   ("Visitors", "Who must wear a visitor badge?",
                    "Visitors must wear a visitor badge.")])
    _, examples = _run(generate_pairs(llm, _chunks(), GenerateOptions(
        n=3, refusals=False, raft_fraction=1.0, distractors=2, questions_per_chunk=1)))
    for e in examples:
        prompt = e.question
        assert prompt.startswith("Documents:\n[1]") and "[3]" in prompt
        oracle = next(c for c in _chunks() if c.chunk_id == e.source)
        assert oracle.text in prompt


def test_raft_samples_are_asked_as_the_chat_asks_and_cite_the_oracle():
    from assistant.prompts import SYSTEM_PROMPT, answer_messages
    from assistant.types import Source

    def chat_prompt(question, chunks):
        sources = [Source(i, c.chunk_id, "kb", c.source, c.page, c.text, 0.0)
                   for i, c in enumerate(chunks, start=1)]
        return answer_messages(question, sources, SYSTEM_PROMPT, "en")

    llm = PairLLM([("Amoxicillin", "What is the adult dose of amoxicillin?",
                    "Adults take 500 mg. It is taken three times daily."),
                   ("clinic opens", "When does the clinic open?", "It opens at 8 am on weekdays."),
                   ("Visitors", "Who must wear a visitor badge?",
                    "Visitors must wear a visitor badge.")])
    _, examples = _run(generate_pairs(llm, _chunks(), GenerateOptions(
        n=3, refusals=False, raft_fraction=1.0, distractors=2, questions_per_chunk=1),
        rag_prompt=chat_prompt))
    for e in examples:
        (role, system), (_, user), (_, answer) = e.messages
        assert role == "system" and system.startswith(SYSTEM_PROMPT)
        oracle = next(c for c in _chunks() if c.chunk_id == e.source)
        block = re.search(r"\[(\d)\] \([^)]*\)\n" + re.escape(oracle.text.strip()[:30]), user)
        assert user.startswith("Sources:") and "Question:" in user and block
        number = block.group(1)
        sentences = [s for s in answer.split(". ") if s]
        assert all(f"[{number}]" in s for s in sentences), answer


def test_quoted_answers_are_the_passage_sentences_and_two_questions_may_share_one():
    class TwoQuestionLLM(PairLLM):
        def stream_chat(self, messages, max_tokens, temperature):
            prompt = messages[-1]["content"]
            assert "Question:" not in prompt, "a quoted answer needs no model call"
            if "different fact" in prompt:
                yield "How long is amoxicillin taken by adults?"
                return
            yield from super().stream_chat(messages, max_tokens, temperature)

    llm = TwoQuestionLLM([("Amoxicillin", "What is the adult dose of amoxicillin?", "")])
    amox = _chunks()[0]
    _, examples = _run(generate_pairs(llm, [amox], GenerateOptions(
        n=2, refusals=False, answer_style="quoted", quote_words=30)))
    # both questions kept although they share the quote (only a repeated question is a
    # duplicate); the quote is whole sentences of the passage within the word budget
    assert [e.question for e in examples] == ["What is the adult dose of amoxicillin?",
                                              "How long is amoxicillin taken by adults?"]
    quote = examples[0].answer
    assert quote == examples[1].answer and quote in amox.text
    assert "500 mg" in quote and quote.endswith(".") and len(quote.split()) <= 30


def test_a_cross_lingual_question_keeps_a_written_answer():
    llm = PairLLM([("Amoxicillin", "阿莫西林的成人剂量是多少？",
                    "Adults take 500 mg three times daily for seven days.")])
    _, examples = _run(generate_pairs(llm, _chunks()[:1], GenerateOptions(
        n=1, refusals=False, answer_style="quoted", questions_per_chunk=1)))
    assert [e.answer for e in examples] == ["Adults take 500 mg three times daily for seven days."]
    assert any("Question:" in c[-1]["content"] for c in llm.calls)


def test_quote_picks_the_run_of_sentences_about_the_question():
    from finetune.generate import quote_answer

    passage = ("Gout is a kind of arthritis. It often starts in the big toe. "
               "Gout is caused by too much uric acid in the blood. The clinic is on Main Street.")
    assert quote_answer("What causes gout?", passage, 20) == (
        "It often starts in the big toe. Gout is caused by too much uric acid in the blood.")
    assert quote_answer("What causes gout?", passage, 200) == passage
    # a first sentence longer than the budget is kept whole, not cut
    assert quote_answer("gout", "Gout " + "word " * 40 + "ends.", 10).endswith("ends.")
    # Chinese has no spaces: its characters count against the budget
    zh = "痛风是一种关节炎。" + "它常从大脚趾开始。" * 10 + "痛风由血液中尿酸过多引起。"
    quote = quote_answer("痛风由什么引起？", zh, 30)
    assert quote == "它常从大脚趾开始。" * 2 + "痛风由血液中尿酸过多引起。"  # 28 characters
    with pytest.raises(ValueError, match="answer_style"):
        GenerateOptions(answer_style="paraphrased")


def test_estimate_follows_the_dataset_length(tmp_path):
    from finetune.base_models import estimate
    from finetune.data import Example, mean_tokens
    from finetune.specs import LoraSpec

    short = [Example(messages=(("user", "Hours?"), ("assistant", "8 to 6.")))]
    long = [Example(messages=(("user", "word " * 150), ("assistant", "答" * 100)))]
    assert 25 < mean_tokens(short) < 45 and 300 < mean_tokens(long) < 360
    assert mean_tokens([]) == 0.0
    spec = LoraSpec(max_length=512)
    base, cache = "qwen2.5-coder-0.5b", tmp_path  # a known size: nothing is loaded
    quick = estimate(spec, base, cache, mean_tokens(short))
    slow = estimate(spec, base, cache, mean_tokens(long))
    default = estimate(spec, base, cache)
    assert quick.seconds_per_step < default.seconds_per_step < slow.seconds_per_step
