"""How the evidence gate's and the scope guardrail's thresholds were set.

    # gate: best-hit similarity of answerable questions vs the same questions with their
    # judged-relevant documents taken away (KB kept by `benchmarks.retrieval --keep DIR`)
    python -m benchmarks.guard_calibration gate --kb-dir DIR --data ../shared/data/retrieval/scifact --split train
    # guardrail: refusal precision/recall on tests/data/scope_questions.jsonl (+ LiveQA
    # questions as more in-scope ones) against a medical knowledge base; --questions
    # benchmarks/data/scope_heldout.jsonl (without --liveqa): the 48 written afterwards
    python -m benchmarks.guard_calibration scope --kb-dir DIR --liveqa ../shared/data/retrieval/medquad_liveqa
"""
from __future__ import annotations

import argparse
import csv
import json
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent


def _open(kb_dir: Path, name: str):
    from knowledge.embedders import EmbedderPool
    from knowledge.library import Library

    return Library(kb_dir / "knowledge", EmbedderPool("auto"), 220, 40).get(name)


def gate(args) -> None:
    kb = _open(args.kb_dir, args.kb)
    queries = {q["_id"]: q["text"] for q in map(json.loads, (args.data / "queries.jsonl").open())}
    qrels: dict[str, set[str]] = {}
    with (args.data / "qrels" / f"{args.split}.tsv").open() as f:
        rows = csv.reader(f, delimiter="\t")
        next(rows)
        for q, d, s in rows:
            if int(s) > 0:
                qrels.setdefault(q, set()).add(d)
    dense = kb.retriever("dense")
    answerable, removed = [], []
    for qid in [q for q in queries if q in qrels][: args.limit]:
        hits = dense.retrieve(queries[qid], 60)
        if any(h.chunk.source in qrels[qid] for h in hits):
            answerable.append(hits[0].scores["dense"])
        others = [h.scores["dense"] for h in hits if h.chunk.source not in qrels[qid]]
        if others:
            removed.append(others[0])
    sup, uns = np.array(answerable), np.array(removed)
    print(f"{args.data.name} ({kb.embedder.name}): {len(sup)} answerable, {len(uns)} with their "
          "relevant documents removed")
    for p in (5, 10, 20):
        t = np.percentile(sup, p)
        print(f"  threshold {t:.3f} (answerable p{p}): holds back {np.mean(sup < t):.0%} of "
              f"answerable, {np.mean(uns < t):.0%} of unsupported")


def scope(args) -> None:
    from assistant.guard import CALIBRATED, STRONG_SUPPORT, ScopeGuard, threshold_for
    from assistant.profiles import MEDICAL_SUBJECT
    from knowledge.embedders import E5_NAME, EmbedderPool

    kb = _open(args.kb_dir, args.kb)
    e5 = EmbedderPool("auto").get(E5_NAME)
    guard = ScopeGuard(lambda q: e5.embed_queries([q])[0], lambda p: e5.embed_passages([p])[0],
                       args.threshold)
    rows = [json.loads(line) for line in args.questions.open(encoding="utf-8")]
    if args.liveqa:
        rows += [{"question": q["text"], "lang": "en", "in_scope": True, "liveqa": True}
                 for q in map(json.loads, (args.liveqa / "queries.jsonl").open())]
    threshold = threshold_for(kb.manifest.embedder, None) or CALIBRATED[E5_NAME]
    tp = fp = fn = 0
    for r in rows:
        hits = kb.retriever("dense").retrieve(r["question"], 5)
        supported = bool(hits) and hits[0].scores["dense"] >= threshold
        strong = bool(hits) and hits[0].scores["dense"] >= threshold + STRONG_SUPPORT
        refused = not guard.check(MEDICAL_SUBJECT, r["question"], supported, strong).in_scope
        tp += refused and not r["in_scope"]
        fp += refused and r["in_scope"]
        fn += not refused and not r["in_scope"]
        if refused == r["in_scope"]:
            print(f"  wrong: in_scope={r['in_scope']} {r['lang']} {r['question'][:70]}")
    print(f"{len(rows)} questions: refusal precision {tp / max(1, tp + fp):.3f}, recall "
          f"{tp / max(1, tp + fn):.3f} (refused {tp} out-of-scope, {fp} in-scope; missed {fn})")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("what", choices=["gate", "scope"])
    ap.add_argument("--kb-dir", type=Path, required=True)
    ap.add_argument("--kb", default="eval")
    ap.add_argument("--data", type=Path)
    ap.add_argument("--split", default="test")
    ap.add_argument("--limit", type=int, default=300)
    ap.add_argument("--questions", type=Path, default=ROOT / "tests" / "data" / "scope_questions.jsonl")
    ap.add_argument("--liveqa", type=Path)
    ap.add_argument("--threshold", type=float, default=0.77)
    args = ap.parse_args()
    (gate if args.what == "gate" else scope)(args)


if __name__ == "__main__":
    main()
