"""Query latency at N chunks, up to a million: the build, the first search after a
restart, BM25 / dense / fused latency before any rerank (and the rerank of the top 20
with a cross-encoder, if given), resident memory.

Chunk texts are real (the shared retrieval corpora, chunked by the product) and, past
the corpus's ~20k chunks, copies of them with varied words (``benchmarks.bulk_kb``);
their vectors are random unit vectors of the embedder's dimension, because HNSW search
cost does not depend on what the vectors mean and embedding a million chunks would take
days. Queries are the sets' real queries, embedded by the real model. The catalog and
the vectors are written in bulk, then BM25 is built from the catalog, as a knowledge
base without a saved BM25 builds it.

The searches run in a fresh process, the restart: the embedder is loaded first, then
the first search is timed from opening the knowledge base to the first hybrid result.
``--vector-store-url`` keeps the vectors in a running Chroma server instead of the
embedded one. The data dir (under /tmp unless ``--dir``) is deleted at the end.

    python -m benchmarks.query_latency --data ../shared/data/retrieval [--chunks 20000] \\
        [--embedder all-MiniLM-L6-v2] [--reranker FOLDER] [--vector-store-url URL]
"""
from __future__ import annotations

import argparse
import json
import logging
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from benchmarks.bulk_kb import Variants, base_documents, random_unit, write_catalog, write_vectors
from benchmarks.common import rss_mb

KB = "bench"


def random_passages(inner):
    """The real embedder for queries (each call's seconds kept in ``query_seconds``),
    random unit vectors for passages."""
    from knowledge.embedders import Embedder

    class RandomPassages(Embedder):
        name, dim = inner.name, inner.dim

        def embed_passages(self, texts):
            return random_unit(rng, len(texts), self.dim)

        def embed_queries(self, texts):
            t = time.perf_counter()
            vectors = inner.embed_queries(texts)
            self.query_seconds.append(time.perf_counter() - t)
            return vectors

        def count_tokens(self, text):
            return inner.count_tokens(text)

    rng = np.random.default_rng(0)
    embedder = RandomPassages()
    embedder.query_seconds = []
    return embedder


def _queries(data: Path, n: int) -> list[str]:
    out = []
    for name in ("medquad_liveqa", "scifact", "toyhom_zh"):
        path = data / name / "queries.jsonl"
        if path.is_file():
            out += [json.loads(line)["text"] for line in path.open(encoding="utf-8")][: n // 3]
    return out


def pct(values, q):
    return sorted(values)[int(q * (len(values) - 1))] * 1000


def _library(args, folder: Path, embedder):
    from knowledge.chroma import VectorStoreConfig
    from knowledge.library import Library

    store = VectorStoreConfig(args.vector_store_url, collection_prefix="latency")
    return Library(folder / "knowledge", embedder, 220, 40, vector_store=store)


def peak_rss_mb() -> float:
    """This process's peak resident memory (VmHWM: unlike ru_maxrss, not inherited from
    the parent that forked it)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def _size_mb(path: Path) -> float:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file()) / 2 ** 20


def build(args, folder: Path) -> None:
    """Write the knowledge base: catalog, BM25, vectors; print what each took."""
    from knowledge.embedders import load_embedder

    embedder = random_passages(load_embedder(args.embedder))
    t0 = time.perf_counter()
    variants = Variants(base_documents(args.data, embedder.count_tokens))
    variants.check()
    chunking = time.perf_counter() - t0
    lib = _library(args, folder, embedder)
    kb = lib.get(KB, create=True)
    t0 = time.perf_counter()
    headings = write_catalog(kb.catalog, variants.documents(args.chunks), args.chunks)
    catalog = time.perf_counter() - t0
    t0 = time.perf_counter()
    kb._refresh_bm25()
    bm25 = time.perf_counter() - t0
    t0 = time.perf_counter()
    write_vectors(kb, headings)
    vectors = time.perf_counter() - t0
    n, store = kb.chunk_count(), args.vector_store_url or "embedded Chroma"
    root = folder / "knowledge" / KB
    print(f"{n} chunks ({len(variants.docs)} base documents of 25 corpus entries, "
          f"{sum(len(c) for _, c in variants.docs)} base chunks), vectors in {store}")
    print(f"build: {catalog + bm25 + vectors:.0f} s = catalog {catalog:.0f} s + BM25 {bm25:.0f} s"
          f" + vectors {vectors:.0f} s (base chunking {chunking:.0f} s before); peak RSS "
          f"{peak_rss_mb():.0f} MB")
    print(f"on disk: catalog {_size_mb(root) - _size_mb(root / 'bm25'):.0f} MB, BM25 "
          f"{_size_mb(root / 'bm25'):.0f} MB, embedded Chroma {_size_mb(folder / 'knowledge' / 'chroma'):.0f} MB")
    lib.close()


def search(args, folder: Path) -> None:
    """The restart: open, first search, then every query; print latencies and memory."""
    import knowledge.library  # noqa: F401 - imported before the clock starts, as in the app
    from knowledge.embedders import load_embedder

    t0 = time.perf_counter()
    embedder = random_passages(load_embedder(args.embedder))
    embedder.embed_queries(["warm up"])
    print(f"restart: embedder loaded in {time.perf_counter() - t0:.1f} s, RSS {rss_mb():.0f} MB")
    queries = _queries(args.data, args.queries)
    t0 = time.perf_counter()
    lib = _library(args, folder, embedder)
    kb = lib.get(KB)
    opened = time.perf_counter() - t0
    t0 = time.perf_counter()
    kb._refresh_bm25()
    bm25 = time.perf_counter() - t0
    t0 = time.perf_counter()
    lib.warm(KB)  # the vector index: an embedded Chroma reads all of it on first use
    vectors = time.perf_counter() - t0
    retriever = kb.retriever("hybrid")
    t0 = time.perf_counter()
    retriever.retrieve(queries[0], 20)
    first = time.perf_counter() - t0
    parts = ", ".join(f"{s} {v * 1000:.0f}" for s, v in retriever.last_timings.items())
    print(f"first search after the restart: {(opened + bm25 + vectors + first) * 1000:.0f} ms "
          f"= open {opened * 1000:.0f} + BM25 open {bm25 * 1000:.0f} + vector index open "
          f"{vectors * 1000:.0f} + first hybrid search {first * 1000:.0f} ms ({parts} ms)")
    print(f"  the app opens BM25 and the vectors while the chat model loads (app.py), so its "
          f"first search after a restart takes {(opened + first) * 1000:.0f} ms once it "
          f"says it is ready")
    stages = _time_queries(args, kb, retriever, queries)
    print(f"{len(queries)} queries, ms p50 / p95 (before any rerank):")
    for s, v in stages.items():
        print(f"  {s:14s} {statistics.median(v) * 1000:7.1f} / {pct(v, 0.95):7.1f}")
    print("  (dense includes the query embedding)")
    print(f"RSS after the queries {rss_mb():.0f} MB, peak {peak_rss_mb():.0f} MB")
    lib.close()


def _time_queries(args, kb, retriever, queries) -> dict[str, list[float]]:
    stages: dict[str, list[float]] = {"fused (total)": []}
    reranker = None
    if args.reranker:
        from knowledge.rerank import CrossEncoderReranker

        reranker = CrossEncoderReranker(args.reranker)
        stages["rerank top 20"] = []
    embedded = kb.vectors.embedder.query_seconds
    for q in queries:
        before = len(embedded)
        t = time.perf_counter()
        hits = retriever.retrieve(q, 20)
        stages["fused (total)"].append(time.perf_counter() - t)
        for s, v in retriever.last_timings.items():
            stages.setdefault(s, []).append(v)
        stages.setdefault("query embedding", []).append(sum(embedded[before:]))
        if reranker is not None:
            t = time.perf_counter()
            reranker.rerank(q, hits, 20)
            stages["rerank top 20"].append(time.perf_counter() - t)
    return stages


def _drop(args, folder: Path) -> None:
    """Delete the benchmark's knowledge base (its collection on a server too) and dir."""
    if args.vector_store_url and (folder / "knowledge" / KB).is_dir():
        from knowledge.embedders import load_embedder

        lib = _library(args, folder, random_passages(load_embedder(args.embedder)))
        lib.delete(KB)
        lib.close()
    shutil.rmtree(folder, ignore_errors=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", type=Path, default=Path("../shared/data/retrieval"))
    ap.add_argument("--chunks", type=int, default=20000)
    ap.add_argument("--queries", type=int, default=150)
    ap.add_argument("--embedder", default="all-MiniLM-L6-v2")
    ap.add_argument("--reranker", type=Path, help="a cross-encoder folder to time on the top 20")
    ap.add_argument("--vector-store-url", default="", help="a running Chroma server for the vectors")
    ap.add_argument("--dir", type=Path, help="data dir to use (default: a new one under /tmp)")
    ap.add_argument("--keep", action="store_true", help="keep the data dir (and collection)")
    ap.add_argument("--search-only", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    from common.offline import go_offline

    go_offline()
    if args.search_only:
        search(args, args.dir)
        return
    folder = args.dir or Path(tempfile.mkdtemp(prefix="docent-latency-", dir="/tmp"))
    try:
        build(args, folder)
        sys.stdout.flush()
        subprocess.run([sys.executable, "-m", "benchmarks.query_latency", *sys.argv[1:],
                        "--search-only", "--dir", str(folder)], check=True)
    finally:
        if not args.keep:
            _drop(args, folder)


if __name__ == "__main__":
    main()
