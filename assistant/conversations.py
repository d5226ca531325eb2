"""Persistent conversations: a SQLite file in the data dir, plus the history budget.

A conversation belongs to a knowledge base and holds its turns (question, answer and
the answer's citations). Nothing is lost: a question is stored as a *pending* turn
(``begin``) before the model is called, then the turn is *done* (``finish``), *failed*
with its reason (``fail``) or *stopped* with what was streamed so far (``stop``). A
process that dies mid-answer leaves pending turns; ``recover_pending`` at start-up marks
them failed.

``history_for_prompt`` picks the most recent answered turns that fit a token budget, so
that the condense prompt never overflows the model's context.

>>> words = lambda text: len(text.split())          # a fake tokenizer: one token a word
>>> turns = [("q one", "a b c d"), ("q two", "e f")]  # cost 2 + 4 = 6, then 2 + 2 = 4
>>> history_for_prompt(turns, 10, words)
[('q one', 'a b c d'), ('q two', 'e f')]
>>> history_for_prompt(turns, 9, words)              # the oldest turn goes first
[('q two', 'e f')]
>>> history_for_prompt([("q", "one two three four five")], 4, words)
[('q', 'one two three…')]
>>> failed = Turn("q three", "half an ans", (), 0, "m", "", "t", status="failed", error="crash")
>>> history_for_prompt([*turns, failed], 10, words)  # only answered turns are history
[('q one', 'a b c d'), ('q two', 'e f')]
"""
from __future__ import annotations

import json
import logging
import re
import sqlite3
import threading
import uuid
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, fields
from datetime import UTC, datetime
from pathlib import Path

from assistant.errors import AssistantError, ConversationNotFound
from assistant.types import Answer, Citation

log = logging.getLogger(__name__)

SCHEMA_VERSION = 3
TITLE_CHARS = 60
# A turn's life: 'pending' (question stored, model not done yet), then 'done' (answered),
# 'failed' (an error ended it; ``error`` says why) or 'stopped' (the user stopped it).
STATUSES = ("pending", "done", "failed", "stopped")

# Columns added by v2 (turns) and v3 (conversations), declared once for a new file and
# for migrating an older one.
_V3_COLUMNS = (("owner", "TEXT NOT NULL DEFAULT ''"),)  # the account's name; '' = LOCAL
_V2_COLUMNS = (
    ("status", "TEXT NOT NULL DEFAULT 'done' "
               f"CHECK (status IN ({', '.join(repr(s) for s in STATUSES)}))"),
    ("error", "TEXT NOT NULL DEFAULT ''"),
)

_SCHEMA = f"""
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS conversations (
    id TEXT PRIMARY KEY, title TEXT NOT NULL, kb TEXT NOT NULL,
    created_at TEXT NOT NULL, updated_at TEXT NOT NULL,
    {", ".join(f"{name} {decl}" for name, decl in _V3_COLUMNS)});
CREATE TABLE IF NOT EXISTS turns (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    conversation_id TEXT NOT NULL REFERENCES conversations(id) ON DELETE CASCADE,
    question TEXT NOT NULL, answer TEXT NOT NULL, citations TEXT NOT NULL,
    sources INTEGER NOT NULL, model TEXT NOT NULL, search_query TEXT NOT NULL,
    created_at TEXT NOT NULL, refused INTEGER NOT NULL DEFAULT 0,
    {", ".join(f"{name} {decl}" for name, decl in _V2_COLUMNS)});
CREATE INDEX IF NOT EXISTS turns_by_conversation ON turns (conversation_id, seq);
"""
_INDEXES = "CREATE INDEX IF NOT EXISTS conversations_by_owner ON conversations (owner);"

_INFO_SQL = """
SELECT c.id, c.title, c.kb, c.created_at, c.updated_at,
       (SELECT COUNT(*) FROM turns t WHERE t.conversation_id = c.id), c.owner
FROM conversations c
"""

_TURN_COLUMNS = ("question, answer, citations, sources, model, search_query, created_at, "
                 "refused, status, error, seq")
_SELECT_TURNS = f"SELECT {_TURN_COLUMNS} FROM turns"


@dataclass(frozen=True)
class ConversationInfo:
    conversation_id: str
    title: str
    kb: str  # a knowledge base name, or several separated by commas
    created_at: str  # ISO 8601, UTC
    updated_at: str
    turns: int
    owner: str = ""  # the account it belongs to; "" when made without accounts


@dataclass(frozen=True)
class Turn:
    question: str
    answer: str  # for a failed or stopped turn, what was streamed before the end
    citations: tuple[Citation, ...]
    sources: int  # how many sources the model was given
    model: str
    search_query: str
    created_at: str
    refused: bool = False
    status: str = "done"  # one of STATUSES
    error: str = ""  # why a failed turn failed
    turn_id: int = 0  # the store's id for this turn; 0 for a turn that is not stored

    def __post_init__(self):
        if self.status not in STATUSES:
            raise ValueError(f"Turn status must be one of {', '.join(STATUSES)}, "
                             f"not {self.status!r}.")


class ConversationStore:
    """Conversations in one SQLite file (WAL); safe to share between threads."""

    def __init__(self, path: Path):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        self._db = sqlite3.connect(self.path, check_same_thread=False, timeout=10.0,
                                   isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA foreign_keys=ON")
        with self._lock:
            self._db.executescript(_SCHEMA)
            self._check_version()
            self._db.executescript(_INDEXES)

    def _check_version(self) -> None:
        row = self._db.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchone()
        found = SCHEMA_VERSION if row is None else int(row[0])
        if found > SCHEMA_VERSION:
            raise AssistantError(
                f"{self.path} was written by a newer Docent (conversation format v{row[0]}, "
                f"this one reads v{SCHEMA_VERSION}): update Docent or move the file away.")
        if row is None or found < SCHEMA_VERSION:
            self._migrate(found)

    def _migrate(self, found: int) -> None:
        """Bring the file up to SCHEMA_VERSION in place, in one transaction, keeping every
        row. v1 -> v2: turns gain ``status`` and ``error``; a v1 turn was always stored
        with its answer, so it becomes 'done'. v2 -> v3: conversations gain ``owner``
        ('': made before accounts, by the machine's own user). Columns are added only where missing, so a
        second process migrating the same file at once finds nothing left to do."""
        with self._db:
            self._db.execute("BEGIN IMMEDIATE")
            for table, columns in (("turns", _V2_COLUMNS), ("conversations", _V3_COLUMNS)):
                have = {row[1] for row in self._db.execute(f"PRAGMA table_info({table})")}
                for name, decl in columns:
                    if name not in have:
                        self._db.execute(f"ALTER TABLE {table} ADD COLUMN {name} {decl}")
            self._db.execute("INSERT OR REPLACE INTO meta VALUES ('schema_version', ?)",
                             (str(SCHEMA_VERSION),))
        if found < SCHEMA_VERSION:
            log.info("Migrated %s from conversation format v%d to v%d.",
                     self.path, found, SCHEMA_VERSION)

    def create(self, kb: str, title: str = "", owner: str = "") -> ConversationInfo:
        cid, now = uuid.uuid4().hex[:12], _now()
        with self._lock:
            self._db.execute("INSERT INTO conversations (id, title, kb, created_at, "
                             "updated_at, owner) VALUES (?, ?, ?, ?, ?, ?)",
                             (cid, title.strip(), kb, now, now, owner))
        return ConversationInfo(cid, title.strip(), kb, now, now, 0, owner)

    def list(self, owner: str | None = None) -> list[ConversationInfo]:
        """The conversations of ``owner`` (None: everyone's), the most recently active
        first."""
        where, args = ("", ()) if owner is None else (" WHERE c.owner = ?", (owner,))
        with self._lock:
            rows = self._db.execute(
                _INFO_SQL + where + " ORDER BY c.updated_at DESC, c.rowid DESC", args)
            return [ConversationInfo(*row) for row in rows.fetchall()]

    def adopt(self, owner: str) -> int:
        """Give every conversation made without accounts (owner '') to ``owner``; returns
        how many. Done when the first account is made: its person is who used Docent
        alone until then."""
        with self._lock:
            return self._db.execute("UPDATE conversations SET owner = ? WHERE owner = ''",
                                    (owner,)).rowcount

    def get(self, cid: str) -> ConversationInfo:
        with self._lock:
            row = self._db.execute(_INFO_SQL + " WHERE c.id = ?", (cid,)).fetchone()
        if row is None:
            raise ConversationNotFound(f"No conversation with id {cid!r}.")
        return ConversationInfo(*row)

    def turns(self, cid: str) -> list[Turn]:
        """Every turn of ``cid`` in order, whatever its status."""
        self.get(cid)
        with self._lock:
            rows = self._db.execute(f"{_SELECT_TURNS} WHERE conversation_id = ? ORDER BY seq",
                                    (cid,)).fetchall()
        return [_turn(row) for row in rows]

    # --- a turn's life: begin, then finish, fail or stop ------------------------------
    def begin(self, cid: str, question: str, model: str) -> int:
        """Store ``question`` as a pending turn of ``cid`` and return its ``turn_id``; call
        it before the model is called, so that the question survives whatever follows.
        An untitled conversation takes the question as its title."""
        now = _now()
        with self._lock, self._db:
            self._db.execute("BEGIN")
            row = self._db.execute("SELECT title FROM conversations WHERE id = ?",
                                   (cid,)).fetchone()
            if row is None:
                raise ConversationNotFound(f"No conversation with id {cid!r}.")
            cursor = self._db.execute(
                "INSERT INTO turns (conversation_id, question, answer, citations, sources, "
                "model, search_query, created_at, status) "
                "VALUES (?, ?, '', '[]', 0, ?, '', ?, 'pending')", (cid, question, model, now))
            self._db.execute("UPDATE conversations SET updated_at = ?, title = ? WHERE id = ?",
                             (now, row[0] or short_title(question), cid))
            return cursor.lastrowid

    def finish(self, turn_id: int, answer: Answer) -> Turn:
        """Fill pending turn ``turn_id`` with ``answer`` (text, citations, how many sources,
        model, search query, refused) and mark it 'done'; return the stored turn. A turn
        that is no longer pending is left as it is and returned. A turn that is gone (its
        conversation deleted meanwhile) is not stored again: the answer comes back as an
        unstored turn (``turn_id`` 0)."""
        cites = json.dumps([asdict(c) for c in answer.citations], ensure_ascii=False)
        with self._lock, self._db:
            self._db.execute("BEGIN")
            self._db.execute(
                "UPDATE turns SET answer = ?, citations = ?, sources = ?, model = ?, "
                "search_query = ?, refused = ?, status = 'done' "
                "WHERE seq = ? AND status = 'pending'",
                (answer.text, cites, len(answer.sources), answer.model, answer.search_query,
                 int(bool(getattr(answer, "refused", False))), turn_id))
            row = self._db.execute(f"{_SELECT_TURNS} WHERE seq = ?", (turn_id,)).fetchone()
        if row is None:
            log.info("Turn %s is gone (its conversation was deleted?): answer not stored.",
                     turn_id)
            return Turn(answer.question, answer.text, tuple(answer.citations),
                        len(answer.sources), answer.model, answer.search_query, _now(),
                        bool(getattr(answer, "refused", False)))
        return _turn(row)

    def fail(self, turn_id: int, reason: str, partial: str = "") -> None:
        """Mark pending turn ``turn_id`` failed because of ``reason``, keeping ``partial``
        (what was streamed before the failure) as its answer. No-op unless pending."""
        self._end(turn_id, "failed", partial, reason)

    def stop(self, turn_id: int, partial: str) -> None:
        """Mark pending turn ``turn_id`` stopped by the user, keeping ``partial`` (what was
        streamed until then) as its answer. No-op unless pending."""
        self._end(turn_id, "stopped", partial, "")

    def _end(self, turn_id: int, status: str, partial: str, error: str) -> None:
        with self._lock:
            self._db.execute("UPDATE turns SET status = ?, answer = ?, error = ? "
                             "WHERE seq = ? AND status = 'pending'",
                             (status, partial, error, turn_id))

    def recover_pending(self, reason: str) -> int:
        """Mark every pending turn failed with ``reason`` and return how many there were.
        Call it at start-up, before any answer begins: a pending turn then can only have
        been left by a process that died while answering."""
        with self._lock:
            cursor = self._db.execute("UPDATE turns SET status = 'failed', error = ? "
                                      "WHERE status = 'pending'", (reason,))
        if cursor.rowcount:
            log.warning("Marked %d unfinished answer(s) as failed: %s", cursor.rowcount, reason)
        return cursor.rowcount

    def last_failed(self, cid: str) -> Turn | None:
        """The newest turn of ``cid`` if it failed or was stopped (what a Retry asks
        again), else None."""
        self.get(cid)
        with self._lock:
            row = self._db.execute(f"{_SELECT_TURNS} WHERE conversation_id = ? "
                                   "ORDER BY seq DESC LIMIT 1", (cid,)).fetchone()
        turn = None if row is None else _turn(row)
        return turn if turn is not None and turn.status in ("failed", "stopped") else None

    def remove_turn(self, turn_id: int) -> None:
        """Delete turn ``turn_id`` (a Retry removes the failed turn, then asks again).
        No-op for an unknown id."""
        with self._lock:
            self._db.execute("DELETE FROM turns WHERE seq = ?", (turn_id,))

    def append(self, cid: str, answer: Answer) -> Turn:
        """Store ``answer`` as the next, done turn; an untitled conversation takes its
        question. The same as ``begin`` then ``finish``."""
        return self.finish(self.begin(cid, answer.question, answer.model), answer)

    def rename(self, cid: str, title: str) -> ConversationInfo:
        if not title or not title.strip():
            raise ValueError("A conversation title cannot be empty.")
        self.get(cid)
        with self._lock:
            self._db.execute("UPDATE conversations SET title = ? WHERE id = ?", (title.strip(), cid))
        return self.get(cid)

    def delete(self, cid: str) -> None:
        self.get(cid)
        with self._lock, self._db:
            self._db.execute("BEGIN")
            self._db.execute("DELETE FROM turns WHERE conversation_id = ?", (cid,))
            self._db.execute("DELETE FROM conversations WHERE id = ?", (cid,))

    def export_markdown(self, cid: str) -> str:
        """The conversation as Markdown: title, knowledge base, each question and answer
        with the answer's citations ("[n] file, p. X: “quote”"). A failed turn shows
        "(no answer: reason)" after whatever was streamed, a stopped one its streamed text
        then "(stopped)"."""
        info, turns = self.get(cid), self.turns(cid)
        started = info.created_at[:16].replace("T", " ")
        lines = [f"# {info.title or 'Untitled conversation'}", "",
                 f"Knowledge base: {info.kb} · started {started} UTC · {info.turns} questions"]
        for i, turn in enumerate(turns, start=1):
            lines += ["", f"## {i}. {turn.question}", "", *_answer_lines(turn)]
            if turn.citations:
                lines += ["", "Sources:", ""]
                lines += [f"- [{c.number}] {c.label}: “{c.quote}”" for c in turn.citations]
        return "\n".join(lines) + "\n"

    def close(self) -> None:
        with self._lock:
            self._db.close()


def short_title(question: str, limit: int = TITLE_CHARS) -> str:
    """``question`` on one line, cut at a word to about ``limit`` characters.

    >>> short_title("What is the usual dose of amoxicillin for adults with a chest infection?")
    'What is the usual dose of amoxicillin for adults with a…'
    """
    text = " ".join(question.split())
    if len(text) <= limit:
        return text
    cut = text[:limit]
    if " " in cut[limit // 2:]:
        cut = cut[:cut.rfind(" ")]
    return cut.rstrip(" ,;:") + "…"


def history_for_prompt(turns: Sequence[Turn | tuple[str, str]], budget_tokens: int,
                       count_tokens: Callable[[str], int]) -> list[tuple[str, str]]:
    """The most recent (question, answer) pairs whose tokens fit ``budget_tokens``, oldest
    first. Turns are kept newest first and the first that does not fit ends the history;
    a newest answer that alone exceeds the budget is cut (its start kept, "…" added).
    Only 'done' turns count: a pending, failed or stopped one has no answer worth
    feeding back to the model."""
    kept: list[tuple[str, str]] = []
    left = budget_tokens
    answered = [t for t in turns if not isinstance(t, Turn) or t.status == "done"]
    for turn in reversed(answered):
        question, answer = (turn.question, turn.answer) if isinstance(turn, Turn) else turn
        cost = count_tokens(question) + count_tokens(answer)
        if cost > left and not kept:
            answer = _cut(answer, left - count_tokens(question), count_tokens)
            if answer is None:
                break
            cost = count_tokens(question) + count_tokens(answer)
        if cost > left:
            break
        kept.append((question, answer))
        left -= cost
    return kept[::-1]


def _cut(text: str, budget: int, count_tokens: Callable[[str], int]) -> str | None:
    """The longest start of ``text`` (ending at a word where possible) plus "…" that fits
    ``budget`` tokens; None when not even "…" does."""
    def fits(n: int) -> bool:
        return count_tokens(text[:n].rstrip() + "…") <= budget

    if budget <= 0 or not fits(0):
        return None
    lo, hi = 0, len(text)  # fits(lo) holds; find the largest such n by bisection
    while lo < hi:
        mid = (lo + hi + 1) // 2
        lo, hi = (mid, hi) if fits(mid) else (lo, mid - 1)
    cut = text[:lo]
    at_word = re.match(r"(?s)(.*\S)\s+\S*$", cut)
    if at_word and len(at_word.group(1)) >= lo // 2 and lo < len(text) and not text[lo].isspace():
        cut = at_word.group(1)
    return cut.rstrip() + "…"


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="microseconds")


def _answer_lines(turn: Turn) -> list[str]:
    """The Markdown lines that stand for ``turn``'s answer in an export."""
    if turn.status == "failed":
        note = f"(no answer: {turn.error})" if turn.error else "(no answer)"
        return [turn.answer, "", note] if turn.answer else [note]
    if turn.status == "stopped":
        return [turn.answer, "", "(stopped)"] if turn.answer else ["(stopped)"]
    return [turn.answer or "(no answer)"]


def _turn(row: tuple) -> Turn:
    """A ``Turn`` from a row of ``_SELECT_TURNS``."""
    (question, answer, cites, sources, model, search_query, created_at, refused, status,
     error, seq) = row
    known = {f.name for f in fields(Citation)}
    citations = tuple(Citation(**{k: v for k, v in c.items() if k in known})
                      for c in json.loads(cites))
    return Turn(question, answer, citations, sources, model, search_query, created_at,
                bool(refused), status, error, seq)
