"""The record of truth for one knowledge base: a SQLite file of documents and chunks.

Chroma and BM25 are derived from it. A document is written as ``pending`` with its
chunks, then added to the vector store, then marked ``ready`` in one transaction;
opening the catalog purges anything left ``pending`` by a crash (``pending_doc_ids``).
"""
from __future__ import annotations

import json
import sqlite3
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from datetime import datetime, timezone
from pathlib import Path

from knowledge.types import Chunk, DocumentRecord

SCHEMA = """
CREATE TABLE IF NOT EXISTS documents (
    doc_id TEXT PRIMARY KEY,
    source TEXT NOT NULL,
    sha256 TEXT NOT NULL,
    pages INTEGER NOT NULL,
    chars INTEGER NOT NULL,
    status TEXT NOT NULL CHECK (status IN ('pending', 'ready')),
    added_at TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS chunks (
    chunk_id TEXT PRIMARY KEY,
    doc_id TEXT NOT NULL REFERENCES documents(doc_id) ON DELETE CASCADE,
    ordinal INTEGER NOT NULL,
    text TEXT NOT NULL,
    page INTEGER NOT NULL,
    start INTEGER NOT NULL,
    "end" INTEGER NOT NULL,
    tokens TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS chunks_doc ON chunks(doc_id);
"""


class Catalog:
    def __init__(self, path: Path):
        self.path = path
        path.parent.mkdir(parents=True, exist_ok=True)
        self._db = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA foreign_keys=ON")
        self._db.executescript(SCHEMA)

    def close(self) -> None:
        self._db.close()

    @contextmanager
    def transaction(self) -> Iterator[sqlite3.Connection]:
        self._db.execute("BEGIN IMMEDIATE")
        try:
            yield self._db
        except BaseException:
            self._db.execute("ROLLBACK")
            raise
        self._db.execute("COMMIT")

    def add_pending(
        self, doc_id: str, source: str, sha256: str, pages: int,
        chunks: list[Chunk], tokens: list[list[str]],
    ) -> None:
        chars = sum(len(c.text) for c in chunks)
        now = datetime.now(timezone.utc).isoformat(timespec="seconds")
        with self.transaction() as db:
            db.execute("DELETE FROM documents WHERE doc_id = ?", (doc_id,))
            db.execute(
                "INSERT INTO documents VALUES (?, ?, ?, ?, ?, 'pending', ?)",
                (doc_id, source, sha256, pages, chars, now),
            )
            db.executemany(
                'INSERT INTO chunks VALUES (?, ?, ?, ?, ?, ?, ?, ?)',
                [
                    (c.chunk_id, doc_id, c.ordinal, c.text, c.page, c.start, c.end,
                     json.dumps(t, ensure_ascii=False))
                    for c, t in zip(chunks, tokens)
                ],
            )

    def mark_ready(self, doc_id: str) -> None:
        with self.transaction() as db:
            db.execute("UPDATE documents SET status = 'ready' WHERE doc_id = ?", (doc_id,))

    def delete(self, doc_id: str) -> None:
        with self.transaction() as db:
            db.execute("DELETE FROM documents WHERE doc_id = ?", (doc_id,))

    def pending_doc_ids(self) -> list[str]:
        rows = self._db.execute("SELECT doc_id FROM documents WHERE status = 'pending'")
        return [r[0] for r in rows]

    def documents(self) -> list[DocumentRecord]:
        rows = self._db.execute(
            "SELECT d.doc_id, d.source, d.sha256, d.pages, COUNT(c.chunk_id), d.chars, d.added_at "
            "FROM documents d LEFT JOIN chunks c USING (doc_id) WHERE d.status = 'ready' "
            "GROUP BY d.doc_id ORDER BY d.added_at, d.source"
        )
        return [DocumentRecord(*r) for r in rows]

    def find_by_source(self, source: str) -> DocumentRecord | None:
        return next((d for d in self.documents() if d.source == source), None)

    def chunk_count(self) -> int:
        return self._db.execute(
            "SELECT COUNT(*) FROM chunks JOIN documents USING (doc_id) WHERE status = 'ready'"
        ).fetchone()[0]

    def ready_chunks_with_tokens(self) -> Iterable[tuple[Chunk, list[str]]]:
        rows = self._db.execute(
            'SELECT c.chunk_id, c.doc_id, d.source, c.text, c.page, c.start, c."end", '
            "c.ordinal, c.tokens FROM chunks c JOIN documents d USING (doc_id) "
            "WHERE d.status = 'ready' ORDER BY d.added_at, c.doc_id, c.ordinal"
        )
        for *fields, tokens in rows:
            yield Chunk(*fields), json.loads(tokens)

    def chunks_by_id(self, chunk_ids: list[str]) -> dict[str, Chunk]:
        if not chunk_ids:
            return {}
        marks = ",".join("?" * len(chunk_ids))
        rows = self._db.execute(
            'SELECT c.chunk_id, c.doc_id, d.source, c.text, c.page, c.start, c."end", c.ordinal '
            f"FROM chunks c JOIN documents d USING (doc_id) WHERE d.status = 'ready' "
            f"AND c.chunk_id IN ({marks})",
            chunk_ids,
        )
        return {r[0]: Chunk(*r) for r in rows}
