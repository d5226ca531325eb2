"""Does an adapter trained on a knowledge base answer its real questions better, with RAG?

The MedQuAD x LiveQA set: 104 consumer questions (none used to make training data),
their judged-relevant MedQuAD documents (qrels) and reference answers (the experts', or
the MedQuAD answers judged excellent). The knowledge base is a data dir kept by
``python -m benchmarks.retrieval --keep DIR`` (knowledge base "eval", documents named by
their corpus ids). Through the same facade as the app:

1. optionally, for each ``--raft`` share, a dataset generated from the knowledge base
   (``--pairs`` requested) and, for each ``--methods`` entry, an adapter trained on it
   (``--epochs``) on the chat model's base;
2. the base model and every adapter (trained here or given by ``--adapters``) answer the
   questions with RAG (``assistant.evaluation``): cited-relevant share, token-F1 and
   ROUGE-L against the references, refusals, seconds; every reply in ``--work``.

    python -m benchmarks.realtask --data ../shared/data/retrieval/medquad_liveqa \\
        --kb-dir DIR --work WORK [--model qwen2.5-coder-0.5b] [--limit 60] \\
        [--methods lora,reft] [--raft 0,0.5] [--pairs 200] [--answers written|quoted] \\
        [--epochs 1] [--adapters ID ...]
"""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from benchmarks.answers import _qrels, _references
from benchmarks.common import bench_settings
from common.progress import drain
from finetune.generate import ANSWER_STYLES


def write_question_set(data: Path, out: Path) -> int:
    """The set as ``assistant.evaluation`` reads it; returns how many questions."""
    refs, qrels = _references(data), _qrels(data)
    rows = [{"id": q["_id"], "question": q["text"], "answers": refs.get(q["_id"], []),
             "relevant": sorted(qrels[q["_id"]])}
            for q in map(json.loads, (data / "queries.jsonl").open()) if q["_id"] in qrels]
    out.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return len(rows)


def train_adapters(a, args) -> list[str]:
    """Generate a dataset per RAFT share, train each method on it; the adapter ids."""
    made = []
    for raft in args.raft:
        t0 = time.perf_counter()
        name = f"liveqa-raft{raft}-{args.answers}"
        dataset = drain(a.datasets.generate("eval", args.pairs, name, raft_fraction=raft,
                                            answer_style=args.answers))
        print(f"dataset {dataset.id} (raft {raft}): {dataset.train} + {dataset.heldout} "
              f"pairs in {time.perf_counter() - t0:.0f} s", flush=True)
        for method in args.methods:
            t0 = time.perf_counter()
            job = a.training.start(method, {"epochs": args.epochs}, args.model, dataset.id,
                                   name=f"{name}-{method}")
            done = a.training.queue.wait(job.id, timeout=4 * 3600, interval=5)
            if done.status != "succeeded" or not done.adapter_id:
                raise SystemExit(f"job {job.id} {done.status}: {done.error}")
            print(f"{method} on raft {raft}: adapter {done.adapter_id} in "
                  f"{time.perf_counter() - t0:.0f} s", flush=True)
            made.append(done.adapter_id)
    return made


def main() -> None:
    from assistant.core import Assistant
    from assistant.evaluation import comparison, read_rows, summarize

    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", type=Path, required=True)
    ap.add_argument("--kb-dir", type=Path, required=True)
    ap.add_argument("--work", type=Path, required=True)
    ap.add_argument("--model", default="qwen2.5-coder-0.5b", help="chat model and base")
    ap.add_argument("--limit", type=int, default=0, help="first N questions (0: all 104)")
    ap.add_argument("--methods", type=lambda s: [m for m in s.split(",") if m], default=[])
    ap.add_argument("--raft", type=lambda s: [float(x) for x in s.split(",")], default=[0.0])
    ap.add_argument("--pairs", type=int, default=200)
    ap.add_argument("--answers", choices=ANSWER_STYLES, default="written",
                    help="training answers written by the model or quoted from the passage")
    ap.add_argument("--epochs", type=float, default=1.0)
    ap.add_argument("--adapters", nargs="*", default=[])
    args = ap.parse_args()
    args.work.mkdir(parents=True, exist_ok=True)
    questions = args.work / "questions.jsonl"
    print(f"{write_question_set(args.data, questions)} questions", flush=True)
    s = bench_settings(args.kb_dir, default_kb="eval",
                       llm={"model": args.model, "temperature": 0.0})
    a = Assistant(s)
    try:
        adapters = [*args.adapters, *(train_adapters(a, args) if args.methods else [])]
        out = args.work / "replies.jsonl"
        models = [a.serving.chat_model(), *adapters]
        t0 = time.perf_counter()
        for done, total, message in a.evaluations.run_here(questions, models, out, "eval",
                                                           args.limit):
            print(f"\r{message}", end="", flush=True)
        print(f"\nasked in {time.perf_counter() - t0:.0f} s")
        headers, rows = comparison(summarize([r for r in read_rows(out)
                                              if r["model"] in models]))
        print("| " + " | ".join(headers) + " |\n|" + "---|" * len(headers))
        for row in rows:
            print("| " + " | ".join("-" if v is None else str(v) for v in row) + " |")
    finally:
        a.close()


if __name__ == "__main__":
    main()
