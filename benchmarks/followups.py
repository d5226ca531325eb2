"""Follow-ups that try to slip past the scope guardrail, and legitimate elliptical ones,
in English, Simplified and Traditional Chinese and Vietnamese
(``benchmarks/data/followups.jsonl``, written by hand), asked with the real default
models over a knowledge base of the MedQuAD passages on the conversations' topics.

Reports slips (an off-topic follow-up answered), wrongful refusals (a legitimate one
refused as out of scope) and the rewrites that were used or rejected.

    python -m benchmarks.followups [--set benchmarks/data/followups.jsonl]
        [--corpus ../shared/data/retrieval/medquad_liveqa] [--model qwen2.5-coder-1.5b]
"""
from __future__ import annotations

import argparse
import json
import tempfile
from collections import Counter
from pathlib import Path

from benchmarks.common import SHARED_DATA, bench_settings

TOPICS = ("Diabetes", "Asthma", "Hepatitis A", "High Blood Pressure", "Shingles",
          "Chickenpox")
HERE = Path(__file__).resolve().parent


def topic_documents(corpus: Path, folder: Path) -> list[Path]:
    """The corpus passages whose title names one of ``TOPICS``, one text file each."""
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    with (corpus / "corpus.jsonl").open(encoding="utf-8") as f:
        for line in f:
            row = json.loads(line)
            title = row["title"].split(" ?")[0]
            if any(title.endswith(" " + t) or f" {t} " in title + " " for t in TOPICS):
                path = folder / f"{row['_id']}.txt"
                path.write_text(f"{title}\n\n{row['text']}\n", encoding="utf-8")
                paths.append(path)
    return paths


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--set", type=Path, default=HERE / "data" / "followups.jsonl")
    ap.add_argument("--corpus", type=Path, default=SHARED_DATA / "retrieval" / "medquad_liveqa")
    ap.add_argument("--model", default="qwen2.5-coder-1.5b")
    args = ap.parse_args()

    from assistant.core import Assistant
    from ingest.pipeline import drain

    cases = [json.loads(line) for line in args.set.open(encoding="utf-8") if line.strip()]
    with tempfile.TemporaryDirectory() as tmp:
        settings = bench_settings(Path(tmp) / "data", llm={"model": args.model,
                                                           "temperature": 0.0,
                                                           "max_tokens": 96})
        a = Assistant(settings)
        docs = topic_documents(args.corpus, Path(tmp) / "docs")
        drain(a.documents.ingest(docs))
        print(f"{len(docs)} MedQuAD passages on {', '.join(TOPICS)}")
        counts: Counter = Counter()
        print("\n| lang | in scope | follow-up | outcome | search query | rewrite |")
        print("|---|---|---|---|---|---|")
        for case in cases:
            answer = list(a.chat.ask(case["question"], history=[tuple(t) for t in case["turns"]]))[-1]
            lang, ok = case["lang"], case["in_scope"]
            outcome = answer.refused or "answered"
            if not ok and not answer.refused:
                counts[(lang, "slip")] += 1
            if ok and answer.refused == "out_of_scope":
                counts[(lang, "wrongful")] += 1
            if ok and answer.refused == "no_evidence":
                counts[(lang, "no_evidence")] += 1
            counts[(lang, "in" if ok else "out")] += 1
            steps = "; ".join(s.split(":")[0] for s in answer.steps) or "-"
            print(f"| {lang} | {ok} | {case['question']} | {outcome} | "
                  f"{answer.search_query} | {steps} |")
        a.close()
    langs = sorted({c["lang"] for c in cases})
    print("\n| lang | attacks | slips | legitimate | refused as out of scope | "
          "held back for no evidence |")
    print("|---|---|---|---|---|---|")
    for lang in langs + ["all"]:
        pick = langs if lang == "all" else [lang]
        s = {k: sum(counts[(x, k)] for x in pick)
             for k in ("out", "slip", "in", "wrongful", "no_evidence")}
        print(f"| {lang} | {s['out']} | {s['slip']} | {s['in']} | {s['wrongful']} | "
              f"{s['no_evidence']} |")


if __name__ == "__main__":
    main()
