"""Command line: ``python -m assistant {ingest,ask,doctor,kb,models,canary,serve}``."""
from __future__ import annotations

import argparse
import logging
import sys
import time
from pathlib import Path

from common.offline import go_offline

go_offline()

from common.errors import DocentError  # noqa: E402
from assistant.cli_finetune import cmd_finetune, finetune_parser  # noqa: E402
from assistant.cli_users import cmd_users, users_parser  # noqa: E402
from assistant.cli_evaluate import cmd_evaluate, evaluate_parser  # noqa: E402
from assistant.settings import load_settings  # noqa: E402
from ingest.pipeline import drain  # noqa: E402


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m assistant", description="Docent, offline document assistant.")
    p.add_argument("--config", help="settings file (TOML or JSON); default $DOCENT_CONFIG")
    p.add_argument("--data-dir", help="override the data dir")
    p.add_argument("--kb", help="knowledge base (default: settings.default_kb); for ask, "
                   "several separated by commas are searched together")
    sub = p.add_subparsers(dest="command", required=True)
    ing = sub.add_parser("ingest", help="add files or folders to a knowledge base")
    ing.add_argument("paths", nargs="+", type=Path)
    ing.add_argument("--password", help="password for encrypted PDFs in this batch")
    sync = sub.add_parser("sync", help="make a knowledge base match a folder (add, change, delete)")
    sync.add_argument("folder", type=Path)
    sync.add_argument("--watch", action="store_true", help="keep syncing until interrupted")
    sync.add_argument("--interval", type=float, default=10.0, help="seconds between syncs with --watch")
    ask = sub.add_parser("ask", help="ask a question; the answer streams, then its sources")
    ask.add_argument("question")
    ask.add_argument("--chat", metavar="ID", help="continue stored conversation ID "
                     "('new' starts one over --kb and prints its id)")
    sub.add_parser("doctor", help="print settings, models, versions and problems")
    kb = sub.add_parser("kb", help="knowledge bases")
    kb_sub = kb.add_subparsers(dest="kb_command", required=True)
    kb_sub.add_parser("list")
    create = kb_sub.add_parser("create")
    create.add_argument("name")
    create.add_argument("--embedder", help="auto (default: from the first document's language), "
                        "an installed embedder, or a sentence-transformers folder")
    kb_sub.add_parser("delete").add_argument("name")
    ren = kb_sub.add_parser("rename")
    ren.add_argument("old")
    ren.add_argument("new")
    kb_sub.add_parser("docs", help="documents in --kb")
    train = kb_sub.add_parser("train-reranker", help="train --kb's own reranker on questions "
                              "the local model writes for its passages (minutes)")
    train.add_argument("--questions", type=int, default=None,
                       help="how many questions to generate (default: settings)")
    kb_sub.add_parser("status", help="--kb's embedder, size and reranker")
    reembed = kb_sub.add_parser("reembed", help="embed --kb again in the background, "
                                "searchable meanwhile (default: the multilingual embedder)")
    reembed.add_argument("--embedder", help="e.g. embeddinggemma-300m (after `make "
                         "embeddinggemma`)")
    chk = kb_sub.add_parser("check", help="do --kb's catalog, vectors and BM25 agree? "
                            "(missing, orphaned, duplicate entries)")
    chk.add_argument("--repair", action="store_true", help="make them agree")
    chk.add_argument("--all", action="store_true", help="every knowledge base")
    kb_sub.add_parser("reread", help="read --kb's documents that an older Docent read again "
                      "(e.g. PDFs from before section headings were found)")
    _chats_parser(sub)
    _task_parser(sub)  # document tasks
    finetune_parser(sub)  # fine-tuning (assistant/cli_finetune.py)
    users_parser(sub)  # accounts (assistant/cli_users.py)
    evaluate_parser(sub)  # the real-task evaluation (assistant/cli_evaluate.py)
    models = sub.add_parser("models", help="assemble and check the default chat models")
    models.add_argument("names", nargs="*", help="default: the selected model")
    canary = sub.add_parser("canary", help="prove the llama.cpp build runs on this CPU: each "
                            "default model generates a few tokens in a child process")
    canary.add_argument("--server", default="", metavar="PATH",
                        help="llama-server to check (default: the venv's, else PATH)")
    canary.add_argument("--timeout", type=float, default=300.0,
                        help="seconds each check may take (default 300)")
    return p


def _progress(ev) -> None:
    bar = "#" * int(ev.fraction * 30)
    done = ev.stage in ("done", "failed", "unchanged", "deleted")
    print(f"\r[{bar:<30}] {ev.index + 1}/{ev.total} {ev.stage:9s} {ev.source[:50]:50s}",
          end="\n" if done else "", file=sys.stderr, flush=True)


def _print_report(report) -> None:
    for r in report.results:
        if r.status == "failed":
            detail = r.reason
        elif r.status == "deleted":
            detail = "removed (file gone)"
        else:
            detail = f"{r.chunks} chunks, {r.pages} pages" + (
                f", {r.duplicates} duplicate chunks" if r.duplicates else "") + (
                f" ({r.reason})" if r.reason else "")
        print(f"{r.status:9s} {r.source}: {detail}")
    print(report.summary())


def _cmd_ingest(assistant, args) -> int:
    missing = [p for p in args.paths if not p.exists()]
    if missing:
        print(f"Not found: {', '.join(map(str, missing))}", file=sys.stderr)
        return 2
    report = drain(assistant.documents.ingest(args.paths, args.kb, password=args.password),
                   _progress)
    _print_report(report)
    if not report.results:
        print("No supported files found.", file=sys.stderr)
        return 2
    return 1 if report.failed and not report.succeeded and not report.unchanged else 0


def _cmd_sync(assistant, args) -> int:
    while True:
        report = drain(assistant.documents.sync_folder(args.folder, args.kb), _progress)
        _print_report(report)
        if not args.watch:
            return 0
        time.sleep(args.interval)


def _cmd_ask(assistant, args) -> int:
    from assistant.messages import say
    from assistant.types import Answer, AnswerDelta

    final = None
    kbs = [k for k in (args.kb or "").split(",") if k] or None
    cid = args.chat
    if cid == "new":
        cid = assistant.conversations.create(args.kb).conversation_id
    events = (assistant.conversations.send(cid, args.question) if cid
              else assistant.chat.ask(args.question, kbs))
    for event in events:
        if isinstance(event, AnswerDelta):
            print(event.text, end="", flush=True)
        elif isinstance(event, Answer):
            final = event
    print()
    if final and final.citations:
        print("\nSources:")
        for c in final.citations:
            print(f"  [{c.number}] {c.label}: \"{c.quote}\"")
    elif final and final.refused in ("no_evidence", "unsupported") and final.sources:
        print(f"\n{say('closest', final.language or 'en')}:")
        for s in final.sources[:3]:
            print(f"  {s.label}: \"{' '.join(s.text.split())[:200]}\"")
    elif final:
        print("\n(no source was cited)")
    if cid:
        print(f"\nConversation {cid}: continue with --chat {cid}")
    return 0


def _cmd_kb(assistant, args) -> int:
    if args.kb_command == "list":
        for name in assistant.documents.knowledge_bases():
            print(name)
    elif args.kb_command == "create":
        assistant.documents.create_knowledge_base(args.name, args.embedder)
        print(f"created {args.name}")
    elif args.kb_command == "rename":
        assistant.documents.rename_knowledge_base(args.old, args.new)
        print(f"renamed {args.old} to {args.new}")
    elif args.kb_command == "delete":
        assistant.documents.delete_knowledge_base(args.name)
        print(f"deleted {args.name}")
    elif args.kb_command in ("train-reranker", "reembed"):
        job = (assistant.index_jobs.train_reranker(args.kb, args.questions)
               if args.kb_command == "train-reranker"
               else assistant.index_jobs.reembed(args.kb, args.embedder))
        last = ""
        # the job runs in a worker process; this one installs its result when it is done
        while (job := assistant.index_jobs.get(job.id)).active or (
                job.status == "succeeded" and not job.installed):
            line = job.describe()
            if line != last:
                print(f"\r{line[:100]:100s}", end="", file=sys.stderr, flush=True)
                last = line
            time.sleep(1.0)
        print(file=sys.stderr)
        print(job.describe())
        return 0 if job.status == "succeeded" else 1
    elif args.kb_command == "status":
        from assistant.status_text import knowledge_base_status

        print(knowledge_base_status(assistant.documents.status(args.kb)))
    elif args.kb_command == "check":
        from assistant.status_text import consistency

        reports = assistant.documents.check(args.kb, args.repair, args.all)
        for report in reports:
            print(consistency(report))
        return 0 if all(r.consistent or r.repaired for r in reports) else 1
    elif args.kb_command == "reread":
        report = drain(assistant.documents.reread(args.kb), _progress)
        _print_report(report)
        return 1 if report.failed else 0
    else:
        for d in assistant.documents.list(args.kb):
            print(f"{d.doc_id}  {d.pages:4d} pages {d.chunks:5d} chunks  {d.source}")
    return 0


# --- conversations (chats) ----------------------------------------------------
def _chats_parser(sub) -> None:
    chats = sub.add_parser("chats", help="stored conversations")
    chats_sub = chats.add_subparsers(dest="chats_command", required=True)
    chats_sub.add_parser("list", help="conversations, the most recent first")
    chats_sub.add_parser("show", help="print a conversation (Markdown)").add_argument("id")
    export = chats_sub.add_parser("export", help="a conversation as Markdown with citations")
    export.add_argument("id")
    export.add_argument("--out", type=Path, help="write to this file instead of stdout")
    ren = chats_sub.add_parser("rename")
    ren.add_argument("id")
    ren.add_argument("title")
    chats_sub.add_parser("delete").add_argument("id")


def _cmd_chats(assistant, args) -> int:
    cmd = args.chats_command
    if cmd == "list":
        for c in assistant.conversations.list():
            print(f"{c.conversation_id}  {c.updated_at[:16].replace('T', ' ')}  "
                  f"{c.turns:3d} turns  [{c.kb}]  {c.title or '(untitled)'}"
                  + (f"  ({c.owner})" if c.owner else ""))
    elif cmd == "export" and args.out:
        args.out.write_text(assistant.conversations.export(args.id), encoding="utf-8")
        print(f"wrote {args.out}")
    elif cmd in ("show", "export"):
        print(assistant.conversations.export(args.id), end="")
    elif cmd == "rename":
        info = assistant.conversations.rename(args.id, args.title)
        print(f"renamed {info.conversation_id} to {info.title}")
    else:
        assistant.conversations.delete(args.id)
        print(f"deleted {args.id}")
    return 0


# --- document tasks -------------------------------------------------------------
_TASKS = {"summarize": "summary of the documents, cited by page",
          "exam": "multiple-choice questions with an answer key and the source page of each",
          "advice": "recommendations from the documents, each citing the guideline text"}


def _task_parser(sub) -> None:
    task = sub.add_parser("task", help="document tasks: summarize, exam questions, advice")
    task_sub = task.add_subparsers(dest="task_command", required=True)
    for name, text in _TASKS.items():
        p = task_sub.add_parser(name, help=text)
        p.add_argument("--doc", action="append", required=True, metavar="SOURCE_OR_ID",
                       help="a document's file name or id as `kb docs` lists them; repeat for several")
        p.add_argument("--kb", dest="task_kb", metavar="KB", help="knowledge base (default: the global --kb)")
        p.add_argument("--out", type=Path, help="write the result to this file, not stdout")
        if name == "exam":
            p.add_argument("--n", type=int, default=5, help="number of questions (default 5)")
            p.add_argument("--format", choices=("text", "json", "csv"), default="text",
                           help="text (default), json, or csv (UTF-8 with BOM in --out files, "
                                "for spreadsheets)")
        if name == "advice":
            p.add_argument("--focus", default="",
                           help='the situation, e.g. "patient with high blood pressure"')


def _task_progress(ev) -> None:
    skipped = f" ({ev.skipped} skipped)" if ev.skipped else ""
    print(f"{ev.stage} {ev.done}/{ev.total}{skipped}", file=sys.stderr, flush=True)


def _cited_text(text: str, citations) -> str:
    lines = [text, ""]
    if citations:
        lines.append("Sources:")
        lines += [f"  [{c.number}] {c.label}: \"{c.quote}\"" for c in citations]
    else:
        lines.append("(no source was cited)")
    return "\n".join(lines) + "\n"


def _exam_text(questions) -> str:
    blocks = []
    for i, q in enumerate(questions, start=1):
        where = f"{q.source}, p. {q.page}" if q.page else q.source
        options = "\n".join(f"   {letter}) {text}" for letter, text in zip("ABCD", q.options))
        why = f" ({q.explanation})" if q.explanation else ""
        blocks.append(f"{i}. {q.question}  [{where}]\n{options}\n   Answer: {q.answer}{why}")
    return "\n\n".join(blocks) + "\n"


def _cmd_task(assistant, args) -> int:
    from assistant.tasks import exam_to_csv, exam_to_json, run_task

    kb = args.task_kb or args.kb
    doc_ids = assistant.documents.resolve(args.doc, kb)
    encoding = "utf-8"
    if args.task_command == "exam":
        questions = run_task(assistant.tasks.exam_questions(doc_ids, kb, args.n), _task_progress)
        render = {"json": exam_to_json, "csv": exam_to_csv, "text": _exam_text}[args.format]
        out = render(questions)
        encoding = "utf-8-sig" if args.format == "csv" else encoding
        if len(questions) < args.n:
            print(f"{len(questions)} of {args.n} questions could be written.", file=sys.stderr)
        status = 0 if questions else 1
    else:
        task = (assistant.tasks.summarize(doc_ids, kb) if args.task_command == "summarize"
                else assistant.tasks.advice(doc_ids, kb, args.focus))
        result = run_task(task, _task_progress)
        out, status = _cited_text(result.text, result.citations), 0
    if args.out:
        args.out.write_text(out, encoding=encoding, newline="")
        print(f"wrote {args.out}", file=sys.stderr)
    else:
        print(out, end="")
    return status


def _cmd_models(settings, args) -> int:
    from common.models import DEFAULT_MODELS, ensure_gguf

    for name in args.names or [settings.llm.model]:
        if name not in DEFAULT_MODELS:
            print(f"{name}: not a default model (choose from {', '.join(DEFAULT_MODELS)})",
                  file=sys.stderr)
            return 2
        path = ensure_gguf(DEFAULT_MODELS[name], settings.paths.models_dir)
        print(f"{name}: {path} (sha256 OK)")
    return 0


def _cmd_canary(settings, args) -> int:
    """Runs llama.cpp only in child processes: a crash is reported, never suffered."""
    from assistant.canary import canary_models, run_canary, server_binary

    def progress(line: str) -> None:
        print(line, file=sys.stderr, flush=True)

    server = server_binary(args.server or settings.llm.server_binary)
    report = run_canary(canary_models(settings.paths.models_dir), server, args.timeout,
                        progress)
    print(report.render())
    return 0 if report.ok else 1


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    overrides = {"data_dir": args.data_dir} if args.data_dir else {}
    try:
        settings = load_settings(args.config, **overrides)
        logging.basicConfig(level=settings.log_level, format="%(levelname)s %(name)s: %(message)s")
        from assistant.llm import quiet_http_clients

        quiet_http_clients()
        if args.command == "doctor":
            from assistant.doctor import run_doctor

            report = run_doctor(settings)
            print(report.render())
            return 1 if report.problems else 0
        if args.command == "models":
            return _cmd_models(settings, args)
        if args.command == "canary":
            return _cmd_canary(settings, args)
        if args.command == "users":
            return cmd_users(settings, args)
        from assistant.core import Assistant

        assistant = Assistant(settings)
        try:
            commands = {"ingest": _cmd_ingest, "sync": _cmd_sync, "ask": _cmd_ask, "kb": _cmd_kb,
                        "chats": _cmd_chats}
            commands["task"] = _cmd_task  # document tasks
            commands["finetune"] = cmd_finetune  # fine-tuning
            commands["evaluate"] = cmd_evaluate  # base model against adapters
            return commands[args.command](assistant, args)
        finally:
            assistant.close()
    except KeyboardInterrupt:
        return 130
    except (DocentError, ValueError, FileNotFoundError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
