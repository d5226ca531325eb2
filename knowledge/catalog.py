"""The record of truth for one knowledge base: a SQLite file of documents and chunks.

Chroma and BM25 are derived from it. Crash safety (kill -9 at any moment):

1. a new document and its chunks are written ``pending`` in one transaction;
2. its canonical chunks' vectors go to Chroma;
3. one transaction marks it ``ready``, deletes the version it replaces, records a
   *tombstone* for that version's vectors and a *pending vector* for every duplicate
   chunk promoted to canonical because its original went away;
4. tombstoned vectors are deleted from Chroma and promoted chunks embedded, each
   clearing its record when done.

Opening a catalog hands back what a crash left: pending documents (drop them; their
file is ingested again next time), tombstones and pending vectors (finish them).

Every change to the searchable passages (ready, canonical chunks) is also written, by
triggers inside the transaction that makes it, to the ``changes`` log: its last sequence
number is the catalog's *generation*. An index kept elsewhere (the on-disk BM25, see
``knowledge.bm25_live``) records the generation it reflects and catches up from the log.
"""
from __future__ import annotations

import json
import sqlite3
import threading
import uuid
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

from knowledge import dedup
from knowledge.types import Chunk, DocumentRecord

SCHEMA = """
CREATE TABLE IF NOT EXISTS documents (
    doc_id TEXT PRIMARY KEY,
    source TEXT NOT NULL,
    origin TEXT NOT NULL DEFAULT '',
    sha256 TEXT NOT NULL,
    pages INTEGER NOT NULL,
    chars INTEGER NOT NULL,
    status TEXT NOT NULL CHECK (status IN ('pending', 'ready')),
    added_at TEXT NOT NULL,
    reader TEXT NOT NULL DEFAULT ''
);
CREATE INDEX IF NOT EXISTS documents_source ON documents(source);
CREATE TABLE IF NOT EXISTS chunks (
    chunk_id TEXT PRIMARY KEY,
    doc_id TEXT NOT NULL REFERENCES documents(doc_id) ON DELETE CASCADE,
    ordinal INTEGER NOT NULL,
    text TEXT NOT NULL,
    page INTEGER NOT NULL,
    start INTEGER NOT NULL,
    "end" INTEGER NOT NULL,
    heading TEXT NOT NULL DEFAULT '',
    tokens TEXT NOT NULL,
    content_hash TEXT NOT NULL,
    minhash BLOB,
    dup_of TEXT
);
CREATE INDEX IF NOT EXISTS chunks_doc ON chunks(doc_id);
CREATE INDEX IF NOT EXISTS chunks_hash ON chunks(content_hash);
CREATE INDEX IF NOT EXISTS chunks_dup ON chunks(dup_of);
CREATE INDEX IF NOT EXISTS chunks_canonical ON chunks(doc_id, dup_of);
CREATE TABLE IF NOT EXISTS lsh (
    band INTEGER NOT NULL,
    key TEXT NOT NULL,
    chunk_id TEXT NOT NULL REFERENCES chunks(chunk_id) ON DELETE CASCADE
);
CREATE INDEX IF NOT EXISTS lsh_key ON lsh(band, key);
CREATE INDEX IF NOT EXISTS lsh_chunk ON lsh(chunk_id);
CREATE TABLE IF NOT EXISTS tombstones (doc_id TEXT PRIMARY KEY);
CREATE TABLE IF NOT EXISTS pending_vectors (
    chunk_id TEXT PRIMARY KEY REFERENCES chunks(chunk_id) ON DELETE CASCADE
);
CREATE TABLE IF NOT EXISTS heading_vectors (heading TEXT PRIMARY KEY, vec BLOB NOT NULL);
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS changes (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    chunk_id TEXT NOT NULL,
    added INTEGER NOT NULL
);
CREATE TRIGGER IF NOT EXISTS changes_ready AFTER UPDATE OF status ON documents
WHEN OLD.status != 'ready' AND NEW.status = 'ready' BEGIN
    INSERT INTO changes (chunk_id, added) SELECT chunk_id, 1 FROM chunks
    WHERE doc_id = NEW.doc_id AND dup_of IS NULL ORDER BY ordinal;
END;
CREATE TRIGGER IF NOT EXISTS changes_gone BEFORE DELETE ON documents
WHEN OLD.status = 'ready' BEGIN
    INSERT INTO changes (chunk_id, added) SELECT chunk_id, 0 FROM chunks
    WHERE doc_id = OLD.doc_id AND dup_of IS NULL ORDER BY ordinal;
END;
CREATE TRIGGER IF NOT EXISTS changes_canonical AFTER UPDATE OF dup_of ON chunks
WHEN (OLD.dup_of IS NULL) != (NEW.dup_of IS NULL)
AND (SELECT status FROM documents WHERE doc_id = NEW.doc_id) = 'ready' BEGIN
    INSERT INTO changes (chunk_id, added) VALUES (NEW.chunk_id, NEW.dup_of IS NULL);
END;
"""

_CHUNK_COLS = ('c.chunk_id, c.doc_id, d.source, c.text, c.page, c.start, c."end", '
               'c.ordinal, c.heading')


class Catalog:
    def __init__(self, path: Path):
        self.path = path
        path.parent.mkdir(parents=True, exist_ok=True)
        self._db = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=FULL")
        self._db.execute("PRAGMA foreign_keys=ON")
        self._db.executescript(SCHEMA)
        self._migrate()
        self._db.execute("INSERT OR IGNORE INTO meta VALUES ('catalog_id', ?)", (uuid.uuid4().hex,))
        self.catalog_id = self._db.execute(
            "SELECT value FROM meta WHERE key = 'catalog_id'").fetchone()[0]
        self._lock = threading.RLock()  # one connection, used from several threads

    def _migrate(self) -> None:
        """Catalogs written before documents recorded their reader get the column; their
        documents read as "" (version 1 of their loader: ``ingest.loaders.read_by_current``)."""
        columns = {row[1] for row in self._db.execute("PRAGMA table_info(documents)")}
        if "reader" not in columns:
            self._db.execute("ALTER TABLE documents ADD COLUMN reader TEXT NOT NULL DEFAULT ''")

    def close(self) -> None:
        with self._lock:
            self._db.close()

    @contextmanager
    def transaction(self) -> Iterator[sqlite3.Connection]:
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                yield self._db
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            self._db.execute("COMMIT")

    def _query(self, sql: str, params: Iterable = ()) -> list[tuple]:
        with self._lock:
            return self._db.execute(sql, tuple(params)).fetchall()

    # --- duplicates -------------------------------------------------------------
    def find_duplicate(self, content_hash: str, signature: np.ndarray | None,
                       exclude_docs: set[str]) -> str | None:
        """Id of a ready canonical chunk with the same content, or a near-duplicate."""
        marks = ",".join("?" * len(exclude_docs)) or "''"
        rows = self._query(
            "SELECT c.chunk_id FROM chunks c JOIN documents d USING (doc_id) "
            f"WHERE c.content_hash = ? AND c.dup_of IS NULL AND d.status = 'ready' "
            f"AND c.doc_id NOT IN ({marks}) LIMIT 1", [content_hash, *exclude_docs])
        if rows or signature is None:
            return rows[0][0] if rows else None
        candidates: set[str] = set()
        for band, key in dedup.band_keys(signature):  # one indexed lookup per band
            candidates.update(r[0] for r in self._query(
                "SELECT chunk_id FROM lsh WHERE band = ? AND key = ?", (band, key)))
        if not candidates:
            return None
        cmarks = ",".join("?" * len(candidates))
        rows = self._query(
            "SELECT c.chunk_id, c.minhash FROM chunks c JOIN documents d USING (doc_id) "
            f"WHERE c.chunk_id IN ({cmarks}) AND d.status = 'ready' AND c.dup_of IS NULL "
            f"AND c.doc_id NOT IN ({marks})", [*candidates, *exclude_docs])
        best = max(((dedup.jaccard(signature, dedup.from_blob(blob)), cid) for cid, blob in rows),
                   default=(0.0, None))
        return best[1] if best[0] >= dedup.NEAR_THRESHOLD else None

    # --- writes -----------------------------------------------------------------
    def add_pending(self, doc_id: str, source: str, origin: str, sha256: str, pages: int,
                    chunks: list[Chunk], tokens: list[list[str]], hashes: list[str],
                    signatures: list[np.ndarray | None], dup_of: dict[int, str],
                    reader: str = "") -> None:
        now = datetime.now(timezone.utc).isoformat(timespec="microseconds")
        rows, lsh = [], []
        for i, (c, t, h, sig) in enumerate(zip(chunks, tokens, hashes, signatures)):
            rows.append((c.chunk_id, doc_id, c.ordinal, c.text, c.page, c.start, c.end, c.heading,
                         json.dumps(t, ensure_ascii=False), h,
                         None if sig is None else dedup.to_blob(sig), dup_of.get(i)))
            if sig is not None and i not in dup_of:
                lsh.extend((b, k, c.chunk_id) for b, k in dedup.band_keys(sig))
        with self.transaction() as db:
            db.execute("DELETE FROM documents WHERE doc_id = ?", (doc_id,))
            db.execute("INSERT INTO documents (doc_id, source, origin, sha256, pages, chars, "
                       "status, added_at, reader) VALUES (?, ?, ?, ?, ?, ?, 'pending', ?, ?)",
                       (doc_id, source, origin, sha256, pages, sum(len(c.text) for c in chunks),
                        now, reader))
            db.executemany("INSERT INTO chunks VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)", rows)
            db.executemany("INSERT INTO lsh VALUES (?, ?, ?)", lsh)

    def commit_document(self, doc_id: str, replaces: str | None) -> list[str]:
        """Mark ``doc_id`` ready and remove ``replaces`` in one transaction. Returns the
        chunk ids promoted to canonical (they need vectors)."""
        with self.transaction() as db:
            promoted = self._remove(db, replaces) if replaces else []
            db.execute("UPDATE documents SET status = 'ready' WHERE doc_id = ?", (doc_id,))
        return promoted

    def delete_document(self, doc_id: str) -> list[str]:
        """Remove a document (tombstoning its vectors); returns promoted chunk ids."""
        with self.transaction() as db:
            return self._remove(db, doc_id)

    def drop_pending(self, doc_id: str) -> None:
        with self.transaction() as db:
            db.execute("DELETE FROM documents WHERE doc_id = ? AND status = 'pending'", (doc_id,))

    def _remove(self, db: sqlite3.Connection, doc_id: str) -> list[str]:
        promoted = []
        canon = [r[0] for r in db.execute(
            "SELECT chunk_id FROM chunks WHERE doc_id = ? AND dup_of IS NULL", (doc_id,))]
        for cid in canon:
            deps = [r[0] for r in db.execute(
                "SELECT c.chunk_id FROM chunks c JOIN documents d USING (doc_id) "
                "WHERE c.dup_of = ? AND c.doc_id != ? ORDER BY d.added_at, c.ordinal", (cid, doc_id))]
            if not deps:
                continue
            heir = deps[0]
            db.execute("UPDATE chunks SET dup_of = NULL WHERE chunk_id = ?", (heir,))
            db.execute("UPDATE chunks SET dup_of = ? WHERE dup_of = ?", (heir, cid))
            blob = db.execute("SELECT minhash FROM chunks WHERE chunk_id = ?", (heir,)).fetchone()[0]
            if blob is not None:
                db.executemany("INSERT INTO lsh VALUES (?, ?, ?)",
                               [(b, k, heir) for b, k in dedup.band_keys(dedup.from_blob(blob))])
            db.execute("INSERT OR IGNORE INTO pending_vectors VALUES (?)", (heir,))
            promoted.append(heir)
        db.execute("DELETE FROM documents WHERE doc_id = ?", (doc_id,))
        db.execute("INSERT OR IGNORE INTO tombstones VALUES (?)", (doc_id,))
        db.execute("DELETE FROM heading_vectors WHERE heading NOT IN (SELECT heading FROM chunks)")
        return promoted

    def heading_vectors(self, headings: Iterable[str]) -> dict[str, np.ndarray]:
        """The stored vectors of those ``headings`` that have one."""
        headings = list(headings)
        found: dict[str, np.ndarray] = {}
        for i in range(0, len(headings), 500):
            part = headings[i:i + 500]
            rows = self._query("SELECT heading, vec FROM heading_vectors "
                               f"WHERE heading IN ({','.join('?' * len(part))})", part)
            found.update((h, np.frombuffer(v, dtype="<f4")) for h, v in rows)
        return found

    def add_heading_vectors(self, vectors: dict[str, np.ndarray]) -> None:
        with self.transaction() as db:
            db.executemany("INSERT OR REPLACE INTO heading_vectors VALUES (?, ?)",
                           [(h, np.asarray(v, dtype="<f4").tobytes()) for h, v in vectors.items()])

    def clear_heading_vectors(self) -> None:
        """Forget every heading vector (they belong to an embedder that was replaced)."""
        with self.transaction() as db:
            db.execute("DELETE FROM heading_vectors")

    def clear_tombstone(self, doc_id: str) -> None:
        with self.transaction() as db:
            db.execute("DELETE FROM tombstones WHERE doc_id = ?", (doc_id,))

    def clear_pending_vectors(self, chunk_ids: list[str]) -> None:
        with self.transaction() as db:
            db.executemany("DELETE FROM pending_vectors WHERE chunk_id = ?", [(c,) for c in chunk_ids])

    # --- recovery ---------------------------------------------------------------
    def pending_doc_ids(self) -> list[str]:
        return [r[0] for r in self._query("SELECT doc_id FROM documents WHERE status = 'pending'")]

    def tombstones(self) -> list[str]:
        return [r[0] for r in self._query("SELECT doc_id FROM tombstones")]

    def pending_vector_chunks(self) -> list[Chunk]:
        rows = self._query(f"SELECT {_CHUNK_COLS} FROM pending_vectors p CROSS JOIN chunks c "
                           "ON c.chunk_id = p.chunk_id JOIN documents d ON d.doc_id = c.doc_id")
        return [Chunk(*r) for r in rows]

    # --- the change log (see the module doc) --------------------------------------
    def generation(self) -> int:
        """The sequence number of the last change to the searchable passages (0: none)."""
        rows = self._query("SELECT seq FROM sqlite_sequence WHERE name = 'changes'")
        return rows[0][0] if rows else 0

    def changes_since(self, generation: int, limit: int
                      ) -> tuple[int, list[tuple[str, bool]]] | None:
        """The current generation and ``(chunk id, added)`` for each change after
        ``generation``, oldest first; None when the log cannot tell them all (trimmed past
        ``generation``, or ``generation`` is not from this catalog) or there are more
        than ``limit``."""
        with self._lock:
            current = self.generation()
            if not 0 <= generation <= current or current - generation > limit:
                return None
            rows = self._db.execute("SELECT chunk_id, added FROM changes WHERE seq > ? "
                                    "ORDER BY seq", (generation,)).fetchall()
        if len(rows) != current - generation:
            return None
        return current, [(cid, bool(added)) for cid, added in rows]

    def trim_changes(self, generation: int) -> None:
        """Forget the changes up to ``generation`` (an index that holds them was saved)."""
        with self.transaction() as db:
            db.execute("DELETE FROM changes WHERE seq <= ?", (generation,))

    def tokens_by_id(self, chunk_ids: list[str]) -> dict[str, list[str]]:
        """The BM25 tokens of those ``chunk_ids`` that exist."""
        found: dict[str, list[str]] = {}
        for i in range(0, len(chunk_ids), 500):
            part = chunk_ids[i:i + 500]
            rows = self._query("SELECT chunk_id, tokens FROM chunks "
                               f"WHERE chunk_id IN ({','.join('?' * len(part))})", part)
            found.update((cid, json.loads(tokens)) for cid, tokens in rows)
        return found

    @contextmanager
    def searchable_tokens(self) -> Iterator[tuple[int, Iterator[tuple[str, list[str]]]]]:
        """The generation and, streamed, ``(chunk id, tokens)`` of every searchable passage
        in catalog order, both read from one snapshot on a connection of their own, so
        writes go on meanwhile."""
        db = sqlite3.connect(self.path, check_same_thread=False)
        try:
            db.execute("BEGIN")
            rows = db.execute("SELECT seq FROM sqlite_sequence WHERE name = 'changes'").fetchall()
            cursor = db.execute(
                "SELECT c.chunk_id, c.tokens FROM chunks c JOIN documents d USING (doc_id) "
                "WHERE d.status = 'ready' AND c.dup_of IS NULL ORDER BY d.added_at, c.doc_id, c.ordinal")
            yield (rows[0][0] if rows else 0), ((cid, json.loads(t)) for cid, t in cursor)
        finally:
            db.close()

    # --- reads ------------------------------------------------------------------
    _DOC_SQL = ("SELECT d.doc_id, d.source, d.sha256, d.pages, COUNT(c.doc_id), d.chars, "
                "d.added_at, COALESCE(SUM(c.dup_of IS NOT NULL), 0), d.origin, d.reader "
                "FROM documents d LEFT JOIN chunks c USING (doc_id) WHERE d.status = 'ready' ")

    def documents(self) -> list[DocumentRecord]:
        rows = self._query(self._DOC_SQL + "GROUP BY d.doc_id ORDER BY d.added_at, d.source")
        return [DocumentRecord(*r) for r in rows]

    def document(self, doc_id: str) -> DocumentRecord | None:
        rows = self._query(self._DOC_SQL + "AND d.doc_id = ? GROUP BY d.doc_id", [doc_id])
        return DocumentRecord(*rows[0]) if rows else None

    def find_by_source(self, source: str) -> DocumentRecord | None:
        rows = self._query(self._DOC_SQL + "AND d.source = ? GROUP BY d.doc_id", [source])
        return DocumentRecord(*rows[0]) if rows else None

    def document_ids(self) -> list[str]:
        return [r[0] for r in self._query("SELECT doc_id FROM documents WHERE status = 'ready'")]

    def chunk_count(self) -> int:
        return self._query("SELECT COUNT(*) FROM documents d CROSS JOIN chunks c ON c.doc_id = "
                           "d.doc_id WHERE d.status = 'ready' AND c.dup_of IS NULL")[0][0]

    def canonical_ids(self, doc_id: str | None = None) -> list[str]:
        sql = ("SELECT c.chunk_id FROM chunks c JOIN documents d USING (doc_id) "
               "WHERE d.status = 'ready' AND c.dup_of IS NULL")
        return [r[0] for r in self._query(sql + (" AND c.doc_id = ?" if doc_id else ""),
                                          [doc_id] if doc_id else [])]

    def ready_chunks_with_tokens(self) -> Iterable[tuple[Chunk, list[str]]]:
        rows = self._query(
            f"SELECT {_CHUNK_COLS}, c.tokens FROM chunks c JOIN documents d USING (doc_id) "
            "WHERE d.status = 'ready' AND c.dup_of IS NULL ORDER BY d.added_at, c.doc_id, c.ordinal")
        for *fields, tokens in rows:
            yield Chunk(*fields), json.loads(tokens)

    def duplicate_sources(self, chunk_ids: list[str]) -> dict[str, list[str]]:
        """For canonical chunks, the sources of the documents holding a duplicate of them."""
        if not chunk_ids:
            return {}
        marks = ",".join("?" * len(chunk_ids))
        out: dict[str, list[str]] = {}
        for canon, source in self._query(
                "SELECT c.dup_of, d.source FROM chunks c JOIN documents d USING (doc_id) "
                f"WHERE d.status = 'ready' AND c.dup_of IN ({marks})", chunk_ids):
            out.setdefault(canon, []).append(source)
        return out

    def chunks_with_tokens(self, chunk_ids: list[str]) -> list[tuple[Chunk, list[str]]]:
        if not chunk_ids:
            return []
        marks = ",".join("?" * len(chunk_ids))
        rows = self._query(f"SELECT {_CHUNK_COLS}, c.tokens FROM chunks c JOIN documents d "
                           f"USING (doc_id) WHERE c.chunk_id IN ({marks})", chunk_ids)
        return [(Chunk(*fields), json.loads(tokens)) for *fields, tokens in rows]

    def document_chunks(self, doc_id: str) -> list[Chunk]:
        """Every chunk of a ready document in reading order, duplicates included."""
        rows = self._query(f"SELECT {_CHUNK_COLS} FROM chunks c JOIN documents d USING (doc_id) "
                           "WHERE d.status = 'ready' AND c.doc_id = ? ORDER BY c.ordinal", [doc_id])
        return [Chunk(*r) for r in rows]

    def chunks_by_id(self, chunk_ids: list[str]) -> dict[str, Chunk]:
        if not chunk_ids:
            return {}
        marks = ",".join("?" * len(chunk_ids))
        rows = self._query(f"SELECT {_CHUNK_COLS} FROM chunks c JOIN documents d USING (doc_id) "
                           f"WHERE d.status = 'ready' AND c.chunk_id IN ({marks})", chunk_ids)
        return {r[0]: Chunk(*r) for r in rows}
