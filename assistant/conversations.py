"""Persistent conversations: a SQLite file in the data dir, plus the history budget.

A conversation belongs to a knowledge base and holds its turns (question, answer and
the answer's citations). ``history_for_prompt`` picks the most recent turns that fit a
token budget, so that the condense prompt never overflows the model's context.

>>> words = lambda text: len(text.split())          # a fake tokenizer: one token a word
>>> turns = [("q one", "a b c d"), ("q two", "e f")]  # cost 2 + 4 = 6, then 2 + 2 = 4
>>> history_for_prompt(turns, 10, words)
[('q one', 'a b c d'), ('q two', 'e f')]
>>> history_for_prompt(turns, 9, words)              # the oldest turn goes first
[('q two', 'e f')]
>>> history_for_prompt([("q", "one two three four five")], 4, words)
[('q', 'one two three…')]
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

SCHEMA_VERSION = 1
TITLE_CHARS = 60

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS conversations (
    id TEXT PRIMARY KEY, title TEXT NOT NULL, kb TEXT NOT NULL,
    created_at TEXT NOT NULL, updated_at TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS turns (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    conversation_id TEXT NOT NULL REFERENCES conversations(id) ON DELETE CASCADE,
    question TEXT NOT NULL, answer TEXT NOT NULL, citations TEXT NOT NULL,
    sources INTEGER NOT NULL, model TEXT NOT NULL, search_query TEXT NOT NULL,
    created_at TEXT NOT NULL, refused INTEGER NOT NULL DEFAULT 0);
CREATE INDEX IF NOT EXISTS turns_by_conversation ON turns (conversation_id, seq);
"""

_INFO_SQL = """
SELECT c.id, c.title, c.kb, c.created_at, c.updated_at,
       (SELECT COUNT(*) FROM turns t WHERE t.conversation_id = c.id)
FROM conversations c
"""

_TURN_COLUMNS = "question, answer, citations, sources, model, search_query, created_at, refused"


@dataclass(frozen=True)
class ConversationInfo:
    conversation_id: str
    title: str
    kb: str  # a knowledge base name, or several separated by commas
    created_at: str  # ISO 8601, UTC
    updated_at: str
    turns: int


@dataclass(frozen=True)
class Turn:
    question: str
    answer: str
    citations: tuple[Citation, ...]
    sources: int  # how many sources the model was given
    model: str
    search_query: str
    created_at: str
    refused: bool = False


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

    def _check_version(self) -> None:
        row = self._db.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchone()
        if row is None:
            self._db.execute("INSERT INTO meta VALUES ('schema_version', ?)", (str(SCHEMA_VERSION),))
        elif int(row[0]) > SCHEMA_VERSION:
            raise AssistantError(
                f"{self.path} was written by a newer Docent (conversation format v{row[0]}, "
                f"this one reads v{SCHEMA_VERSION}): update Docent or move the file away.")

    def create(self, kb: str, title: str = "") -> ConversationInfo:
        cid, now = uuid.uuid4().hex[:12], _now()
        with self._lock:
            self._db.execute("INSERT INTO conversations VALUES (?, ?, ?, ?, ?)",
                             (cid, title.strip(), kb, now, now))
        return ConversationInfo(cid, title.strip(), kb, now, now, 0)

    def list(self) -> list[ConversationInfo]:
        """All conversations, the most recently active first."""
        with self._lock:
            rows = self._db.execute(_INFO_SQL + " ORDER BY c.updated_at DESC, c.rowid DESC")
            return [ConversationInfo(*row) for row in rows.fetchall()]

    def get(self, cid: str) -> ConversationInfo:
        with self._lock:
            row = self._db.execute(_INFO_SQL + " WHERE c.id = ?", (cid,)).fetchone()
        if row is None:
            raise ConversationNotFound(f"No conversation with id {cid!r}.")
        return ConversationInfo(*row)

    def turns(self, cid: str) -> list[Turn]:
        self.get(cid)
        with self._lock:
            rows = self._db.execute(f"SELECT {_TURN_COLUMNS} FROM turns "
                                    "WHERE conversation_id = ? ORDER BY seq", (cid,)).fetchall()
        return [_turn(row) for row in rows]

    def append(self, cid: str, answer: Answer) -> Turn:
        """Store ``answer`` as the next turn; an untitled conversation takes its question."""
        info = self.get(cid)
        turn = Turn(answer.question, answer.text, tuple(answer.citations), len(answer.sources),
                    answer.model, answer.search_query, _now(),
                    bool(getattr(answer, "refused", False)))
        cites = json.dumps([asdict(c) for c in turn.citations], ensure_ascii=False)
        with self._lock, self._db:
            self._db.execute("BEGIN")
            self._db.execute(f"INSERT INTO turns (conversation_id, {_TURN_COLUMNS}) "
                             "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                             (cid, turn.question, turn.answer, cites, turn.sources, turn.model,
                              turn.search_query, turn.created_at, int(turn.refused)))
            title = info.title or short_title(turn.question)
            self._db.execute("UPDATE conversations SET updated_at = ?, title = ? WHERE id = ?",
                             (turn.created_at, title, cid))
        return turn

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
        with the answer's citations ("[n] file, p. X: “quote”")."""
        info, turns = self.get(cid), self.turns(cid)
        started = info.created_at[:16].replace("T", " ")
        lines = [f"# {info.title or 'Untitled conversation'}", "",
                 f"Knowledge base: {info.kb} · started {started} UTC · {info.turns} questions"]
        for i, turn in enumerate(turns, start=1):
            lines += ["", f"## {i}. {turn.question}", "", turn.answer or "(no answer)"]
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
    a newest answer that alone exceeds the budget is cut (its start kept, "…" added)."""
    kept: list[tuple[str, str]] = []
    left = budget_tokens
    for turn in reversed(turns):
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


def _turn(row: tuple) -> Turn:
    question, answer, cites, sources, model, search_query, created_at, refused = row
    known = {f.name for f in fields(Citation)}
    citations = tuple(Citation(**{k: v for k, v in c.items() if k in known})
                      for c in json.loads(cites))
    return Turn(question, answer, citations, sources, model, search_query, created_at,
                bool(refused))
