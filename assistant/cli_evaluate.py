"""``python -m assistant evaluate``: real questions asked of the base model and of
adapters, with RAG, scored against reference answers (the Fine-tune tab's "Real
questions" panel, run here in-process: stop the app first, it holds the knowledge base).
"""
from __future__ import annotations

import sys
import time
from pathlib import Path

from assistant.evaluation import comparison, read_rows, summarize


def evaluate_parser(sub) -> None:
    ev = sub.add_parser("evaluate", help="ask a question set of the base model and adapters "
                        "with RAG and compare them (citations, token-F1, ROUGE-L, refusals)")
    ev.add_argument("--questions", type=Path, required=True, help="JSONL: question, answers "
                    "(or answer), relevant (documents, optional), id (optional)")
    ev.add_argument("--models", nargs="+", default=None, help="model ids (GET /v1/models, "
                    "`finetune adapters list`); default: the base model and the newest adapter")
    ev.add_argument("--limit", type=int, default=0, help="ask only the first N questions")
    ev.add_argument("--out", type=Path, default=None, help="where the replies go (JSONL); an "
                    "existing file is resumed. Default: <data dir>/evaluations/<time>.jsonl")


def cmd_evaluate(assistant, args) -> int:
    models = args.models or default_models(assistant)
    out = args.out or (assistant.paths.data_dir / "evaluations"
                       / time.strftime("%Y%m%d-%H%M%S.jsonl"))
    out.parent.mkdir(parents=True, exist_ok=True)
    print(f"asking {', '.join(models)}; replies in {out}", file=sys.stderr)
    for done, total, message in assistant.evaluations.run_here(
            args.questions, models, out, args.kb, args.limit):
        print(f"\r{message}", end="", file=sys.stderr, flush=True)
    print(file=sys.stderr)
    headers, rows = comparison(summarize(read_rows(out)))
    print("\t".join(headers))
    for row in rows:
        print("\t".join("-" if v is None else str(v) for v in row))
    return 0


def default_models(assistant) -> list[str]:
    """The base model and the newest adapter (when there is one)."""
    ids = assistant.serving.model_ids()
    return ids[:1] + ids[-1:] if len(ids) > 1 else ids
