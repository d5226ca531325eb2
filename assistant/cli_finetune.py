"""``python -m assistant finetune ...``: datasets, training jobs and their logs (the same
facade calls as the Fine-tune tab)."""
from __future__ import annotations

import sys
import time
from pathlib import Path

from ingest.pipeline import drain

def finetune_parser(sub) -> None:
    ft = sub.add_parser("finetune", help="training data, LoRA / CPT / DPO / ReFT / full jobs")
    ft_sub = ft.add_subparsers(dest="ft_command", required=True)
    data = ft_sub.add_parser("data", help="datasets").add_subparsers(dest="data_command",
                                                                      required=True)
    imp = data.add_parser("import", help="validate and store a JSONL/CSV/parquet file")
    imp.add_argument("file", type=Path)
    imp.add_argument("--name", default="")
    imp.add_argument("--about-kb", default="", help="the knowledge base the questions are "
                     "about: jobs on the dataset are then also evaluated with RAG over it")
    gen = data.add_parser("generate", help="question-answer pairs from a knowledge base")
    gen.add_argument("--kb", dest="gen_kb", help="knowledge base (default: --kb or settings)")
    gen.add_argument("--n", type=int, default=200, help="pairs to ask for, before the filters "
                     "(passages sampled: n / questions per chunk)")
    gen.add_argument("--name", default="")
    gen.add_argument("--raft", type=float, default=0.0,
                     help="share of RAFT-style samples: the question asked as the chat asks, "
                          "its passage among distractors. With --answers quoted, 1 is the "
                          "recipe that improved real answers with RAG (each training step "
                          "~6x slower than plain pairs)")
    gen.add_argument("--no-refusals", action="store_true")
    gen.add_argument("--answers", choices=("written", "quoted"), default="written",
                     help="written: the model answers from the passage in one to three "
                          "sentences; quoted: the passage's own sentences about the question")
    gen.add_argument("--questions-per-chunk", type=int, default=2,
                     help="questions asked per sampled passage (default 2: the held-out "
                          "split then asks about passages the adapter is trained on)")
    data.add_parser("preview", help="first rows of a dataset").add_argument("id")
    data.add_parser("list", help="stored datasets")
    train = ft_sub.add_parser("train", help="queue a training job")
    train.add_argument("--base-model", default="qwen2.5-coder-0.5b",
                       help="installed model name, .gguf file or local HF folder")
    train.add_argument("--data", required=True, help="dataset id or a file to import")
    train.add_argument("--method", choices=("lora", "cpt", "dpo", "reft", "full"), default="lora",
                       help="full: every weight trains (about 16 bytes per parameter; the "
                            "estimate printed first says whether it fits)")
    train.add_argument("--output", default="", help="adapter name")
    train.add_argument("--wait", action="store_true", help="follow progress until the end")
    train.add_argument("--force", action="store_true", help="start despite the memory estimate")
    for flag, kind, key in (("--lora-target-modules", str, "target_modules"), ("--r", int, "r"),
                            ("--alpha", int, "alpha"), ("--micro-batch-size", int, "micro_batch_size"),
                            ("--grad-accum", int, "grad_accum"), ("--epochs", float, "epochs"),
                            ("--lr", float, "lr"), ("--max-steps", int, "max_steps"),
                            ("--max-length", int, "max_length"), ("--save-steps", int, "save_steps"),
                            ("--beta", float, "beta"), ("--block-size", int, "block_size"),
                            ("--layers", str, "layers"), ("--rank", int, "rank"),
                            ("--positions", str, "positions"),
                            ("--weight-decay", float, "weight_decay")):
        train.add_argument(flag, type=kind, dest=f"spec_{key}", default=None, metavar=key.upper())
    train.add_argument("--gradient-checkpointing", action="store_true", default=None,
                       dest="spec_gradient_checkpointing", help="full: keep fewer activations")
    ft_sub.add_parser("jobs", help="training jobs, newest first")
    _adapters_parser(ft_sub)
    for name in ("cancel", "resume", "log", "show"):
        ft_sub.add_parser(name).add_argument("id")


def _adapters_parser(ft_sub) -> None:
    adapters = ft_sub.add_parser("adapters", help="registered adapters").add_subparsers(
        dest="adapters_command", required=True)
    adapters.add_parser("list", help="registered adapters, oldest first")
    comb = adapters.add_parser("combine", help="merge two or more LoRA adapters of one "
                               "base into a new adapter")
    comb.add_argument("ids", nargs="+", help="adapter ids or names (at least two)")
    comb.add_argument("--weights", nargs="+", type=float, default=None,
                      help="one weight per adapter, in order (default: equal shares)")
    comb.add_argument("--name", default="", help="the new adapter's name")
    comb.add_argument("--combination", choices=("cat", "linear", "svd"), default="cat",
                      help="peft's combination: cat (exact, ranks add up), linear (same "
                           "ranks, approximate) or svd (exact sum truncated to the largest rank)")


def cmd_finetune(assistant, args) -> int:
    import json

    cmd = args.ft_command
    if cmd == "data":
        return _cmd_finetune_data(assistant, args)
    if cmd == "adapters":
        return _cmd_adapters(assistant, args)
    if cmd == "train":
        spec = {k[5:]: v for k, v in vars(args).items() if k.startswith("spec_") and v is not None}
        ref = Path(args.data).expanduser()
        data_id = assistant.datasets.import_file(ref).id if ref.is_file() else args.data
        print(assistant.training.estimate(args.method, spec, args.base_model, data_id).describe())
        job = assistant.training.start(args.method, spec, args.base_model, data_id,
                                       name=args.output, force=args.force)
        print(f"queued job {job.id}")
        return _follow(assistant, job.id) if args.wait else 0
    if cmd == "jobs":
        for job in assistant.training.jobs():
            print(job.describe())
        return 0
    if cmd == "log":
        print(assistant.training.log(args.id))
        return 0
    action = {"cancel": assistant.training.cancel, "resume": assistant.training.resume,
              "show": assistant.training.job}[cmd]
    job = action(args.id)
    print(json.dumps(job.to_json(), indent=2) if cmd == "show" else job.describe())
    return _follow(assistant, job.id) if cmd == "resume" and getattr(args, "wait", False) else 0


def _cmd_finetune_data(assistant, args) -> int:
    import json

    if args.data_command == "import":
        rec = assistant.datasets.import_file(args.file, args.name, args.about_kb)
    elif args.data_command == "generate":
        gen = assistant.datasets.generate(args.gen_kb or args.kb, args.n, args.name,
                                         raft_fraction=args.raft, refusals=not args.no_refusals,
                                         questions_per_chunk=args.questions_per_chunk,
                                         answer_style=args.answers)
        rec = drain(gen, lambda ev: print(f"\r{ev.stage} {ev.index}/{ev.total} kept {ev.kept}",
                                          end="", file=sys.stderr, flush=True))
        print(file=sys.stderr)
    elif args.data_command == "preview":
        for row in assistant.datasets.preview(args.id, 5):
            print(json.dumps(row, ensure_ascii=False))
        return 0
    else:
        for rec in assistant.datasets.list():
            print(f"{rec.id}  {rec.shape:10s} train {rec.train}  held-out {rec.heldout}  {rec.origin}")
        return 0
    print(f"dataset {rec.id}: {rec.shape}, {rec.train} train + {rec.heldout} held-out, sha256 {rec.hash[:12]}")
    return 0


def _cmd_adapters(assistant, args) -> int:
    if args.adapters_command == "combine":
        rec = assistant.serving.combine_adapters(args.ids, args.weights, args.name,
                                                 args.combination)
        served = f"GGUF {rec.gguf}" if rec.gguf else f"no GGUF: {rec.gguf_error}"
        print(f"adapter {rec.adapter_id} ({rec.name!r}): {rec.spec['combination_type']} of "
              f"{', '.join(rec.spec['combined_from'])}, rank {rec.spec['r']}, {served}")
        return 0
    for rec in assistant.serving.adapters.list():
        print(f"{rec.adapter_id}  {rec.method:5s} {rec.name!r} on {rec.base_model}"
              + (f"  combined from {', '.join(rec.spec['combined_from'])}"
                 if rec.spec.get("combined_from") else ""))
    return 0


def _follow(assistant, job_id: str) -> int:
    last = None
    while True:
        job = assistant.training.job(job_id)
        line = job.describe()
        if line != last:
            print(line, flush=True)
            last = line
        if job.status not in ("queued", "running"):
            return 0 if job.status == "succeeded" else 1
        time.sleep(2)
