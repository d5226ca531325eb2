"""Evaluate retrieval on a BEIR-format set.

    python -m benchmarks.retrieval --data ../shared/data/retrieval/medquad_liveqa --split test \\
        [--config bm25 dense hybrid hybrid-weighted hybrid-weighted+rerank] \\
        [--keep DIR --train-reranker N] [--limit-queries N] [--cache DIR] \\
        [--queries DIR] [--embedder NAME|FOLDER]

Ingests the corpus into a temporary knowledge base through the product's chunking and
index (vectors cached by content hash under --cache, so a re-run does not re-embed),
runs every query, ranks documents by their best chunk, and prints nDCG@10, Recall@5,
Recall@100 and MRR@10 (ir-measures / trec_eval) with p50/p95 latency per stage.
``--queries DIR`` takes ``queries.jsonl`` and ``qrels/<split>.tsv`` from DIR instead of
``--data`` (e.g. Chinese and Vietnamese questions over the English MedQuAD corpus).
"""
from __future__ import annotations

import argparse
import dataclasses
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
    "hybrid-rrf20": ("hybrid", {"method": "rrf", "rrf_k": 20}),
    "hybrid-weighted": ("hybrid", {"method": "weighted", "dense_weight": 0.5}),
    "hybrid-weighted-0.3": ("hybrid", {"method": "weighted", "dense_weight": 0.3}),
    "hybrid-weighted-0.7": ("hybrid", {"method": "weighted", "dense_weight": 0.7}),
    "hybrid-weighted-noheadings": ("hybrid", {"method": "weighted", "heading_weight": 0.0}),
}


def load_beir(folder: Path, split: str, queries_folder: Path | None = None):
    """Corpus, judged queries and qrels; queries and qrels from ``queries_folder`` when given."""
    qfolder = queries_folder or folder
    corpus = [json.loads(line) for line in (folder / "corpus.jsonl").open(encoding="utf-8")]
    queries = {q["_id"]: q["text"] for q in map(json.loads, (qfolder / "queries.jsonl").open(encoding="utf-8"))}
    qrels: dict[str, dict[str, int]] = defaultdict(dict)
    with (qfolder / "qrels" / f"{split}.tsv").open(encoding="utf-8") as f:
        for row in csv.DictReader(f, delimiter="\t"):
            qrels[row["query-id"]][row["corpus-id"]] = int(row["score"])
    queries = {qid: text for qid, text in queries.items() if qid in qrels}
    return corpus, queries, dict(qrels)


def build_kb(corpus, work: Path, embedders, chunk_size: int, chunk_overlap: int):
    """The corpus as one knowledge base; a document's title is its heading (as a DOCX or
    Markdown heading would be). Documents already in ``work`` are kept."""
    from ingest.chunking import ChunkingParams, chunk_pages, doc_id_for
    from ingest.types import Page
    from knowledge.library import Library

    lib = Library(work / "knowledge", embedders, chunk_size, chunk_overlap)
    kb = lib.get("eval", create=True)
    kb.ensure_embedder("\n".join(d["text"] for d in corpus[:50]))
    params = ChunkingParams(chunk_size, chunk_overlap)
    t0 = time.perf_counter()
    have = {d.source for d in kb.documents()}
    for n, doc in enumerate(corpus):
        if doc["_id"] in have:
            continue
        title = doc.get("title", "").strip()
        page = Page(0, doc["text"], ((0, title),) if title else ())
        doc_id = doc_id_for(doc["_id"], "")
        chunks = chunk_pages(doc_id, doc["_id"], [page], params, kb.count_tokens)
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


def evaluate(kb, queries, qrels, config: str, depth: int = 100, reranker=None,
             rerank_top: int = 20, budget: int = 0, top_k: int = 5, answers=None):
    """Metrics and per-stage latency of ``config`` (``+rerank``: ``reranker`` reorders the
    top ``rerank_top`` fused hits; ``+compress``: the top ``top_k`` are cut to ``budget``
    tokens, and the prompt shrink and evidence kept are measured)."""
    import ir_measures
    from ir_measures import RR, R, nDCG

    from knowledge.retrievers import FusionConfig

    base, _, extra = config.partition("+")
    mode, fusion = CONFIGS[base]
    retriever = kb.retriever(mode, FusionConfig(**fusion) if fusion else None, candidates=depth,
                             prf="prf" in extra)
    run, latency, evidence = [], defaultdict(list), defaultdict(list)
    for qid, text in queries.items():
        t = time.perf_counter()
        hits = retriever.retrieve(text, depth)
        latency["retrieve"].append(time.perf_counter() - t)
        for stage, seconds in getattr(retriever, "last_timings", {}).items():
            latency[stage].append(seconds)
        if "rerank" in extra and reranker is not None:
            t = time.perf_counter()
            hits = reranker.rerank(text, hits[:rerank_top], rerank_top) + hits[rerank_top:]
            latency["rerank"].append(time.perf_counter() - t)
        if "compress" in extra:
            t = time.perf_counter()
            kept = kb.compress(text, hits[:top_k], budget)
            latency["compress"].append(time.perf_counter() - t)
            _evidence(kb, hits[:top_k], kept, qrels.get(qid, {}), (answers or {}).get(qid), evidence)
        run.extend(ir_measures.ScoredDoc(qid, doc, s) for doc, s in rank_documents(kb, hits).items())
    qrel_list = [ir_measures.Qrel(q, d, s) for q, docs in qrels.items() for d, s in docs.items()]
    metrics = ir_measures.calc_aggregate([nDCG @ 10, R @ 5, R @ 100, RR @ 10], qrel_list, run)
    out = {"nDCG@10": metrics[nDCG @ 10], "R@5": metrics[R @ 5], "R@100": metrics[R @ 100],
           "MRR@10": metrics[RR @ 10]}
    out.update({name: statistics.fmean(v) for name, v in evidence.items()})
    lat = {stage: (statistics.median(v) * 1000, sorted(v)[int(0.95 * (len(v) - 1))] * 1000)
           for stage, v in latency.items()}
    return out, lat


def _evidence(kb, hits, kept, relevant: dict, answers, sink) -> None:
    """Prompt shrink and what compression keeps: relevant top-k passages that keep at
    least one sentence, and reference-answer words still present in the context."""
    from knowledge.tokenize import tokenize

    count = kb.embedder.count_tokens
    before = sum(count(h.chunk.text) for h in hits)
    sink["tokens before"].append(before)
    sink["tokens after"].append(sum(count(c.text) for c in kept))
    rel = {h.chunk.chunk_id for h in hits if relevant.get(h.chunk.source, 0) > 0}
    if rel:
        sink["relevant kept"].append(len(rel & {c.hit.chunk.chunk_id for c in kept}) / len(rel))
    if answers:
        ref = set(tokenize(" ".join(answers)))
        full = set(tokenize(" ".join(h.chunk.text for h in hits)))
        cut = set(tokenize(" ".join(c.text for c in kept)))
        if ref & full:
            sink["answer words kept"].append(len(ref & cut) / len(ref & full))


def main() -> None:
    from common.offline import go_offline

    go_offline()
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", type=Path, required=True)
    ap.add_argument("--split", default="test")
    ap.add_argument("--queries", type=Path, help="folder with queries.jsonl and qrels/<split>.tsv "
                    "over the --data corpus (default: --data itself)")
    ap.add_argument("--config", nargs="+", default=["bm25", "dense", "hybrid", "hybrid-weighted"],
                    help=f"any of {', '.join(CONFIGS)}, optionally with +prf, +rerank, "
                    "+compress (e.g. hybrid-weighted+rerank+compress)")
    ap.add_argument("--embedder", default="auto", help="auto (by the corpus language), or a name/folder")
    ap.add_argument("--chunk-size", type=int, default=220)
    ap.add_argument("--chunk-overlap", type=int, default=40)
    ap.add_argument("--limit-queries", type=int, default=0, help="first N judged queries only")
    ap.add_argument("--cache", type=Path, default=Path(tempfile.gettempdir()) / "docent-eval-cache")
    ap.add_argument("--keep", type=Path, help="keep the knowledge base (and its trained "
                    "reranker) in this folder and reuse it next time")
    ap.add_argument("--reranker-model", type=Path, help="a local cross-encoder folder for +rerank "
                    "(default: the knowledge base's trained reranker)")
    ap.add_argument("--train-reranker", type=int, default=0, metavar="N",
                    help="first train the knowledge base's reranker on N generated questions")
    ap.add_argument("--llm", default="qwen2.5-coder-1.5b", help="model writing the questions")
    ap.add_argument("--train-option", nargs="*", default=[], metavar="KEY=VALUE",
                    help="RerankerTraining fields, e.g. epochs=3 learning_rate=1e-4")
    ap.add_argument("--blend", type=float, nargs="+", default=[0.5],
                    help="weight of the fused order when blending with the reranker's")
    ap.add_argument("--budget", type=int, nargs="+", default=[400],
                    help="+compress: token budgets for the top 5 passages")
    args = ap.parse_args()

    from assistant.settings import load_settings
    from knowledge.embed_cache import CachedEmbedder
    from knowledge.embedders import EmbedderPool, load_embedder

    corpus, queries, qrels = load_beir(args.data, args.split, args.queries)
    if args.limit_queries:
        queries = dict(list(queries.items())[: args.limit_queries])
        qrels = {q: qrels[q] for q in queries}  # unscored queries would count as zeros
    cache = args.cache / "embeddings.sqlite3"
    models_dir = load_settings().paths.models_dir  # for optional embedders (embeddinggemma-300m)
    pool = EmbedderPool(args.embedder, loader=lambda name: CachedEmbedder(
        load_embedder(name, models_dir=models_dir), cache))
    qname = f" (queries {args.queries.name})" if args.queries else ""
    print(f"{args.data.name}/{args.split}{qname}: {len(corpus)} docs, {len(queries)} queries; "
          f"embedder {args.embedder}, chunks {args.chunk_size}/{args.chunk_overlap}")
    with tempfile.TemporaryDirectory() as tmp:
        work = args.keep or Path(tmp)
        t0 = time.perf_counter()
        lib, kb = build_kb(corpus, work, pool, args.chunk_size, args.chunk_overlap)
        embedder = kb.embedder
        print(f"  index: {kb.chunk_count()} chunks in {time.perf_counter() - t0:.0f} s with "
              f"{embedder.name} (embedding cache {embedder.hits} hits, {embedder.misses} misses)")
        if args.train_reranker:
            _train(kb, args.train_reranker, args.llm, args.train_option)
        rerankers = _rerankers(kb, args) if any("+rerank" in c for c in args.config) else {}
        answers = _answers(args.queries or args.data)
        print("| config | nDCG@10 | R@5 | R@100 | MRR@10 | latency p50/p95 ms by stage | compression |")
        print("|---|---|---|---|---|---|---|")
        for config in args.config:
            for label, reranker in (rerankers.items() if "+rerank" in config else [("", None)]):
                for budget in (args.budget if "+compress" in config else [0]):
                    m, lat = evaluate(kb, queries, qrels, config, reranker=reranker,
                                      budget=budget, answers=answers)
                    stages = ", ".join(f"{s} {p50:.0f}/{p95:.0f}" for s, (p50, p95) in lat.items())
                    comp = (f"budget {budget}: {m['tokens before']:.0f} -> {m['tokens after']:.0f} "
                            f"tokens, relevant kept {m.get('relevant kept', float('nan')):.2f}, "
                            f"answer words kept {m.get('answer words kept', float('nan')):.2f}"
                            if budget else "")
                    print(f"| {config}{label} | {m['nDCG@10']:.3f} | {m['R@5']:.3f} | {m['R@100']:.3f} | "
                          f"{m['MRR@10']:.3f} | {stages} | {comp} |", flush=True)
        lib.close()


def _answers(folder: Path) -> dict[str, list[str]]:
    """Reference answers per query id, when the set has them (MedQuAD x LiveQA)."""
    path = folder / "reference_answers.jsonl"
    if not path.is_file():
        return {}
    rows = [json.loads(line) for line in path.open(encoding="utf-8")]
    return {r["_id"]: [a["answer"] for a in r.get("reference_answers", [])] for r in rows}


def _train(kb, questions: int, llm_name: str, options: list[str]) -> None:
    from assistant.llm import LlamaCppLLM
    from common.models import resolve_gguf
    from assistant.settings import load_settings
    from common.progress import drain
    from finetune.reranker import RerankerTraining, train_reranker

    settings = load_settings()
    llm = LlamaCppLLM(resolve_gguf(llm_name, settings.paths.models_dir), n_ctx=2048)
    fields = {f.name: f.type for f in dataclasses.fields(RerankerTraining)}
    extra = {}
    for opt in options:
        key, _, value = opt.partition("=")
        if key not in fields:
            raise SystemExit(f"--train-option: no field {key!r} (fields: {', '.join(fields)})")
        extra[key] = float(value) if "." in value or "e" in value else int(value)
    gen = train_reranker(kb, llm, RerankerTraining(questions=questions, **extra))
    last = [""]

    def show(ev) -> None:
        if ev.stage != last[0] or ev.done == ev.total or ev.done % 50 == 0:
            print(f"  [{ev.stage}] {ev.done}/{ev.total} {ev.message}", flush=True)
            last[0] = ev.stage

    print(f"  trained: {drain(gen, show)}", flush=True)


def _rerankers(kb, args) -> dict:
    from knowledge.rerank import CrossEncoderReranker, current_reranker, reranker_dir

    folder, max_length = args.reranker_model, 256
    if folder is None:
        record = current_reranker(kb.root)
        if record is None:
            raise SystemExit("+rerank: no --reranker-model and the knowledge base has no "
                             "trained reranker (use --train-reranker N with --keep DIR).")
        folder, max_length = reranker_dir(kb.root) / record.path, record.max_length
    return {f" (blend {b})": CrossEncoderReranker(folder, blend=b, max_length=max_length)
            for b in args.blend}


if __name__ == "__main__":
    main()
