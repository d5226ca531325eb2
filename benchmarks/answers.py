"""Answer quality with the default configuration, through the same facade the app uses.

    # MedQuAD x LiveQA: cited-relevant share, token-F1 / ROUGE-L against the experts'
    # answers, abstention rate. KB: a folder kept by `benchmarks.retrieval --keep DIR`
    python -m benchmarks.answers medquad --data ../shared/data/retrieval/medquad_liveqa \
        --kb-dir DIR [--limit N] [--model qwen2.5-coder-1.5b]
    # PubMedQA dev: yes/no/maybe accuracy with RAG over the abstracts vs closed book
    python -m benchmarks.answers pubmedqa --data ../shared/data/qa/pubmedqa/pqal_dev.json \
        --work DIR [--limit N]

Prints one JSON line per question to --out (default: none) and a summary table.
"""
from __future__ import annotations

import argparse
import ast
import csv
import json
import re
import statistics
import time
from collections import Counter
from pathlib import Path

from benchmarks.common import bench_settings
from common.text import MARKER
from finetune.evaluate import rouge_l as _rouge_l, token_f1 as _token_f1

def token_f1(pred: str, ref: str) -> float:
    """SQuAD-style token F1, markers left out.

    >>> round(token_f1("take 500 mg daily [1]", "500 mg twice daily"), 2)
    0.75
    """
    return _token_f1(MARKER.sub(" ", pred), ref)


def rouge_l(pred: str, ref: str) -> float:
    """ROUGE-L F-measure, markers left out.

    >>> round(rouge_l("the cat sat on the mat [2]", "the cat is on the mat"), 2)
    0.83
    """
    return _rouge_l(MARKER.sub(" ", pred), ref)


def _qrels(folder: Path) -> dict[str, set[str]]:
    out: dict[str, set[str]] = {}
    with (folder / "qrels" / "test.tsv").open() as f:
        rows = csv.reader(f, delimiter="\t")
        next(rows)
        for q, d, s in rows:
            if int(s) > 0:
                out.setdefault(q, set()).add(d)
    return out


def _references(folder: Path) -> dict[str, list[str]]:
    """Reference answers per query: the experts' (reference_answers.jsonl; only a few
    queries have them in the shared copy), else the MedQuAD answers judged excellent (3)
    for it, which are expert-written answers too."""
    refs: dict[str, list[str]] = {}
    for r in map(json.loads, (folder / "reference_answers.jsonl").open()):
        answers = r["reference_answers"]
        answers = json.loads(answers) if isinstance(answers, str) else answers
        if answers:
            refs[r["_id"]] = [a["answer"] for a in answers]
    corpus = {d["_id"]: d["text"] for d in map(json.loads, (folder / "corpus.jsonl").open())}
    with (folder / "qrels" / "test.tsv").open() as f:
        rows = csv.reader(f, delimiter="\t")
        next(rows)
        excellent: dict[str, list[str]] = {}
        for q, d, s in rows:
            if int(s) == 3 and d in corpus:
                excellent.setdefault(q, []).append(corpus[d])
    for q, texts in excellent.items():
        refs.setdefault(q, texts)
    return refs


def _record_model_text(llm) -> list[str]:
    """The pieces the model streams for the current answer (before any filter), so a
    withheld answer can be read."""
    pieces: list[str] = []
    original = llm.stream_chat

    def recording(*args, **kwargs):
        for piece in original(*args, **kwargs):
            pieces.append(piece)
            yield piece

    llm.stream_chat = recording
    return pieces


def _holders(assistant, sources) -> dict[str, set[str]]:
    """For each source chunk, the documents holding its text: its own and those whose
    identical chunk was deduplicated into it at ingestion (as ``benchmarks.retrieval``
    credits them), so citing a passage that a judged document also holds counts."""
    out: dict[str, set[str]] = {src.chunk_id: {src.source} for src in sources}
    for src in sources:
        kb = assistant.library.get(src.kb)
        for doc in kb.catalog.duplicate_sources([src.chunk_id]).get(src.chunk_id, []):
            out[src.chunk_id].add(doc)
    return out


def medquad(args) -> None:
    from assistant.core import Assistant

    refs = _references(args.data)
    queries = [json.loads(line) for line in (args.data / "queries.jsonl").open()]
    qrels = _qrels(args.data)
    queries = [q for q in queries if q["_id"] in qrels][: args.limit or None]
    s = bench_settings(args.kb_dir, default_kb="eval", llm={"model": args.model, "temperature": 0.0})
    a = Assistant(s)
    raw = _record_model_text(a.serving.llm)
    rows = []
    for n, q in enumerate(queries, 1):
        t0 = time.perf_counter()
        raw.clear()
        answer = a.chat.answer(q["text"])
        holders = _holders(a, answer.sources)
        cited = {doc for c in answer.citations for doc in holders.get(c.chunk_id, {c.source})}
        given = {doc for docs in holders.values() for doc in docs}
        ref_texts = refs.get(q["_id"], [])
        body = answer.text.split("\n\n" + answer.notices[0])[0] if answer.notices else answer.text
        row = {"id": q["_id"], "refused": answer.refused, "cited_relevant": bool(cited & qrels[q["_id"]]),
               "retrieved_relevant": bool(given & qrels[q["_id"]]),
               "cited": len(cited), "f1": max((token_f1(body, r) for r in ref_texts), default=None),
               "rouge_l": max((rouge_l(body, r) for r in ref_texts), default=None),
               "seconds": time.perf_counter() - t0, "first_token_s": answer.timings.get("first_token_s"),
               "answer": answer.text, "model_text": "".join(raw),
               "sources": [{"n": src.number, "doc": src.source, "chunk_id": src.chunk_id,
                            "relevant": bool(holders[src.chunk_id] & qrels[q["_id"]]),
                            "cited": any(c.number == src.number for c in answer.citations)}
                           for src in answer.sources]}
        rows.append(row)
        _dump(args, row)
        print(f"{n}/{len(queries)} {row['refused'] or 'answered'} cited_relevant={row['cited_relevant']} "
              f"f1={row['f1'] or 0:.3f} {row['seconds']:.1f} s", flush=True)
    answered = [r for r in rows if not r["refused"]]
    scored = [r for r in rows if r["f1"] is not None]
    print(f"\nMedQuAD x LiveQA, {len(rows)} questions with judged-relevant documents, {args.model}:")
    print(f"  citations include a judged-relevant document: {_share(rows, 'cited_relevant')} of all, "
          f"{_share(answered, 'cited_relevant')} of answered")
    print(f"  a judged-relevant document among the sources given: {_share(rows, 'retrieved_relevant')}")
    print(f"  abstained: {len(rows) - len(answered)}/{len(rows)} "
          f"({Counter(r['refused'] for r in rows if r['refused'])})")
    print(f"  token-F1 {statistics.mean(r['f1'] for r in scored):.3f}, ROUGE-L "
          f"{statistics.mean(r['rouge_l'] for r in scored):.3f} over {len(scored)} questions with "
          "a reference (best over the references; abstentions score their text)")
    print(f"  seconds per answer: median {statistics.median(r['seconds'] for r in rows):.1f}")
    a.close()


def pubmedqa(args) -> None:
    from assistant.core import Assistant
    from ingest.pipeline import IngestItem, drain

    items = json.loads(args.data.read_text())
    ids = list(items)[: args.limit or None]
    docs = args.work / "docs"
    docs.mkdir(parents=True, exist_ok=True)
    # the corpus: every abstract of the set (the item's own is among them)
    for pid, item in items.items():
        path = docs / f"{pid}.txt"
        if not path.exists():
            contexts = item["CONTEXTS"]
            contexts = ast.literal_eval(contexts) if isinstance(contexts, str) else contexts
            path.write_text("\n\n".join(contexts), encoding="utf-8")
    s = bench_settings(args.work / "data", default_kb="pubmedqa",
                       llm={"model": args.model, "temperature": 0.0, "max_tokens": 48})
    a = Assistant(s)
    if not a.documents.list("pubmedqa"):
        t0 = time.perf_counter()
        drain(a.documents.ingest([IngestItem(p, p.name, str(p)) for p in sorted(docs.glob("*.txt"))], "pubmedqa"))
        print(f"indexed {len(items)} abstracts in {time.perf_counter() - t0:.0f} s", flush=True)
    suffix = " Answer yes, no or maybe first, then give one short reason."
    results = {"rag": [], "closed": []}
    for n, pid in enumerate(ids, 1):
        item = items[pid]
        gold = item["final_decision"]
        rag = a.chat.answer(item["QUESTION"] + suffix, "pubmedqa")
        closed = "".join(a.chat.plain([{"role": "user", "content": item["QUESTION"] + suffix}], 48, 0.0))
        row = {"id": pid, "gold": gold, "rag": decision(rag.text) if not rag.refused else "abstain",
               "closed": decision(closed), "refused": rag.refused,
               "own_abstract_retrieved": any(src.source == f"{pid}.txt" for src in rag.sources)}
        for mode in results:
            results[mode].append(row[mode] == gold)
        _dump(args, row)
        print(f"{n}/{len(ids)} gold={gold} rag={row['rag']} closed={row['closed']}", flush=True)
    print(f"\nPubMedQA dev, {len(ids)} questions, {args.model}: accuracy with RAG "
          f"{statistics.mean(results['rag']):.3f}, closed book {statistics.mean(results['closed']):.3f}")
    a.close()


def decision(text: str) -> str:
    """The first yes/no/maybe in an answer ("unknown" when there is none).

    >>> decision("No. The study found no difference [1].")
    'no'
    """
    m = re.search(r"\b(yes|no|maybe)\b", text.lower())
    return m.group(1) if m else "unknown"


def _share(rows: list[dict], key: str) -> str:
    return f"{sum(r[key] for r in rows)}/{len(rows)} ({sum(r[key] for r in rows) / max(1, len(rows)):.0%})"


def _dump(args, row: dict) -> None:
    if args.out:
        with args.out.open("a") as f:
            f.write(json.dumps(row) + "\n")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("task", choices=["medquad", "pubmedqa"])
    ap.add_argument("--data", type=Path, required=True)
    ap.add_argument("--kb-dir", type=Path, help="medquad: data dir holding knowledge/eval")
    ap.add_argument("--work", type=Path, help="pubmedqa: a work dir (index kept between runs)")
    ap.add_argument("--model", default="qwen2.5-coder-1.5b")
    ap.add_argument("--limit", type=int, default=0)
    ap.add_argument("--out", type=Path)
    args = ap.parse_args()
    (medquad if args.task == "medquad" else pubmedqa)(args)


if __name__ == "__main__":
    main()
