"""A large knowledge base for the latency benchmarks, written in bulk.

Real chunk texts (the shared retrieval corpora chunked by the product, 25 corpus entries
to a document) are copied with variation until there are as many as asked: in copy r of
a chunk each word is replaced with probability ``REPLACE`` by a word drawn from the
whole corpus (so term frequencies keep the corpus's shape) and with probability ``NOVEL``
by a new word (the word and r: the vocabulary grows with the size, as a real one does).
Copy 0 is the corpus itself. A chunk's BM25 tokens are the product's
(``knowledge.tokenize``), computed word by word with a cache: the same tokens as the
whole text gives (checked on the first chunks).

The catalog gets the rows the write protocol writes (pending, then marked ready, so the
catalog logs each new passage), in batched transactions and without duplicate
detection; the passage vectors are random unit vectors written through the product's
vector index in batches.
"""
from __future__ import annotations

import json
import logging
import random
import time
from collections.abc import Iterator
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

from knowledge.dedup import content_hash
from knowledge.tokenize import tokenize
from knowledge.types import Chunk

log = logging.getLogger(__name__)

SETS = ("medquad_liveqa", "scifact", "toyhom_zh")
REPLACE, NOVEL = 0.10, 0.01
DOC_BATCH = 300  # documents per catalog transaction
VECTOR_BATCH = 4000


def corpus_entries(data: Path) -> Iterator[tuple[str, str]]:
    """``(title, text)`` of every entry of the shared sets found under ``data``."""
    for name in SETS:
        corpus = data / name / "corpus.jsonl"
        if corpus.is_file():
            for line in corpus.open(encoding="utf-8"):
                d = json.loads(line)
                yield d.get("title", ""), d["text"]


def base_documents(data: Path, count_tokens, chunk_size: int = 220, overlap: int = 40
                   ) -> list[tuple[str, list[Chunk]]]:
    """The corpus as documents of 25 entries (one page each), chunked by the product."""
    from ingest.chunking import ChunkingParams, chunk_pages, doc_id_for
    from ingest.types import Page

    params, docs, pages = ChunkingParams(chunk_size, overlap), [], []

    def flush():
        source = f"file-{len(docs):05d}"
        chunks = chunk_pages(doc_id_for(source, ""), source, pages, params, count_tokens)
        if chunks:
            docs.append((source, chunks))
        pages.clear()

    for title, text in corpus_entries(data):
        pages.append(Page(len(pages) + 1, text, ((0, title),) if title else ()))
        if len(pages) == 25:
            flush()
    if pages:
        flush()
    return docs


class Variants:
    """Copies of the base chunks with varied words, and their tokens."""

    def __init__(self, docs: list[tuple[str, list[Chunk]]], seed: int = 0):
        self.docs = [(source, [(c, c.text.split()) for c in chunks]) for source, chunks in docs]
        self.pool = [w for _, chunks in self.docs for _, words in chunks for w in words]
        self._tokens: dict[str, list[str]] = {}
        self.rng = random.Random(seed)

    def tokens(self, heading: str, words: list[str]) -> list[str]:
        cache, out = self._tokens, tokenize(heading) if heading else []
        for w in words:
            t = cache.get(w)
            if t is None:
                t = cache[w] = tokenize(w)
            out.extend(t)
        return out

    def vary(self, words: list[str], r: int) -> list[str]:
        if r == 0:
            return words
        rng, pool, out = self.rng, self.pool, list(words)
        for i, p in enumerate(rng.choices((0, 1, 2), (1 - REPLACE - NOVEL, REPLACE, NOVEL), k=len(out))):
            if p == 1:
                out[i] = pool[rng.randrange(len(pool))]
            elif p == 2:
                out[i] = f"{out[i]}{r}"
        return out

    def documents(self, n: int) -> Iterator[tuple[str, str, list[tuple[Chunk, list[str]]]]]:
        """``(doc id, source, [(chunk, tokens)])`` until ``n`` chunks were given."""
        given, r = 0, 0
        while given < n:
            for source, chunks in self.docs:
                doc_id, rows = f"r{r:03d}-{chunks[0][0].doc_id}", []
                for c, words in chunks[:n - given]:
                    text = " ".join(self.vary(words, r))
                    rows.append((Chunk(f"{doc_id}-{c.ordinal:05d}", doc_id, f"r{r:03d}/{source}",
                                       text, c.page, 0, len(text), c.ordinal, c.heading),
                                 self.tokens(c.heading, text.split())))
                given += len(rows)
                yield doc_id, f"r{r:03d}/{source}", rows
                if given >= n:
                    return
            r += 1

    def check(self, count: int = 200) -> None:
        """The word-by-word tokens equal the product's tokens of the whole text."""
        for c, words in [row for _, chunks in self.docs for row in chunks][:count]:
            assert self.tokens(c.heading, words) == tokenize(f"{c.heading}\n{' '.join(words)}"
                                                             if c.heading else " ".join(words))


def write_catalog(catalog, docs: Iterator, total: int) -> set[str]:
    """Write ``docs`` (see ``Variants.documents``) into ``catalog``; their headings."""
    headings: set[str] = set()
    batch: list = []
    done, t0 = 0, time.perf_counter()
    for doc in docs:
        batch.append(doc)
        if len(batch) == DOC_BATCH:
            done += _write_batch(catalog, batch, headings)
            batch = []
            log.info("catalog: %d / %d chunks (%.0f s)", done, total, time.perf_counter() - t0)
    if batch:
        done += _write_batch(catalog, batch, headings)
    return headings


def _write_batch(catalog, batch: list, headings: set[str]) -> int:
    now = datetime.now(timezone.utc).isoformat(timespec="microseconds")
    docs, chunks = [], []
    for doc_id, source, rows in batch:
        docs.append((doc_id, source, "", "0" * 64, 1, sum(len(c.text) for c, _ in rows),
                     "pending", now, ""))
        for c, tokens in rows:
            chunks.append((c.chunk_id, doc_id, c.ordinal, c.text, c.page, c.start, c.end,
                           c.heading, json.dumps(tokens, ensure_ascii=False),
                           content_hash(c.text), None, None))
            headings.add(c.heading)
    with catalog.transaction() as db:
        db.executemany("INSERT INTO documents (doc_id, source, origin, sha256, pages, chars, "
                       "status, added_at, reader) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)", docs)
        db.executemany("INSERT INTO chunks VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)", chunks)
        db.executemany("UPDATE documents SET status = 'ready' WHERE doc_id = ?",
                       [(d[0],) for d in docs])
    return len(chunks)


def write_vectors(kb, headings: set[str]) -> None:
    """Random unit vectors for every passage (and heading) of ``kb``, in batches."""
    embedder = kb.vectors.embedder
    named = sorted(h for h in headings if h)
    kb.catalog.add_heading_vectors(dict(zip(named, embedder.embed_passages(named))))
    ids = kb.catalog.canonical_ids()
    t0 = time.perf_counter()
    for start in range(0, len(ids), VECTOR_BATCH):
        chunks = list(kb.catalog.chunks_by_id(ids[start:start + VECTOR_BATCH]).values())
        kb.vectors.upsert(chunks, embedder.embed_passages([c.text for c in chunks]))
        done = min(start + VECTOR_BATCH, len(ids))
        if done % (10 * VECTOR_BATCH) < VECTOR_BATCH or done == len(ids):
            log.info("vectors: %d / %d (%.0f s)", done, len(ids), time.perf_counter() - t0)


def random_unit(rng: np.random.Generator, n: int, dim: int) -> np.ndarray:
    v = rng.standard_normal((n, dim)).astype(np.float32)
    return v / np.linalg.norm(v, axis=1, keepdims=True)
