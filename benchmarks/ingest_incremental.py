"""Cost of adding one document to a knowledge base that already holds N chunks.

Embedding is replaced by a deterministic hash embedder (its cost does not depend on
the index size), so what is timed is everything that could: catalog writes, duplicate
lookups (exact + MinHash LSH), Chroma's insert, BM25 invalidation, and the first
search afterwards (which reloads BM25 from the catalog).

    python -m benchmarks.ingest_incremental [--chunks 20000]
"""
from __future__ import annotations

import argparse
import random
import tempfile
import time
from pathlib import Path

from benchmarks.common import bench_settings


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--chunks", type=int, default=20000)
    ap.add_argument("--paragraphs", type=int, default=150, help="60-word paragraphs per document")
    args = ap.parse_args()
    from assistant.core import Assistant
    from ingest.chunking import ChunkingParams, chunk_pages
    from ingest.types import Page
    from tests.fakes import HashEmbedder, ScriptedLLM

    stems = ("patient dose tablet fever insulin glucose pressure kidney liver heart lung "
             "infection vaccine allergy rash pain sleep diet exercise pregnancy child").split()
    vocab = [f"{w}{i}" for w in stems for i in range(100)]

    def paragraph(seed: int) -> str:  # random words: no accidental duplicates
        return " ".join(random.Random(seed).choices(vocab, k=60)) + "."

    with tempfile.TemporaryDirectory() as tmp:
        a = Assistant(bench_settings(Path(tmp) / "data"), llm=ScriptedLLM("x"), embedder=HashEmbedder())
        kb = a.library.get("default")
        params = ChunkingParams(220, 0)

        def add(doc: int) -> float:
            text = "\n\n".join(paragraph(doc * 1000 + j) for j in range(args.paragraphs))
            chunks = chunk_pages(f"doc{doc:06d}", f"doc{doc}.txt", [Page(0, text)], params)
            t = time.perf_counter()
            kb.add_document(f"doc{doc:06d}", f"doc{doc}.txt", f"{doc:064d}", 0, chunks)
            return time.perf_counter() - t

        empty_add = add(0)
        t0 = time.perf_counter()
        doc = 1
        while kb.chunk_count() < args.chunks:
            add(doc)
            doc += 1
        build = time.perf_counter() - t0
        n = kb.chunk_count()
        t1 = time.perf_counter()
        kb.search("insulin5 dose", 5)
        first_search = time.perf_counter() - t1
        times = [add(doc + i) for i in range(5)]
        t2 = time.perf_counter()
        kb.search("insulin5 dose", 5)
        search_after_add = time.perf_counter() - t2
        t3 = time.perf_counter()
        kb.search("fever12 child", 5)
        warm_search = time.perf_counter() - t3
        one = sorted(times)[len(times) // 2]
        print(f"filled {n} chunks in {build:.0f} s ({n / build:.0f} chunks/s without embedding)")
        per_doc = n // doc
        print(f"add one {per_doc}-chunk document: into an empty KB {empty_add * 1000:.0f} ms; "
              f"into {n} chunks: median {one * 1000:.0f} ms (runs: {', '.join(f'{t * 1000:.0f}' for t in times)})")
        print(f"search: first after an add {search_after_add * 1000:.0f} ms, "
              f"warm {warm_search * 1000:.0f} ms, first ever {first_search * 1000:.0f} ms (loads BM25 and Chroma)")
        a.close()


if __name__ == "__main__":
    main()
