"""Query latency at N chunks: BM25, dense (with the real query embedder), fusion, and the
rerank of the top 20 with a cross-encoder; plus the BM25 load at start.

Chunk texts are real (the shared retrieval corpora, chunked by the product); their
vectors are random unit vectors of the embedder's dimension, because HNSW search cost
does not depend on what the vectors mean and embedding 20k chunks would take an hour.
Queries are the sets' real queries, embedded by the real model.

    python -m benchmarks.query_latency --data ../shared/data/retrieval [--chunks 20000] \\
        [--embedder all-MiniLM-L6-v2] [--reranker FOLDER]
"""
from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np


def random_passages(inner):
    """The real embedder for queries, random unit vectors for passages."""
    from knowledge.embedders import Embedder

    class RandomPassages(Embedder):
        name, dim = inner.name, inner.dim

        def embed_passages(self, texts):
            v = rng.standard_normal((len(texts), self.dim)).astype(np.float32)
            return v / np.linalg.norm(v, axis=1, keepdims=True)

        def embed_queries(self, texts):
            return inner.embed_queries(texts)

        def count_tokens(self, text):
            return inner.count_tokens(text)

    rng = np.random.default_rng(0)
    return RandomPassages()


def _texts(data: Path):
    for name in ("medquad_liveqa", "scifact", "toyhom_zh"):
        corpus = data / name / "corpus.jsonl"
        if corpus.is_file():
            for line in corpus.open(encoding="utf-8"):
                d = json.loads(line)
                yield f"{name}/{d['_id']}", d.get("title", ""), d["text"]


def _queries(data: Path, n: int) -> list[str]:
    out = []
    for name in ("medquad_liveqa", "scifact", "toyhom_zh"):
        path = data / name / "queries.jsonl"
        if path.is_file():
            out += [json.loads(line)["text"] for line in path.open(encoding="utf-8")][: n // 3]
    return out


def pct(values, q):
    return sorted(values)[int(q * (len(values) - 1))] * 1000


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", type=Path, default=Path("../shared/data/retrieval"))
    ap.add_argument("--chunks", type=int, default=20000)
    ap.add_argument("--queries", type=int, default=150)
    ap.add_argument("--embedder", default="all-MiniLM-L6-v2")
    ap.add_argument("--reranker", type=Path, help="a cross-encoder folder to time on the top 20")
    args = ap.parse_args()

    from common.offline import go_offline

    go_offline()
    from ingest.chunking import ChunkingParams, chunk_pages, doc_id_for
    from ingest.types import Page
    from knowledge.embedders import load_embedder
    from knowledge.library import Library

    embedder = random_passages(load_embedder(args.embedder))
    with tempfile.TemporaryDirectory() as tmp:
        lib = Library(Path(tmp) / "knowledge", embedder, 220, 40)
        kb = lib.get("bench", create=True)
        params = ChunkingParams(220, 40)
        t0 = time.perf_counter()
        docs = 0
        pages: list = []

        def flush():  # 25 corpus entries become one 25-page document, like a real file
            nonlocal docs
            source = f"file-{docs:05d}"
            chunks = chunk_pages(doc_id_for(source, ""), source, pages, params, embedder.count_tokens)
            if chunks:
                kb.add_document(doc_id_for(source, ""), source, "", len(pages), chunks)
            docs += 1
            pages.clear()

        for _, title, text in _texts(args.data):
            if kb.chunk_count() >= args.chunks:
                break
            pages.append(Page(len(pages) + 1, text, ((0, title),) if title else ()))
            if len(pages) == 25:
                flush()
        if pages and kb.chunk_count() < args.chunks:
            flush()
        n = kb.chunk_count()
        print(f"{n} chunks in {docs} documents of 25 corpus entries indexed in {time.perf_counter() - t0:.0f} s "
              f"(random passage vectors, {embedder.name} queries)")
        lib.close()

        t0 = time.perf_counter()
        lib = Library(Path(tmp) / "knowledge", embedder, 220, 40)
        kb = lib.get("bench")
        opened = time.perf_counter() - t0
        t0 = time.perf_counter()
        kb._refresh_bm25()
        bm25_load = time.perf_counter() - t0
        print(f"open knowledge base {opened * 1000:.0f} ms; BM25 load from the catalog "
              f"{bm25_load * 1000:.0f} ms")

        retriever = kb.retriever("hybrid")
        queries = _queries(args.data, args.queries)
        retriever.retrieve(queries[0], 20)  # warm the embedder
        stages: dict[str, list[float]] = {"total": []}
        reranker = None
        if args.reranker:
            from knowledge.rerank import CrossEncoderReranker

            reranker = CrossEncoderReranker(args.reranker)
            stages["rerank top 20"] = []
        for q in queries:
            t = time.perf_counter()
            hits = retriever.retrieve(q, 20)
            stages["total"].append(time.perf_counter() - t)
            for s, v in retriever.last_timings.items():
                stages.setdefault(s, []).append(v)
            if reranker is not None:
                t = time.perf_counter()
                reranker.rerank(q, hits, 20)
                stages["rerank top 20"].append(time.perf_counter() - t)
        print(f"{len(queries)} queries, ms p50 / p95:")
        for s, v in stages.items():
            print(f"  {s:14s} {statistics.median(v) * 1000:7.1f} / {pct(v, 0.95):7.1f}")
        lib.close()


if __name__ == "__main__":
    main()
