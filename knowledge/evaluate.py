"""Evaluate retrieval on a BEIR-format set.

    python -m knowledge.evaluate --data ../shared/data/retrieval/medquad_liveqa --split test \\
        [--config bm25 dense hybrid hybrid-weighted] [--limit-queries N] [--cache DIR]

Ingests the corpus into a temporary knowledge base through the product's chunking and
index (vectors cached by content hash under --cache, so a re-run does not re-embed),
runs every query, ranks documents by their best chunk, and prints nDCG@10, Recall@100
and MRR@10 (ir-measures / trec_eval) with p50/p95 latency per stage.
"""
from __future__ import annotations

import argparse
import csv
import json
import statistics
import tempfile
import time
from collections import defaultdict
from pathlib import Path

CONFIGS = {
    "bm25": ("bm25", None),
    "dense": ("dense", None),
    "hybrid": ("hybrid", {"method": "rrf"}),
    "hybrid-weighted": ("hybrid", {"method": "weighted", "dense_weight": 0.5}),
}


def load_beir(folder: Path, split: str):
    corpus = [json.loads(line) for line in (folder / "corpus.jsonl").open(encoding="utf-8")]
    queries = {q["_id"]: q["text"] for q in map(json.loads, (folder / "queries.jsonl").open(encoding="utf-8"))}
    qrels: dict[str, dict[str, int]] = defaultdict(dict)
    with (folder / "qrels" / f"{split}.tsv").open(encoding="utf-8") as f:
        for row in csv.DictReader(f, delimiter="\t"):
            qrels[row["query-id"]][row["corpus-id"]] = int(row["score"])
    queries = {qid: text for qid, text in queries.items() if qid in qrels}
    return corpus, queries, dict(qrels)


def build_kb(corpus, work: Path, embedder, chunk_size: int, chunk_overlap: int):
    from ingest.chunking import ChunkingParams, chunk_pages, doc_id_for
    from ingest.types import Page
    from knowledge.library import Library

    lib = Library(work / "knowledge", embedder, chunk_size, chunk_overlap)
    kb = lib.get("eval", create=True)
    params = ChunkingParams(chunk_size, chunk_overlap)
    t0 = time.perf_counter()
    have = {d.source for d in kb.documents()}
    for n, doc in enumerate(corpus):
        if doc["_id"] in have:
            continue
        text = (doc.get("title", "") + "\n\n" + doc["text"]).strip()
        doc_id = doc_id_for(doc["_id"], "")
        chunks = chunk_pages(doc_id, doc["_id"], [Page(0, text)], params, embedder.count_tokens)
        if chunks:
            kb.add_document(doc_id, doc["_id"], "", 0, chunks)
        if n % 500 == 0:
            print(f"  ingested {n}/{len(corpus)} docs ({time.perf_counter() - t0:.0f} s)", flush=True)
    return lib, kb


def rank_documents(kb, hits) -> dict[str, float]:
    """Best chunk score per document; a duplicate chunk credits every document holding it."""
    dups = kb.catalog.duplicate_sources([h.chunk.chunk_id for h in hits])
    scores: dict[str, float] = {}
    for rank, h in enumerate(hits):
        score = -rank  # rank order, comparable across retrievers
        for source in [h.chunk.source, *dups.get(h.chunk.chunk_id, [])]:
            scores[source] = max(scores.get(source, score), score)
    return scores


def evaluate(kb, queries, qrels, config: str, depth: int = 100):
    import ir_measures
    from ir_measures import RR, R, nDCG

    from knowledge.retrievers import FusionConfig

    mode, fusion = CONFIGS[config]
    retriever = kb.retriever(mode, FusionConfig(**fusion) if fusion else None, candidates=depth)
    run, latency = [], defaultdict(list)
    for qid, text in queries.items():
        t = time.perf_counter()
        hits = retriever.retrieve(text, depth)
        latency["total"].append(time.perf_counter() - t)
        for stage, seconds in getattr(retriever, "last_timings", {}).items():
            latency[stage].append(seconds)
        run.extend(ir_measures.ScoredDoc(qid, doc, s) for doc, s in rank_documents(kb, hits).items())
    qrel_list = [ir_measures.Qrel(q, d, s) for q, docs in qrels.items() for d, s in docs.items()]
    metrics = ir_measures.calc_aggregate([nDCG @ 10, R @ 100, RR @ 10], qrel_list, run)
    lat = {stage: (statistics.median(v) * 1000, sorted(v)[int(0.95 * (len(v) - 1))] * 1000)
           for stage, v in latency.items()}
    return {"nDCG@10": metrics[nDCG @ 10], "R@100": metrics[R @ 100], "MRR@10": metrics[RR @ 10]}, lat


def main() -> None:
    from assistant.offline import go_offline

    go_offline()
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", type=Path, required=True)
    ap.add_argument("--split", default="test")
    ap.add_argument("--config", nargs="+", default=list(CONFIGS), choices=list(CONFIGS))
    ap.add_argument("--embedder", default="multilingual-e5-small")
    ap.add_argument("--chunk-size", type=int, default=220)
    ap.add_argument("--chunk-overlap", type=int, default=40)
    ap.add_argument("--limit-queries", type=int, default=0, help="first N judged queries only")
    ap.add_argument("--cache", type=Path, default=Path(tempfile.gettempdir()) / "docent-eval-cache")
    args = ap.parse_args()

    from knowledge.embed_cache import CachedEmbedder
    from knowledge.embedders import load_embedder

    corpus, queries, qrels = load_beir(args.data, args.split)
    if args.limit_queries:
        queries = dict(list(queries.items())[: args.limit_queries])
    embedder = CachedEmbedder(load_embedder(args.embedder), args.cache / "embeddings.sqlite3")
    print(f"{args.data.name}/{args.split}: {len(corpus)} docs, {len(queries)} queries; "
          f"embedder {args.embedder}, chunks {args.chunk_size}/{args.chunk_overlap}")
    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        lib, kb = build_kb(corpus, Path(tmp), embedder, args.chunk_size, args.chunk_overlap)
        print(f"  index: {kb.chunk_count()} chunks in {time.perf_counter() - t0:.0f} s "
              f"(embedding cache {embedder.hits} hits, {embedder.misses} misses)")
        print("| config | nDCG@10 | R@100 | MRR@10 | latency p50/p95 ms by stage |")
        print("|---|---|---|---|---|")
        for config in args.config:
            m, lat = evaluate(kb, queries, qrels, config)
            stages = ", ".join(f"{s} {p50:.0f}/{p95:.0f}" for s, (p50, p95) in lat.items())
            print(f"| {config} | {m['nDCG@10']:.3f} | {m['R@100']:.3f} | {m['MRR@10']:.3f} | {stages} |",
                  flush=True)
        lib.close()


if __name__ == "__main__":
    main()
