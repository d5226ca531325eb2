"""Twenty people on one Docent for a few minutes, in-process on loopback: the real app
(``app.build_app``) served by uvicorn, the chat model in its supervised ``llama-server``
(``benchmarks.serving_load.docent``), 20 accounts made with ``AccountStore`` before it
starts, each user with its own API token:

* 10 ask RAG questions in a loop (``POST /v1/chat/completions``, ``stream: true``,
  ``knowledge_base``): the LiveQA questions that have an excellent MedQuAD answer, each
  user starting elsewhere in the list; the knowledge base holds those answers.
* 5 list their conversations (``GET /v1/conversations``) every 1-2 s; each owns
  1..5 conversations made beforehand and must see exactly those.
* 4 poll ``GET /v1/models`` every 1-2 s.
* 1 (an admin) ingests documents one after another (``--ingest-pause`` apart) through
  the facade (as ``kb add`` does; /v1 has no ingestion route): ``--docs``, then
  MedQuAD passages.

Bounded: a timeout per request, no new request after ``--minutes``, at most
``--max-requests`` in all. Reports per kind the requests, errors (non-2xx, connection
errors, stream error events, cut streams, timeouts, wrong lists) and p50/p95 latency
(chats: first content chunk and whole reply), total completion tokens/s, seconds per
ingested document; then checks that nothing was lost: each user's complete replies
are its lines in ``logs/inference.jsonl``, every ingested document is listed, and the
knowledge base's catalog, vectors and BM25 agree (``kb check``), live and after a
restart. Exits 1 on any error or loss.

    python -m benchmarks.users_load [--minutes 3] [--model qwen2.5-coder-0.5b]
        [--max-tokens 96] [--data-dir DIR] [--docs PATHS...]
"""
from __future__ import annotations

import argparse
import csv
import itertools
import json
import logging
import os
import random
import secrets
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from benchmarks.common import SHARED_DATA, bench_settings
from benchmarks.serving_load import chat, docent, pct

KB = "medquad"
MEDQUAD = SHARED_DATA / "retrieval" / "medquad_liveqa"
FIXTURES = SHARED_DATA / "fixtures"
DEFAULT_DOCS = [FIXTURES / p for p in (
    "pdf/two_column_acl_paper.pdf", "docx/paras_and_tables.docx", "pdf/paper_with_table.pdf",
    "docx/tables_basic.docx", "pdf/google_docs_export.pdf", "docx/heading_levels.docx",
    "pdf/large_table_usgov.pdf", "docx/multilingual_eng_spa.docx")]
USERS = {"chat": 10, "list": 5, "models": 4, "ingest": 1}


@dataclass
class Call:
    kind: str
    user: str
    # ok | http_error (non-2xx) | error_event | incomplete (cut stream) | timeout |
    # connection | wrong (a list not as expected) | failed (a document not ingested)
    outcome: str
    total_s: float
    first_s: float = float("nan")
    tokens: int = 0
    detail: str = ""  # what went wrong; an ingested document's id
    what: str = ""  # the question asked, the file ingested


class Budget:
    """No new request after ``deadline`` (perf_counter) nor beyond ``cap`` in all."""

    def __init__(self, deadline: float, cap: int):
        self.deadline, self.cap, self.taken = deadline, cap, 0
        self._lock = threading.Lock()

    def take(self) -> bool:
        with self._lock:
            if time.perf_counter() >= self.deadline or self.taken >= self.cap:
                return False
            self.taken += 1
            return True

    def pause(self, seconds: float) -> None:
        time.sleep(max(0.0, min(seconds, self.deadline - time.perf_counter())))


# --- data: questions, passages, accounts ------------------------------------------
def medquad(folder: Path) -> tuple[list[str], list[dict], list[dict]]:
    """The LiveQA questions with an excellent (3) MedQuAD answer, those answers (two per
    question at most) and the other passages, in corpus order."""
    best: dict[str, list[str]] = {}
    with (folder / "qrels" / "test.tsv").open(encoding="utf-8") as f:
        for row in csv.DictReader(f, delimiter="\t"):
            if int(row["score"]) == 3:
                best.setdefault(row["query-id"], []).append(row["corpus-id"])
    with (folder / "queries.jsonl").open(encoding="utf-8") as f:
        queries = {q["_id"]: q["text"] for q in map(json.loads, f)}
    with (folder / "corpus.jsonl").open(encoding="utf-8") as f:
        corpus = [json.loads(line) for line in f]
    wanted = {d for ids in best.values() for d in ids[:2]}
    return ([queries[q] for q in best], [d for d in corpus if d["_id"] in wanted],
            [d for d in corpus if d["_id"] not in wanted])


def passages(rows: list[dict], folder: Path) -> Iterator[Path]:
    """Each passage as a text file in ``folder``, written when it is needed."""
    folder.mkdir(parents=True, exist_ok=True)
    for row in rows:
        path = folder / f"{row['_id']}.txt"
        path.write_text(f"{row['title']}\n\n{row['text']}\n", encoding="utf-8")
        yield path


def make_accounts(data_dir: Path) -> dict[str, tuple[str, str]]:
    """20 accounts (the ingesting one an admin), each with a token: name -> (kind, token)."""
    from assistant.accounts import AccountStore

    store = AccountStore(data_dir / "accounts.sqlite3")
    out = {}
    try:
        for kind, n in USERS.items():
            for i in range(1, n + 1):
                name = f"{kind}{i:02d}"
                store.add(name, secrets.token_urlsafe(12), "admin" if kind == "ingest" else "user")
                out[name] = (kind, store.new_token(name))
    finally:
        store.close()
    return out


# --- the users ----------------------------------------------------------------------
def asker(client, base: str, user: str, questions: list[str], budget: Budget,
          timeout: float) -> list[Call]:
    rnd, calls, i = random.Random(user), [], 0
    while budget.take():
        question = questions[i % len(questions)]
        body = {"stream": True, "knowledge_base": KB,
                "messages": [{"role": "user", "content": question}]}
        r = chat(client, base + "/v1/chat/completions", body, timeout)
        calls.append(Call("chat", user, r.outcome or "incomplete", r.total_s, r.first_s,
                          r.tokens, r.detail, question))
        i += 1
        budget.pause(rnd.uniform(0.5, 1.5))
    return calls


def poller(client, base: str, user: str, kind: str, expect, budget: Budget,
           timeout: float) -> list[Call]:
    """GET /v1/models or /v1/conversations every 1-2 s; ``expect(data)``: "" or what is
    wrong with the listed items."""
    import httpx

    rnd, calls = random.Random(user), []
    path = "/v1/models" if kind == "models" else "/v1/conversations"
    while budget.take():
        t0 = time.perf_counter()
        try:
            resp = client.get(base + path, timeout=timeout)
            if resp.status_code != 200:
                outcome, detail = "http_error", f"HTTP {resp.status_code}: {resp.text[:200]}"
            else:
                detail = expect(resp.json().get("data"))
                outcome = "wrong" if detail else "ok"
        except httpx.TimeoutException as exc:
            outcome, detail = "timeout", repr(exc)
        except httpx.TransportError as exc:
            outcome, detail = "connection", repr(exc)
        except ValueError as exc:
            outcome, detail = "wrong", f"malformed reply: {exc!r}"
        calls.append(Call(kind, user, outcome, time.perf_counter() - t0, detail=detail))
        budget.pause(rnd.uniform(1.0, 2.0))
    return calls


def ingester(assistant, user: str, docs: Iterable[Path], budget: Budget,
             pause: float) -> list[Call]:
    """One document per ``ingest`` call, ``pause`` s apart (a person adding files one
    after another), until the deadline; a failed file is an error."""
    from ingest.pipeline import drain

    calls = []
    for doc in docs:
        if not budget.take():
            break
        t0 = time.perf_counter()
        report = drain(assistant.documents.ingest([doc], KB))
        ok = [r for r in report.succeeded if r.doc_id]
        detail = ok[0].doc_id if ok else "; ".join(
            f"{r.source}: {r.status} {r.reason}" for r in report.results) or "no result"
        calls.append(Call("ingest", user, "ok" if ok else "failed",
                          time.perf_counter() - t0, detail=detail, what=doc.name))
        budget.pause(pause)
    return calls


def run_users(args, assistant, base: str, accounts: dict, questions: list[str],
              owned: dict[str, set[str]], docs: Iterable[Path]) -> tuple[list[Call], float]:
    import httpx

    budget = Budget(time.perf_counter() + args.minutes * 60, args.max_requests)
    clients = {name: httpx.Client(trust_env=False, headers={"Authorization": f"Bearer {tok}"})
               for name, (_, tok) in accounts.items()}
    step = max(1, len(questions) // USERS["chat"])

    def models_ok(data) -> str:
        return "" if data and all(m.get("id") for m in data) else f"no models: {data!r}"

    def lists_ok(user: str):
        def check(data) -> str:
            seen = {c.get("id") for c in data or []}
            mine = owned[user]
            return "" if seen == mine else f"listed {sorted(seen)}, owns {sorted(mine)}"
        return check

    jobs = []
    t0 = time.perf_counter()
    with ThreadPoolExecutor(len(accounts), thread_name_prefix="user") as pool:
        for n, (name, (kind, _)) in enumerate(accounts.items()):
            c = clients[name]
            if kind == "chat":
                mine = questions[n * step:] + questions[:n * step]
                jobs.append(pool.submit(asker, c, base, name, mine, budget, args.timeout))
            elif kind == "list":
                jobs.append(pool.submit(poller, c, base, name, kind, lists_ok(name), budget,
                                        args.timeout))
            elif kind == "models":
                jobs.append(pool.submit(poller, c, base, name, kind, models_ok, budget,
                                        args.timeout))
            else:
                jobs.append(pool.submit(ingester, assistant, name, docs, budget,
                                        args.ingest_pause))
        calls = [call for job in jobs for call in job.result()]
    wall = time.perf_counter() - t0
    for c in clients.values():
        c.close()
    return calls, wall


# --- nothing lost -------------------------------------------------------------------
def losses(calls: list[Call], log_path: Path, listed: set[str], reports) -> list[str]:
    """What was lost: replies missing from the inference log (or extra lines there),
    ingested documents not listed, knowledge-base inconsistencies."""
    from assistant.inference_log import InferenceLog

    problems = []
    logged = Counter(e.get("user", "") for e in InferenceLog(log_path).entries())
    replied = Counter(c.user for c in calls if c.kind == "chat" and c.outcome == "ok")
    for user in sorted(set(logged) | set(replied)):
        if logged[user] != replied[user]:
            problems.append(f"{user}: {replied[user]} complete replies, {logged[user]} "
                            "lines in the inference log")
    for c in calls:
        if c.kind == "ingest" and c.outcome == "ok" and c.detail not in listed:
            problems.append(f"ingested document {c.detail} is not listed")
    for r in reports:
        if not r.consistent:
            problems.append(f"kb check {r.knowledge_base}: {r}")
    return problems


def after_restart(settings) -> tuple[set[str], list]:
    """The documents listed and ``kb check`` of every knowledge base, by a fresh Docent."""
    from assistant.core import Assistant

    a = Assistant(settings)
    try:
        return {d.doc_id for d in a.documents.list(KB)}, a.documents.check(every=True)
    finally:
        a.close()


# --- report -------------------------------------------------------------------------
def report(args, settings, calls: list[Call], wall: float, problems: list[str]) -> bool:
    for c in calls:
        if c.outcome != "ok":
            print(f"  {c.user} {c.kind} {c.what[:60]!r}: {c.outcome}: {c.detail}")
        elif c.kind == "ingest" and not c.what.endswith(".txt"):
            print(f"  ingested {c.what} in {c.total_s:.1f} s")
    for p in problems:
        print(f"  LOST: {p}")
    llm = settings.llm
    print(f"\n## {sum(USERS.values())} users for {args.minutes:g} min ({llm.model}, "
          f"llm.parallel {llm.parallel}, max_tokens {llm.max_tokens}, max_queued_requests "
          f"{settings.server.max_queued_requests})\n")
    print("| users | requests | errors | p50 / p95 | notes |")
    print("|---|---|---|---|---|")
    for kind, n in USERS.items():
        mine = [c for c in calls if c.kind == kind]
        ok = [c for c in mine if c.outcome == "ok"]
        errs = Counter(c.outcome for c in mine if c.outcome != "ok")
        total = [c.total_s for c in ok]
        lat = f"{pct(total, .5):.2f} / {pct(total, .95):.2f} s"
        if kind in ("list", "models"):
            lat = f"{pct(total, .5) * 1000:.0f} / {pct(total, .95) * 1000:.0f} ms"
        note = ""
        if kind == "chat":
            first = [c.first_s for c in ok]
            lat = f"first token {pct(first, .5):.1f} / {pct(first, .95):.1f} s; whole {lat}"
            tokens = sum(c.tokens for c in ok)
            note = f"{tokens} completion tokens, {tokens / wall:.1f} tokens/s overall"
        elif kind == "ingest":
            note = f"{len(ok)} documents, max {max(total, default=float('nan')):.1f} s"
        error_text = str(sum(errs.values())) + (f" ({dict(errs)})" if errs else "")
        print(f"| {n} {kind} | {len(mine)} | {error_text} | {lat} | {note} |")
    errors = sum(c.outcome != "ok" for c in calls)
    unanswered = sum(c.outcome in ("timeout", "connection", "incomplete") for c in calls)
    print("load average (1, 5, 15 min) at the end: %.1f %.1f %.1f on %d cores"
          % (*os.getloadavg(), os.cpu_count() or 0))
    print(f"wall {wall:.0f} s (the last requests end after the deadline); errors {errors} "
          f"({unanswered} without a complete reply); lost {len(problems)}")
    return errors == 0 and not problems


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--minutes", type=float, default=3.0)
    ap.add_argument("--model", default="qwen2.5-coder-0.5b")
    ap.add_argument("--max-tokens", type=int, default=96, help="llm.max_tokens (RAG answers)")
    ap.add_argument("--parallel", type=int, default=2, help="llm.parallel (slots)")
    ap.add_argument("--data-dir", type=Path, help="a new or empty dir (default: a temporary one)")
    ap.add_argument("--docs", type=Path, nargs="+", default=DEFAULT_DOCS,
                    help="ingested during the run, then MedQuAD passages until the deadline")
    ap.add_argument("--timeout", type=float, default=300.0,
                    help="seconds a request may wait for its reply (to its first byte, then "
                         "between chunks; the answer's length is bounded by --max-tokens)")
    ap.add_argument("--max-requests", type=int, default=5000, help="in all, every kind")
    ap.add_argument("--ingest-pause", type=float, default=3.0,
                    help="seconds between two documents of the ingesting user")
    args = ap.parse_args()
    logging.basicConfig(level=logging.WARNING,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    missing = [str(p) for p in args.docs if not p.is_file()]
    if missing:
        raise SystemExit(f"--docs not found: {', '.join(missing)}")
    if args.data_dir and args.data_dir.exists() and any(args.data_dir.iterdir()):
        raise SystemExit(f"--data-dir {args.data_dir} is not empty: give a new or empty one")

    import httpx

    from ingest.pipeline import drain

    with tempfile.TemporaryDirectory() as tmp:
        data = args.data_dir or Path(tmp) / "data"
        os.environ.setdefault("GRADIO_TEMP_DIR", str(Path(tmp) / "gradio"))
        settings = bench_settings(data, llm={"model": args.model, "parallel": args.parallel,
                                             "max_tokens": args.max_tokens})
        questions, answers, others = medquad(MEDQUAD)
        kb_docs = list(passages(answers, Path(tmp) / "kb"))
        accounts = make_accounts(data)
        with httpx.Client(trust_env=False) as probe, docent(settings, probe) as (a, base, ready):
            t0 = time.perf_counter()
            a.documents.create_knowledge_base(KB)
            added = drain(a.documents.ingest(kb_docs, KB)).summary()
            print(f"Docent ready in {ready:.1f} s; {added} ({len(kb_docs)} MedQuAD answers, "
                  f"{time.perf_counter() - t0:.0f} s); {len(questions)} questions")
            owned = {name: {a.conversations.create(KB, f"{name} #{i}", owner=name).conversation_id
                            for i in range(int(name[-2:]))}
                     for name, (kind, _) in accounts.items() if kind == "list"}
            docs = itertools.chain(args.docs, passages(others, Path(tmp) / "more"))
            calls, wall = run_users(args, a, base, accounts, questions, owned, docs)
            live = a.documents.check(every=True)
        listed, checks = after_restart(settings)
        problems = losses(calls, data / "logs" / "inference.jsonl", listed, [*live, *checks])
        ok = report(args, settings, calls, wall, problems)
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
