"""Stored conversations: the SQLite store, the history budget, ``Conversations.send`` and the
``chats`` CLI, with the scripted LLM and the hash embedder."""
import sqlite3
import threading

import pytest

import assistant.core
from assistant.__main__ import main
from assistant.conversations import SCHEMA_VERSION, ConversationStore, Turn, history_for_prompt
from assistant.core import Assistant
from assistant.errors import AssistantError, ConversationNotFound
from assistant.types import Answer, AnswerDelta, Citation, Source
from ingest.pipeline import drain
from tests.conftest import make_settings
from tests.fakes import HashEmbedder, ScriptedLLM

CITE = Citation(1, "handbook.pdf", 2, "For adults, the usual dose of amoxicillin is 500 mg "
                "every 8 hours.", "c1", "default")
SOURCE = Source(1, "c1", "default", "handbook.pdf", 2, "For adults ...", 0.9)


def _answer(question: str, text: str = "500 mg every 8 hours [1].", cites=(CITE,)) -> Answer:
    return Answer(question, text, tuple(cites), (SOURCE, SOURCE), "scripted", {"generate_s": 1.0},
                  tokens=9, search_query=question + " (searched)")


@pytest.fixture
def store(tmp_path):
    s = ConversationStore(tmp_path / "conv.sqlite3")
    yield s
    s.close()


# --- the store ------------------------------------------------------------------------------
def test_turns_survive_a_new_store_on_the_same_file(tmp_path):
    path = tmp_path / "data" / "conv.sqlite3"
    first = ConversationStore(path)
    info = first.create("default")
    first.append(info.conversation_id, _answer("What is the amoxicillin dose for adults?"))
    first.append(info.conversation_id, _answer("And for children?", "Lower, by weight.", ()))
    first.close()

    again = ConversationStore(path)
    (listed,) = again.list()
    assert listed.conversation_id == info.conversation_id and listed.turns == 2
    assert listed.title == "What is the amoxicillin dose for adults?"
    t1, t2 = again.turns(info.conversation_id)
    assert t1 == Turn("What is the amoxicillin dose for adults?", "500 mg every 8 hours [1].",
                      (CITE,), 2, "scripted", "What is the amoxicillin dose for adults? (searched)",
                      t1.created_at, turn_id=t1.turn_id)
    assert isinstance(t1.citations[0], Citation) and t2.citations == () and not t2.refused
    assert t1.created_at < t2.created_at and 0 < t1.turn_id < t2.turn_id
    assert (t1.status, t1.error, t2.status) == ("done", "", "done")
    version = sqlite3.connect(path).execute("SELECT value FROM meta").fetchone()
    assert version == (str(SCHEMA_VERSION),)
    again.close()


def test_a_newer_file_format_is_refused_with_a_clear_message(tmp_path):
    path = tmp_path / "conv.sqlite3"
    ConversationStore(path).close()
    with sqlite3.connect(path) as db:
        db.execute("UPDATE meta SET value = '99' WHERE key = 'schema_version'")
    with pytest.raises(AssistantError, match="newer Docent"):
        ConversationStore(path)


def test_list_is_most_recent_first_and_rename_delete(store):
    a = store.create("default", "first chat")
    b = store.create("other")
    assert [c.conversation_id for c in store.list()] == [b.conversation_id, a.conversation_id]
    store.append(a.conversation_id, _answer("Opening hours?"))
    assert [c.conversation_id for c in store.list()] == [a.conversation_id, b.conversation_id]
    assert store.get(a.conversation_id).title == "first chat"  # a given title is kept

    renamed = store.rename(b.conversation_id, "  <b>Kids & doses</b> ")
    assert renamed.title == "<b>Kids & doses</b>" == store.get(b.conversation_id).title
    with pytest.raises(ValueError, match="cannot be empty"):
        store.rename(b.conversation_id, "   ")

    store.delete(a.conversation_id)
    assert [c.conversation_id for c in store.list()] == [b.conversation_id]
    with pytest.raises(ConversationNotFound, match=a.conversation_id):
        store.turns(a.conversation_id)


def test_unknown_id_is_a_domain_error_everywhere(store):
    for call in (store.get, store.turns, store.delete, store.export_markdown,
                 lambda cid: store.rename(cid, "x"), lambda cid: store.append(cid, _answer("q")),
                 lambda cid: store.begin(cid, "q", "m"), store.last_failed):
        with pytest.raises(ConversationNotFound, match="No conversation with id 'nope'"):
            call("nope")
    assert store.list() == []


def test_long_first_question_becomes_a_short_title(store):
    cid = store.create("default").conversation_id
    store.append(cid, _answer("What   is the usual dose of amoxicillin for adults\nwith a "
                              "chest infection and a penicillin allergy?"))
    title = store.get(cid).title
    assert title == "What is the usual dose of amoxicillin for adults with a…"
    assert len(title) <= 61


def test_export_markdown_has_questions_answers_and_citations(store):
    cid = store.create("default", "Dosing").conversation_id
    store.append(cid, _answer("What is the amoxicillin dose for adults?"))
    store.append(cid, _answer("Who is on call on Tuesday?", "Nobody is listed.", ()))
    md = store.export_markdown(cid)
    assert md.startswith("# Dosing\n") and "Knowledge base: default" in md
    assert "## 1. What is the amoxicillin dose for adults?" in md
    assert "500 mg every 8 hours [1]." in md
    assert ("- [1] handbook.pdf, p. 2: “For adults, the usual dose of amoxicillin is 500 mg "
            "every 8 hours.”") in md
    assert "## 2. Who is on call on Tuesday?\n\nNobody is listed.\n" in md
    assert md.count("Sources:") == 1


# --- a turn's life: pending, then done, failed or stopped -----------------------------------
def test_begin_stores_the_question_before_the_answer_and_finish_fills_it(tmp_path):
    path = tmp_path / "conv.sqlite3"
    store = ConversationStore(path)
    cid = store.create("default").conversation_id
    turn_id = store.begin(cid, "What is the amoxicillin dose for adults?", "qwen")

    # another store on the same file (a restarted app) already sees the question
    other = ConversationStore(path)
    (pending,) = other.turns(cid)
    assert (pending.question, pending.answer, pending.status, pending.turn_id) == (
        "What is the amoxicillin dose for adults?", "", "pending", turn_id)
    assert (pending.citations, pending.sources, pending.model) == ((), 0, "qwen")
    info = other.get(cid)
    assert info.title == "What is the amoxicillin dose for adults?" and info.turns == 1
    other.close()

    done = store.finish(turn_id, _answer("What is the amoxicillin dose for adults?"))
    assert store.turns(cid) == [done]
    assert done == Turn("What is the amoxicillin dose for adults?", "500 mg every 8 hours [1].",
                        (CITE,), 2, "scripted",
                        "What is the amoxicillin dose for adults? (searched)",
                        pending.created_at, False, "done", "", turn_id)
    store.close()


def test_finish_fail_and_stop_change_only_a_pending_turn(store):
    cid = store.create("default").conversation_id
    turn_id = store.begin(cid, "Opening hours?", "m")
    done = store.finish(turn_id, _answer("Opening hours?"))
    store.fail(turn_id, "late error", "late partial")
    store.stop(turn_id, "late partial")
    assert store.finish(turn_id, _answer("Opening hours?", "A different answer.", ())) == done
    assert store.turns(cid) == [done]

    failed_id = store.begin(cid, "Who is on call?", "m")
    store.fail(failed_id, "the model crashed")
    store.stop(failed_id, "too late")
    assert store.finish(failed_id, _answer("Who is on call?")).status == "failed"
    assert store.turns(cid)[1].answer == ""


def test_a_failed_turn_keeps_its_reason_and_partial_answer(store):
    cid = store.create("default").conversation_id
    turn_id = store.begin(cid, "What is the dose?", "m")
    store.fail(turn_id, "The model process crashed.", "The usual dose is")
    (turn,) = store.turns(cid)
    assert (turn.status, turn.error, turn.answer) == (
        "failed", "The model process crashed.", "The usual dose is")
    assert store.get(cid).turns == 1  # the listing counts failed turns too


def test_a_stopped_turn_keeps_what_was_streamed(store):
    cid = store.create("default").conversation_id
    turn_id = store.begin(cid, "Summarise the handbook.", "m")
    store.stop(turn_id, "The handbook covers dosing and")
    (turn,) = store.turns(cid)
    assert (turn.status, turn.error, turn.answer) == (
        "stopped", "", "The handbook covers dosing and")


def test_recover_pending_fails_what_a_dead_process_left(tmp_path):
    path = tmp_path / "conv.sqlite3"
    crashed = ConversationStore(path)
    a, b = (crashed.create("default").conversation_id for _ in range(2))
    crashed.append(a, _answer("Answered before the crash?"))
    crashed.begin(a, "Asked when the process died?", "m")
    crashed.begin(b, "Asked in another chat?", "m")
    crashed.close()  # the process dies: nobody finishes the two pending turns

    store = ConversationStore(path)
    assert store.recover_pending("Docent stopped before the answer was finished.") == 2
    assert [t.status for t in store.turns(a)] == ["done", "failed"]
    (turn,) = store.turns(b)
    assert (turn.status, turn.error) == ("failed",
                                         "Docent stopped before the answer was finished.")
    assert store.recover_pending("again") == 0
    store.close()


def test_retry_finds_the_failed_turn_removes_it_and_asks_again(store):
    cid = store.create("default").conversation_id
    assert store.last_failed(cid) is None
    store.append(cid, _answer("Opening hours?"))
    assert store.last_failed(cid) is None
    turn_id = store.begin(cid, "Who is on call?", "m")
    assert store.last_failed(cid) is None  # pending is not failed
    store.fail(turn_id, "timeout")
    failed = store.last_failed(cid)
    assert (failed.turn_id, failed.question, failed.error) == (turn_id, "Who is on call?",
                                                               "timeout")

    store.remove_turn(failed.turn_id)
    store.remove_turn(failed.turn_id)  # already gone: nothing happens
    again = store.append(cid, _answer(failed.question, "Dr Lee [1]."))
    assert [t.question for t in store.turns(cid)] == ["Opening hours?", "Who is on call?"]
    assert store.turns(cid)[-1] == again and again.turn_id > turn_id
    assert store.last_failed(cid) is None


def test_only_the_newest_turn_is_retried(store):
    cid = store.create("default").conversation_id
    store.fail(store.begin(cid, "First?", "m"), "timeout")
    store.append(cid, _answer("Second?"))
    assert store.last_failed(cid) is None  # a later answer came: retrying would reorder


def test_finish_after_the_conversation_was_deleted_stores_nothing(store):
    cid = store.create("default").conversation_id
    turn_id = store.begin(cid, "Opening hours?", "m")
    store.delete(cid)
    turn = store.finish(turn_id, _answer("Opening hours?"))
    assert (turn.answer, turn.turn_id) == ("500 mg every 8 hours [1].", 0)
    store.fail(turn_id, "gone")
    store.stop(turn_id, "gone")
    assert store.list() == []


def test_history_skips_turns_without_a_full_answer(store):
    cid = store.create("default").conversation_id
    store.append(cid, _answer("q1?", "first answer"))
    store.fail(store.begin(cid, "q2?", "m"), "crash", "half an")
    store.stop(store.begin(cid, "q3?", "m"), "stopped here")
    store.append(cid, _answer("q4?", "fourth answer"))
    store.begin(cid, "q5?", "m")
    assert history_for_prompt(store.turns(cid), 100, words) == [
        ("q1?", "first answer"), ("q4?", "fourth answer")]


def test_export_shows_failed_and_stopped_turns(store):
    cid = store.create("default", "Dosing").conversation_id
    store.fail(store.begin(cid, "What is the dose?", "m"), "The model process crashed.")
    store.fail(store.begin(cid, "And for children?", "m"), "Out of memory.", "It depends on")
    store.stop(store.begin(cid, "Summarise the handbook.", "m"), "The handbook covers")
    store.append(cid, _answer("Opening hours?", "Nine to five.", ()))
    md = store.export_markdown(cid)
    assert "## 1. What is the dose?\n\n(no answer: The model process crashed.)\n" in md
    assert "## 2. And for children?\n\nIt depends on\n\n(no answer: Out of memory.)\n" in md
    assert "## 3. Summarise the handbook.\n\nThe handbook covers\n\n(stopped)\n" in md
    assert "## 4. Opening hours?\n\nNine to five.\n" in md and "· 4 questions" in md


def test_answers_from_many_threads_are_all_stored(store):
    cid = store.create("default").conversation_id

    def ask(n: int) -> None:
        for i in range(10):
            store.finish(store.begin(cid, f"q{n}.{i}?", "m"), _answer(f"q{n}.{i}?"))

    threads = [threading.Thread(target=ask, args=(n,)) for n in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    turns = store.turns(cid)
    assert len(turns) == 80 and {t.status for t in turns} == {"done"}
    assert len({t.turn_id for t in turns}) == 80


# the schema Docent wrote before turns had a status (format v1)
V1_SCHEMA = """
CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE conversations (
    id TEXT PRIMARY KEY, title TEXT NOT NULL, kb TEXT NOT NULL,
    created_at TEXT NOT NULL, updated_at TEXT NOT NULL);
CREATE TABLE turns (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    conversation_id TEXT NOT NULL REFERENCES conversations(id) ON DELETE CASCADE,
    question TEXT NOT NULL, answer TEXT NOT NULL, citations TEXT NOT NULL,
    sources INTEGER NOT NULL, model TEXT NOT NULL, search_query TEXT NOT NULL,
    created_at TEXT NOT NULL, refused INTEGER NOT NULL DEFAULT 0);
CREATE INDEX turns_by_conversation ON turns (conversation_id, seq);
INSERT INTO meta VALUES ('schema_version', '1');
INSERT INTO conversations VALUES ('abc123', 'Dosing', 'default',
    '2024-05-01T10:00:00.000000+00:00', '2024-05-01T10:01:00.000000+00:00');
INSERT INTO turns (conversation_id, question, answer, citations, sources, model, search_query,
                   created_at, refused)
VALUES ('abc123', 'What is the dose?', '500 mg [1].',
    '[{"number": 1, "source": "handbook.pdf", "page": 2, "quote": "500 mg",
       "chunk_id": "c1", "kb": "default"}]',
    3, 'qwen', 'amoxicillin dose', '2024-05-01T10:01:00.000000+00:00', 0);
"""


def test_a_v1_file_is_migrated_in_place_and_loses_nothing(tmp_path):
    path = tmp_path / "conv.sqlite3"
    with sqlite3.connect(path) as db:
        db.executescript(V1_SCHEMA)
    db.close()

    store = ConversationStore(path)
    (info,) = store.list()
    assert (info.conversation_id, info.title, info.turns) == ("abc123", "Dosing", 1)
    (turn,) = store.turns("abc123")
    assert turn == Turn("What is the dose?", "500 mg [1].",
                        (Citation(1, "handbook.pdf", 2, "500 mg", "c1", "default"),), 3, "qwen",
                        "amoxicillin dose", "2024-05-01T10:01:00.000000+00:00", False, "done",
                        "", turn.turn_id)
    failed_id = store.begin("abc123", "And for children?", "qwen")  # the new columns work
    store.fail(failed_id, "crash")
    assert store.last_failed("abc123").turn_id == failed_id
    store.close()

    version = sqlite3.connect(path).execute("SELECT value FROM meta").fetchone()
    assert version == (str(SCHEMA_VERSION),)
    assert store_owner(path) == [("abc123", "")]  # made before accounts: the machine's own
    again = ConversationStore(path)  # opening a migrated file again changes nothing
    assert [t.status for t in again.turns("abc123")] == ["done", "failed"]
    again.close()


def store_owner(path):
    with sqlite3.connect(path) as db:
        return db.execute("SELECT id, owner FROM conversations").fetchall()


def test_conversations_belong_to_their_owner_and_the_first_account_adopts_the_rest(tmp_path):
    store = ConversationStore(tmp_path / "conv.sqlite3")
    mine = store.create("default", "before accounts")
    alice = store.create("default", "alice's", owner="alice")
    assert [c.conversation_id for c in store.list("alice")] == [alice.conversation_id]
    assert [c.conversation_id for c in store.list("")] == [mine.conversation_id]
    assert len(store.list()) == 2  # None: everyone's (the CLI on the machine)
    assert store.adopt("bob") == 1
    assert [c.title for c in store.list("bob")] == ["before accounts"]
    assert store.list("") == []
    store.close()


# --- the history budget ---------------------------------------------------------------------
def words(text: str) -> int:
    return len(text.split())


TURNS = [("q1 a", "one two three"),        # 2 + 3 = 5 tokens
         ("q2", "four five"),              # 1 + 2 = 3
         ("q3 b c", "six seven eight [1]")]  # 3 + 4 = 7


@pytest.mark.parametrize("budget, expected", [
    (15, TURNS), (20, TURNS),
    (14, TURNS[1:]), (10, TURNS[1:]),      # the oldest goes first
    (9, TURNS[2:]), (7, TURNS[2:]),
    (6, [("q3 b c", "six seven eight…")]),  # the newest alone is too long: cut, "…" added
    (5, [("q3 b c", "six seven…")]), (4, [("q3 b c", "six…")]),
    (3, []), (0, []),                      # no room for even "…" after the question
])
def test_history_keeps_the_newest_turns_that_fit(budget, expected):
    kept = history_for_prompt(TURNS, budget, words)
    assert kept == expected
    assert sum(words(q) + words(a) for q, a in kept) <= budget


def test_history_accepts_stored_turns_and_never_exceeds_the_budget():
    llm = ScriptedLLM("")
    turns = [Turn(f"question {i}?", "word " * (40 * i) + "[1].", (), 1, "m", "", "t")
             for i in range(1, 8)]
    for budget in range(0, 400, 7):
        kept = history_for_prompt(turns, budget, llm.count_tokens)
        assert sum(llm.count_tokens(q) + llm.count_tokens(a) for q, a in kept) <= budget
        assert [q for q, _ in kept] == [t.question for t in turns[len(turns) - len(kept):]]
    assert history_for_prompt([], 100, llm.count_tokens) == []


# --- the facade -----------------------------------------------------------------------------
def _assistant(tmp_path, reply="The pharmacy closes at 9 pm on Saturdays [1]."):
    llm = ScriptedLLM(reply)
    return Assistant(make_settings(tmp_path), llm=llm, embedder=HashEmbedder()), llm


def _ingest(a: Assistant, tmp_path) -> None:
    doc = tmp_path / "docs" / "pharmacy.txt"
    doc.parent.mkdir(parents=True, exist_ok=True)
    doc.write_text("The clinic pharmacy closes at 9 pm on Saturdays and is closed on Sundays.\n\n"
                   "Expired medicines are returned to the supplier every month.", encoding="utf-8")
    drain(a.documents.ingest([doc]))


def test_chat_history_persists_across_an_assistant_restart(tmp_path):
    a, llm = _assistant(tmp_path)
    _ingest(a, tmp_path)
    cid = a.conversations.create().conversation_id
    events = list(a.conversations.send(cid, "When does the pharmacy close on Saturdays?"))
    assert isinstance(events[-1], Answer) and any(isinstance(e, AnswerDelta) for e in events)
    assert len(llm.calls) == 1  # no history yet: nothing to condense
    a.close()

    b, llm2 = _assistant(tmp_path, reply="Closed on Sundays [1].")
    (info,) = b.conversations.list()
    assert (info.conversation_id, info.kb, info.turns) == (cid, "default", 1)
    assert info.title == "When does the pharmacy close on Saturdays?"
    final = list(b.conversations.send(cid, "And on Sundays?"))[-1]
    condense_prompt = llm2.calls[0][-1]["content"]
    assert "User: When does the pharmacy close on Saturdays?" in condense_prompt
    assert "Last question: And on Sundays?" in condense_prompt
    assert final.search_query == "Closed on Sundays [1]."  # the scripted condense reply
    turns = b.conversations.turns(cid)
    assert [t.question for t in turns] == ["When does the pharmacy close on Saturdays?",
                                           "And on Sundays?"]
    assert turns[0].citations[0].source == "pharmacy.txt"
    assert "pharmacy.txt" in b.conversations.export(cid)
    b.close()


def test_chat_stores_nothing_when_ask_fails_and_checks_the_id_now(tmp_path):
    a, _ = _assistant(tmp_path)
    cid = a.conversations.create(title="empty").conversation_id
    with pytest.raises(ValueError):
        list(a.conversations.send(cid, "   "))
    assert a.conversations.turns(cid) == [] and a.conversations.list()[0].title == "empty"
    with pytest.raises(ConversationNotFound):
        a.conversations.send("nope", "question?")  # before any iteration
    a.conversations.rename(cid, "renamed")
    assert a.conversations.list()[0].title == "renamed"
    a.conversations.delete(cid)
    assert a.conversations.list() == []
    a.close()


def test_new_conversation_refuses_an_unknown_knowledge_base(tmp_path):
    a, _ = _assistant(tmp_path)
    with pytest.raises(Exception, match="No knowledge base named 'nope'"):
        a.conversations.create("nope")
    assert a.conversations.list() == []
    a.close()


def test_history_given_to_condense_is_trimmed_to_a_quarter_of_the_context(tmp_path):
    llm = ScriptedLLM("Closed [1].")
    a = Assistant(make_settings(tmp_path, llm={"n_ctx": 512, "max_tokens": 100}), llm=llm, embedder=HashEmbedder())
    cid = a.conversations.create().conversation_id
    for i in range(3):
        a.conversations.store.append(cid, _answer(f"old question {i}?", "long answer " * 60))
    list(a.conversations.send(cid, "And then?"))
    prompt = llm.calls[0][-1]["content"]
    # 128 tokens of history hold the newest turn only (cut), not the older ones
    assert "old question 2?" in prompt and "old question 1?" not in prompt
    a.close()


# --- the CLI --------------------------------------------------------------------------------
@pytest.fixture
def cli(tmp_path, monkeypatch):
    """``main([...])`` on tmp_path's data dir, its Assistant built with the fakes."""
    monkeypatch.setenv("DOCENT_DATA_DIR", str(tmp_path / "data"))
    real = assistant.core.Assistant
    monkeypatch.setattr(assistant.core, "Assistant", lambda settings: real(
        settings, llm=ScriptedLLM("It closes at 9 pm [1]."), embedder=HashEmbedder()))
    a, _ = _assistant(tmp_path)
    _ingest(a, tmp_path)
    a.close()
    return lambda *args: main(["--data-dir", str(tmp_path / "data"), *args])


def test_cli_chats_list_show_export_rename_delete(cli, capsys, tmp_path):
    assert cli("ask", "--chat", "new", "When does the pharmacy close on Saturdays?") == 0
    out = capsys.readouterr().out
    assert "It closes at 9 pm [1]." in out and "pharmacy.txt" in out
    cid = out.rsplit("--chat ", 1)[1].strip()
    assert cli("ask", "--chat", cid, "And on Sundays?") == 0
    capsys.readouterr()

    assert cli("chats", "list") == 0
    line = capsys.readouterr().out.strip()
    assert line.startswith(cid) and "2 turns" in line and "[default]" in line
    assert "When does the pharmacy close on Saturdays?" in line

    out_file = tmp_path / "chat.md"
    assert cli("chats", "export", cid, "--out", str(out_file)) == 0
    md = out_file.read_text(encoding="utf-8")
    assert "## 2. And on Sundays?" in md and "- [1] pharmacy.txt: “" in md
    assert cli("chats", "show", cid) == 0
    assert capsys.readouterr().out.endswith(md)

    assert cli("chats", "rename", cid, "Pharmacy hours") == 0
    assert cli("chats", "list") == 0
    out = capsys.readouterr().out
    assert out.startswith(f"renamed {cid} to Pharmacy hours\n") and "Pharmacy hours" in out.split("\n")[1]
    assert cli("chats", "delete", cid) == 0
    assert cli("chats", "list") == 0
    assert capsys.readouterr().out == f"deleted {cid}\n"


def test_cli_unknown_conversation_exits_2_with_a_clear_message(cli, capsys):
    assert cli("chats", "export", "nope") == 2
    assert "error: No conversation with id 'nope'." in capsys.readouterr().err
    assert cli("ask", "--chat", "nope", "question?") == 2
    assert "No conversation with id 'nope'" in capsys.readouterr().err
