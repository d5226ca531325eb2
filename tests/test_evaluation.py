"""The real-task evaluation: question sets, scoring, resuming, the in-process run (CLI,
benchmark) and the job whose worker asks the running app's API (the Fine-tune tab)."""
from __future__ import annotations

import json

import pytest

import app as docent_app
from assistant.accounts import AccountStore
from assistant.core import Assistant
from ingest.pipeline import drain
from assistant.evaluation import (
    EvalQuestion, EvalReply, EvaluationError, load_questions, read_rows, run, summarize,
)
from tests.conftest import free_port, make_settings
from tests.fakes import HashEmbedder, ScriptedLLM
from tests.test_api import serve

HOURS = "Visiting hours on the ward are from 2 pm to 7 pm every day."


def write_set(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


def test_a_question_set_is_read_in_its_usual_shapes(tmp_path):
    path = write_set(tmp_path / "set.jsonl", [
        {"id": "a", "question": "When can I visit?", "answers": ["From 2 pm to 7 pm."],
         "relevant": ["hours.txt"]},
        {"_id": "b", "question": "Parking?", "reference_answers": [{"answer": "Level 2."}]},
        {"text": "Food?", "answer": "No outside food."},
    ])
    a, b, c = load_questions(path)
    assert a == EvalQuestion("a", "When can I visit?", ("From 2 pm to 7 pm.",), ("hours.txt",))
    assert b.references == ("Level 2.",) and c.id == "3" and c.references == ("No outside food.",)


def test_a_bad_question_set_is_refused_with_every_bad_line(tmp_path):
    path = tmp_path / "bad.jsonl"
    path.write_text('{"question": "ok?", "answer": "yes"}\nnot json\n{"answer": "no q"}\n'
                    '{"id": "1", "question": "again?", "answer": "x"}\n', encoding="utf-8")
    with pytest.raises(EvaluationError) as err:
        load_questions(path)
    assert "line 2" in str(err.value) and "line 3: no 'question'" in str(err.value)
    assert "appears twice" in str(err.value)
    with pytest.raises(EvaluationError, match="nothing to score"):
        load_questions(write_set(tmp_path / "bare.jsonl", [{"question": "Why?"}]))


def test_a_run_keeps_every_reply_and_resumes_where_it_stopped(tmp_path):
    questions = [EvalQuestion(str(i), f"q{i}?", ("take 500 mg",), ("a.pdf",)) for i in range(3)]
    asked = []

    def answer(q, model):
        asked.append((q.id, model))
        if model == "adapter" and q.id == "1" and len(asked) < 6:
            raise RuntimeError("the model server died")
        text = "take 500 mg [1]" if model == "adapter" else "I do not know"
        return EvalReply(text, model == "base" and q.id == "0", ("a.pdf",) if model ==
                         "adapter" else (), ("a.pdf",), 1.0)

    out = tmp_path / "replies.jsonl"
    with pytest.raises(RuntimeError):
        list(run(questions, ["base", "adapter"], answer, out))
    assert len(read_rows(out)) == 4  # base x 3, adapter's first: kept
    progress = list(run(questions, ["base", "adapter"], answer, out))
    assert progress[-1][:2] == (6, 6) and len(asked) == 4 + 1 + 2  # only what was missing
    summary = summarize(read_rows(out))
    assert summary["adapter"]["f1"] == 1.0 and summary["adapter"]["cited_relevant"] == 1.0
    assert summary["base"]["f1"] == 0.0 and summary["base"]["refused"] == pytest.approx(1 / 3,
                                                                                       abs=1e-3)


@pytest.fixture()
def clinic(tmp_path):
    port = free_port()
    store = AccountStore(tmp_path / "data" / "accounts.sqlite3")
    store.add("alice", "alice's password", "admin")  # the API then needs a token
    store.close()
    a = Assistant(make_settings(tmp_path, server={"port": port},
                                answers={"default_profile": "general", "gate": False}),
                  llm=ScriptedLLM("Visiting hours are from 2 pm to 7 pm [1]."),
                  embedder=HashEmbedder())
    (tmp_path / "hours.txt").write_text(HOURS, encoding="utf-8")
    drain(a.documents.ingest([tmp_path / "hours.txt"]))
    questions = write_set(tmp_path / "set.jsonl", [
        {"id": "1", "question": "What are the visiting hours on the ward?",
         "answer": "Visiting hours are from 2 pm to 7 pm.", "relevant": ["hours.txt"]},
        {"id": "2", "question": "When are visiting hours every day?",
         "answer": "2 pm to 7 pm.", "relevant": ["hours.txt"]}])
    yield a, questions, port
    a.close()


def test_the_cli_path_asks_in_process(clinic, tmp_path):
    a, questions, _ = clinic
    base = a.serving.chat_model()
    out = tmp_path / "replies.jsonl"
    list(a.evaluations.run_here(questions, [base], out))
    rows = read_rows(out)
    assert [r["id"] for r in rows] == ["1", "2"]
    assert rows[0]["cited"] == ["hours.txt"] and rows[0]["f1"] > 0.8
    assert rows[0]["answer"].startswith("Visiting hours are from 2 pm to 7 pm")
    with pytest.raises(EvaluationError, match="Unknown model"):
        list(a.evaluations.run_here(questions, ["no-such-adapter"], out))


@pytest.mark.slow
def test_the_job_asks_the_running_apps_api_with_its_own_token(clinic):
    a, questions, port = clinic
    base = a.serving.chat_model()
    with serve(docent_app.build_app(a), port):  # where the worker asks: server.own_url
        job = a.evaluations.submit(questions, [base])
        done = a.jobs.wait(job.id, timeout=240)
    assert done.status == "succeeded", a.jobs.log(job.id)
    results = a.evaluations.results(job.id)
    assert results.summary[base]["questions"] == 2
    assert results.summary[base]["cited_relevant"] == 1.0
    assert len(results.replies.read_text().splitlines()) == len(results.rows) == 2
    assert a.evaluations.jobs()[0].id == job.id


def test_the_cli_prints_the_comparison(tmp_path, capsys, monkeypatch):
    import assistant.core as core
    from assistant.__main__ import main as cli

    original = core.Assistant.__init__

    def with_fakes(self, settings, llm=None, embedder=None, embedders=None):
        original(self, settings, llm=ScriptedLLM("From 2 pm to 7 pm [1]."),
                 embedder=HashEmbedder())

    monkeypatch.setattr(core.Assistant, "__init__", with_fakes)
    (tmp_path / "hours.txt").write_text(HOURS, encoding="utf-8")
    questions = write_set(tmp_path / "set.jsonl", [
        {"question": "What are the visiting hours?", "answer": "From 2 pm to 7 pm."}])
    data, out = str(tmp_path / "data"), tmp_path / "replies.jsonl"
    assert cli(["--data-dir", data, "ingest", str(tmp_path / "hours.txt")]) == 0
    assert cli(["--data-dir", data, "evaluate", "--questions", str(questions),
                "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    # the medical disclaimer the default profile adds is not scored: F1 1.0
    assert "Token-F1 against the reference answer\t1.0" in printed
    assert len(read_rows(out)) == 1


@pytest.mark.slow
def test_the_panel_shows_the_comparison_of_a_finished_job(clinic):
    from assistant.ui.evaluation_panel import show, submit

    a, questions, port = clinic
    base = a.serving.chat_model()
    message, job_id = submit(a, str(questions), [], 0, "default")
    assert "Choose at least one model" in message
    with serve(docent_app.build_app(a), port):
        message, job_id = submit(a, str(questions), [base], 0, "default")
        assert "2 questions × 1 models" in message
        a.jobs.wait(job_id, timeout=240)
    _, state, table, chart, replies = show(a, None)  # the newest is shown
    assert "succeeded" in state and "(2/2 answers)" in state
    assert list(table.columns) == ["Metric", base]
    assert table.iloc[0].tolist() == ["Answers citing a judged-relevant document", 100.0]
    assert set(chart["metric"]) >= {"Token-F1", "ROUGE-L"} and replies.endswith("replies.jsonl")
