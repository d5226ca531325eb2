"""Throughput and prompt caching of llama.cpp's own ``llama-server``, as Docent runs it
(``assistant.model_server.ModelServer``).

a. Slots: for each ``--parallel`` setting (default 1, 2 and 4) a fresh server with
   ``n_ctx`` per slot; ``slots * --per-slot`` different short questions are streamed at
   once (``--max-tokens``, temperature 0). Reports the wall time, the completion tokens
   (the server's ``usage``, else the content chunks), total tokens/s and the median
   time to first token.
b. Prompt cache: one slot; a fixed system prompt of about ``--system-tokens`` tokens and
   a question (cold), then a follow-up with the same system prompt and the first turn
   (warm, ``cache_prompt: true``), then that very request with ``cache_prompt: false``.
   Reports each one's time to first token and what the server evaluated and reused
   (its ``timings.prompt_n`` / ``cache_n``).

    python -m benchmarks.serving [--model qwen2.5-coder-1.5b] [--parallel 1 2 4]
        [--per-slot 2] [--max-tokens 64] [--threads 0] [--skip-cache]

About 3-5 minutes with the 1.5B on 2 cores.
"""
from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

from benchmarks.common import bench_settings

QUESTIONS = [
    "Explain in a few sentences how a fever is measured at home.",
    "Why should antibiotics be taken for the full course? Explain briefly.",
    "Describe the usual steps of washing hands properly.",
    "What are common signs of dehydration in adults? Explain.",
    "How should a small kitchen burn be cared for? Describe the steps.",
    "Explain what blood pressure numbers mean.",
    "Why do vaccines need to be stored cold? Explain briefly.",
    "Describe how to prepare for a fasting blood test.",
    "What is the difference between a cold and the flu? Explain.",
    "How does a pharmacist check a prescription for interactions?",
]

CLINIC_RULES = (
    "Rule {n}: At the Riverside Family Clinic, greet every patient by name, confirm their "
    "date of birth and check that the allergy list in the record is up to date before any "
    "medicine is discussed. Doses are always given in milligrams and per day, never per "
    "kilogram unless the patient is a child under twelve. When a question concerns chest "
    "pain, shortness of breath, sudden weakness or confusion, tell the patient to call the "
    "emergency number at once and do not give further advice. Appointments can be moved up "
    "to twenty-four hours in advance without a fee; later changes cost fifteen euros. Lab "
    "results are released to the patient portal after the doctor has reviewed them, usually "
    "within three working days. Repeat prescriptions need a review every six months. "
)


@dataclass
class Reply:
    ok: bool = False
    first_s: float = float("nan")  # first content chunk, from the send
    total_s: float = float("nan")
    tokens: int = 0  # usage.completion_tokens, else content chunks
    text: str = ""
    timings: dict = field(default_factory=dict)
    error: str = ""


def _headers(key: str) -> dict:
    """llama-server closes the connection after a streamed reply although it announces
    keep-alive: a pooled connection reused for the next request then fails at once
    ("Server disconnected without sending a response"). One connection per request."""
    return {"Authorization": f"Bearer {key}", "Connection": "close"}


def stream_chat(client, base: str, key: str, body: dict, timeout: float) -> Reply:
    """Stream one chat completion from llama-server; a reply, never an exception."""
    reply, pieces, chunks, usage = Reply(), [], 0, None
    body = {**body, "stream": True, "stream_options": {"include_usage": True}}
    t0 = time.perf_counter()
    try:
        with client.stream("POST", base + "/v1/chat/completions", json=body, timeout=timeout,
                           headers=_headers(key)) as resp:
            if resp.status_code != 200:
                resp.read()
                reply.error = f"HTTP {resp.status_code}: {resp.text[:200]}"
                return reply
            finished = False
            for line in resp.iter_lines():
                if not line.startswith("data: ") or line == "data: [DONE]":
                    continue
                event = json.loads(line[6:])
                usage = event.get("usage") or usage
                reply.timings = event.get("timings") or reply.timings
                for choice in event.get("choices") or []:
                    content = (choice.get("delta") or {}).get("content")
                    if content:
                        if not pieces:
                            reply.first_s = time.perf_counter() - t0
                        pieces.append(content)
                        chunks += 1
                    finished = finished or bool(choice.get("finish_reason"))
            reply.ok = finished
            reply.error = "" if finished else "stream ended without a finish reason"
    except Exception as exc:  # noqa: BLE001 - a benchmark reports failures, it does not stop
        reply.error = repr(exc)
    reply.total_s = time.perf_counter() - t0
    reply.text = "".join(pieces)
    reply.tokens = int(usage["completion_tokens"]) if usage else chunks
    return reply


def start_server(binary: Path, gguf: Path, parallel: int, n_ctx: int, threads: int,
                 log_path: Path):
    from assistant.model_server import ModelServer, ServerConfig

    server = ModelServer(ServerConfig(binary, gguf, n_ctx=n_ctx, parallel=parallel,
                                      threads=threads, log_path=log_path))
    t0 = time.perf_counter()
    server.start()
    try:
        base = server.wait_ready()
    except Exception:
        server.stop()
        print(f"llama-server did not start; its log ends with:\n{_tail(log_path)}")
        raise
    return server, base, time.perf_counter() - t0


def slots_run(client, binary, gguf, parallel: int, args, tmp: Path) -> dict:
    """Start a server with ``parallel`` slots, send ``parallel * per_slot`` questions at once."""
    server, base, load_s = start_server(binary, gguf, parallel, args.n_ctx, args.threads,
                                        tmp / f"llama-server-np{parallel}.log")
    try:
        n = parallel * args.per_slot
        bodies = [{"model": gguf.name, "max_tokens": args.max_tokens, "temperature": 0.0,
                   "messages": [{"role": "user", "content": QUESTIONS[i % len(QUESTIONS)]}]}
                  for i in range(n)]
        gate = threading.Barrier(n)

        def one(body):
            gate.wait()
            return stream_chat(client, base, server.api_key, body, args.timeout)

        t0 = time.perf_counter()
        with ThreadPoolExecutor(n) as pool:
            replies = list(pool.map(one, bodies))
        wall = time.perf_counter() - t0
    finally:
        server.stop()
    tokens = sum(r.tokens for r in replies)
    firsts = [r.first_s for r in replies if r.ok]
    for r in replies:
        if not r.ok:
            print(f"  np={parallel}: request failed: {r.error}")
    return {"slots": parallel, "requests": n, "ok": sum(r.ok for r in replies), "load_s": load_s,
            "wall_s": wall, "tokens": tokens, "tok_s": tokens / wall if wall > 0 else 0.0,
            "p50_first_s": statistics.median(firsts) if firsts else float("nan"),
            "max_first_s": max(firsts) if firsts else float("nan")}


def count_tokens(client, base: str, key: str, text: str) -> int:
    resp = client.post(base + "/tokenize", json={"content": text, "add_special": False},
                       headers=_headers(key), timeout=30)
    resp.raise_for_status()
    return len(resp.json()["tokens"])


def system_prompt(client, base: str, key: str, target: int) -> tuple[str, int]:
    """Clinic rules repeated (numbered) until about ``target`` tokens."""
    text, n = "You are the assistant of a clinic. Follow these house rules.\n", 0
    while True:
        n += 1
        text += CLINIC_RULES.format(n=n) + "\n"
        count = count_tokens(client, base, key, text)
        if count >= target or n >= 50:
            return text, count


def cache_run(client, binary, gguf, args, tmp: Path) -> tuple[list[dict], int]:
    """Cold, warm (cache_prompt true), and the warm request again with cache_prompt false."""
    server, base, _ = start_server(binary, gguf, 1, args.n_ctx, args.threads,
                                   tmp / "llama-server-cache.log")
    try:
        system, sys_tokens = system_prompt(client, base, server.api_key, args.system_tokens)
        first = [{"role": "system", "content": system},
                 {"role": "user", "content": "Can I move my appointment tomorrow morning?"}]
        rows = []

        def ask(label, messages, cache):
            body = {"model": gguf.name, "messages": messages, "max_tokens": args.cache_tokens,
                    "temperature": 0.0, "cache_prompt": cache}
            r = stream_chat(client, base, server.api_key, body, args.timeout)
            if not r.ok:
                print(f"  {label}: request failed: {r.error}")
            rows.append({"request": label, "cache_prompt": cache, "first_s": r.first_s,
                         "total_s": r.total_s, "prompt_n": r.timings.get("prompt_n"),
                         "cache_n": r.timings.get("cache_n"),
                         "prompt_ms": r.timings.get("prompt_ms")})
            return r

        cold = ask("cold: system + question", first, True)
        follow = first + [{"role": "assistant", "content": cold.text or "Yes."},
                          {"role": "user", "content": "And how much does it cost if I do?"}]
        ask("warm: + earlier turn + new question", follow, True)
        ask("same, cache off", follow, False)
    finally:
        server.stop()
    return rows, sys_tokens


def _tail(path: Path, lines: int = 15) -> str:
    if not path.is_file():
        return "(no log)"
    return "\n".join(path.read_text(errors="replace").strip().splitlines()[-lines:])


def _f(value, digits: int = 2) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return "-" if value != value else f"{value:.{digits}f}"
    return str(value)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="qwen2.5-coder-1.5b",
                    help="a default model name or a .gguf path")
    ap.add_argument("--binary", type=Path, help="llama-server (default: the venv's)")
    ap.add_argument("--parallel", type=int, nargs="+", default=[1, 2, 4], help="slot counts")
    ap.add_argument("--per-slot", type=int, default=2, help="concurrent requests per slot")
    ap.add_argument("--max-tokens", type=int, default=64)
    ap.add_argument("--n-ctx", type=int, default=4096, help="context per slot")
    ap.add_argument("--threads", type=int, default=0, help="0: the server's choice")
    ap.add_argument("--system-tokens", type=int, default=600)
    ap.add_argument("--cache-tokens", type=int, default=8, help="max_tokens of part b")
    ap.add_argument("--timeout", type=float, default=300.0, help="seconds per request")
    ap.add_argument("--skip-cache", action="store_true", help="part a only")
    args = ap.parse_args()

    import httpx

    from assistant.canary import server_binary
    from common.models import resolve_gguf

    binary = args.binary or server_binary()
    if binary is None or not Path(binary).is_file():
        raise SystemExit(f"llama-server not found ({binary}): run `make setup`.")
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        gguf = resolve_gguf(args.model, bench_settings(tmp / "data").paths.models_dir)
        print(f"model {gguf.name}, server {binary}, threads {args.threads or 'auto'}")
        t_all = time.perf_counter()
        with httpx.Client(trust_env=False, limits=httpx.Limits(max_connections=64)) as client:
            slots = []
            for parallel in args.parallel:
                row = slots_run(client, binary, gguf, parallel, args, tmp)
                slots.append(row)
                print(f"- {parallel} slot(s): {row['ok']}/{row['requests']} ok, {row['tokens']} "
                      f"tokens in {row['wall_s']:.1f} s = {row['tok_s']:.1f} tok/s, p50 first "
                      f"token {row['p50_first_s']:.2f} s (server loaded in {row['load_s']:.1f} s)")
            cache, sys_tokens = ([], 0) if args.skip_cache else cache_run(client, binary, gguf,
                                                                           args, tmp)
    print(f"\n## llama-server, {gguf.name}: concurrent streamed chats "
          f"(max_tokens {args.max_tokens}, temperature 0, n_ctx {args.n_ctx}/slot)\n")
    print("| slots | requests (ok) | wall s | completion tokens | total tok/s | p50 first token s "
          "| max first token s |")
    print("|---|---|---|---|---|---|---|")
    for r in slots:
        print(f"| {r['slots']} | {r['requests']} ({r['ok']}) | {r['wall_s']:.1f} | {r['tokens']} "
              f"| {r['tok_s']:.1f} | {_f(r['p50_first_s'])} | {_f(r['max_first_s'])} |")
    if cache:
        print(f"\n## Prompt cache, 1 slot: system prompt of {sys_tokens} tokens "
              f"(max_tokens {args.cache_tokens})\n")
        print("| request | cache_prompt | first token s | total s | prompt tokens evaluated "
              "| reused from cache |")
        print("|---|---|---|---|---|---|")
        for r in cache:
            print(f"| {r['request']} | {str(r['cache_prompt']).lower()} | {_f(r['first_s'])} "
                  f"| {_f(r['total_s'])} | {_f(r['prompt_n'])} | {_f(r['cache_n'])} |")
    print(f"\ntotal run time {time.perf_counter() - t_all:.0f} s")


if __name__ == "__main__":
    main()
