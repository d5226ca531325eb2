"""Docent's HTTP API under load, in-process: the real app (``app.build_app``) served by
uvicorn on a free loopback port, the chat model in its supervised ``llama-server``.

Phase 1, all at once: ``--chats`` concurrent ``POST /v1/chat/completions`` (plain chat,
``rag: false``, ``--max-tokens``; half streamed, half not), ``--models-calls``
``GET /v1/models`` spread over the run, and the ingestion of ``--doc`` through the
facade in another thread. ``server.max_queued_requests`` is ``--queue`` (enough for all).

Phase 2: Docent started again with ``server.max_queued_requests = --burst-queue`` and a
burst of ``--burst`` concurrent requests: the excess must be answered 429 with
``Retry-After`` at once, never reset or left to time out.

Reports errors (non-2xx other than the deliberate 429s, error events in a stream,
connection errors), lost requests (sent, no complete reply), p50/p95 time to first
token (streamed: first content chunk; non-streamed: the full reply), total completion
tokens/s, /v1/models latency and the ingestion time. Every request has a timeout.

    python -m benchmarks.serving_load [--model qwen2.5-coder-0.5b] [--data-dir DIR]
        [--doc PDF_OR_TXT] [--chats 20] [--burst 20] [--burst-queue 8]
"""
from __future__ import annotations

import argparse
import contextlib
import json
import logging
import math
import os
import socket
import tempfile
import threading
import time
import traceback
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from benchmarks.common import SHARED_DATA, bench_settings

DEFAULT_DOC = SHARED_DATA / "fixtures" / "pdf" / "two_column_acl_paper.pdf"
QUESTIONS = [
    "What is a normal resting heart rate?", "How long does a flu usually last?",
    "Why is sleep important for health?", "What does a pharmacist do?",
    "How should ice be applied to a sprain?", "What is a good way to lower stress?",
    "Why drink water during exercise?", "What is cholesterol?",
    "How often should adults see a dentist?", "What causes a headache?",
    "What is a balanced breakfast?", "Why wear sunscreen in winter?",
    "What is the purpose of a booster vaccine?", "How do you take a pulse?",
    "What is an allergy?", "Why should you wash fruit?", "What is a fever?",
    "How can you prevent back pain at a desk?", "What is vitamin D for?",
    "Why is walking good for you?", "What is a calorie?", "How do bruises heal?",
]


@dataclass
class Result:
    stream: bool
    status: int | None = None  # HTTP status; None: no response (connection error, timeout)
    outcome: str = ""  # ok | refused | http_error | error_event | incomplete | timeout | connection
    first_s: float = float("nan")  # streamed: first content chunk; non-streamed: full reply
    total_s: float = float("nan")
    tokens: int = 0
    retry_after: str | None = None
    detail: str = ""


def chat(client, url: str, body: dict, timeout: float) -> Result:
    """One chat completion; a result, never an exception."""
    import httpx

    res = Result(stream=bool(body.get("stream")))
    t0 = time.perf_counter()
    try:
        if res.stream:
            _stream(client, url, body, timeout, res, t0)
        else:
            resp = client.post(url, json=body, timeout=timeout)
            _status(res, resp)
            if resp.status_code == 200:
                data = resp.json()
                text = data["choices"][0]["message"]["content"]
                res.tokens = int(data.get("usage", {}).get("completion_tokens", 0))
                res.outcome = "ok" if isinstance(text, str) else "incomplete"
            res.first_s = time.perf_counter() - t0
    except httpx.TimeoutException as exc:
        res.outcome, res.detail = "timeout", repr(exc)
    except httpx.TransportError as exc:
        res.outcome, res.detail = "connection", repr(exc)
    except (ValueError, KeyError, IndexError, TypeError) as exc:
        res.outcome, res.detail = "incomplete", f"malformed reply: {exc!r}"
    res.total_s = time.perf_counter() - t0
    return res


def _status(res: Result, resp) -> None:
    res.status = resp.status_code
    if resp.status_code == 429:
        res.outcome, res.retry_after = "refused", resp.headers.get("retry-after")
    elif resp.status_code != 200:
        res.outcome, res.detail = "http_error", f"HTTP {resp.status_code}: {resp.text[:200]}"


def _stream(client, url: str, body: dict, timeout: float, res: Result, t0: float) -> None:
    with client.stream("POST", url, json=body, timeout=timeout) as resp:
        if resp.status_code != 200:
            resp.read()
            _status(res, resp)
            return
        res.status, finished, done = 200, False, False
        for line in resp.iter_lines():
            if not line.startswith("data: "):
                continue
            if line == "data: [DONE]":
                done = True
                continue
            event = json.loads(line[6:])
            if "error" in event:
                res.outcome, res.detail = "error_event", json.dumps(event["error"])[:200]
                return
            for choice in event.get("choices") or []:
                if (choice.get("delta") or {}).get("content") and res.first_s != res.first_s:
                    res.first_s = time.perf_counter() - t0
                finished = finished or bool(choice.get("finish_reason"))
            if event.get("usage"):
                res.tokens = int(event["usage"].get("completion_tokens", 0))
        res.outcome = "ok" if finished and done else "incomplete"
        if res.outcome == "incomplete":
            res.detail = f"stream ended (finish_reason seen: {finished}, [DONE]: {done})"


# --- Docent in-process --------------------------------------------------------------
def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def docent(settings, client, timeout: float = 240.0):
    """Docent's app served by uvicorn in a background thread; yields (assistant, base URL,
    seconds to /health "ok"). Stops the server and closes the assistant on exit."""
    import uvicorn

    from app import build_app
    from assistant.core import Assistant

    t0 = time.perf_counter()
    assistant = Assistant(settings)
    server = None
    thread = None
    try:
        assistant.serving.warm_up()
        port = _free_port()
        server = uvicorn.Server(uvicorn.Config(build_app(assistant), host="127.0.0.1", port=port,
                                               log_level="warning", timeout_graceful_shutdown=5))
        thread = threading.Thread(target=server.run, name="uvicorn", daemon=True)
        thread.start()
        base = f"http://127.0.0.1:{port}"
        _wait_health(client, base, thread, t0 + timeout)
        yield assistant, base, time.perf_counter() - t0
    finally:
        if server is not None:
            server.should_exit = True
        if thread is not None:
            thread.join(15)
        assistant.close()


def _wait_health(client, base: str, thread: threading.Thread, deadline: float) -> None:
    import httpx

    last = "no answer"
    while time.perf_counter() < deadline and thread.is_alive():
        try:
            resp = client.get(base + "/health", timeout=5)
            body = resp.json()
            if resp.status_code == 200 and body.get("status") == "ok":
                return
            last = f"HTTP {resp.status_code}: {body}"
        except (httpx.HTTPError, ValueError) as exc:
            last = repr(exc)
        time.sleep(0.25)
    raise SystemExit(f"Docent did not report /health 'ok' in time: {last}")


# --- phase 1 -----------------------------------------------------------------------
def ingest_in_thread(assistant, doc: Path, out: dict) -> threading.Thread:
    from ingest.pipeline import drain

    def run() -> None:
        t0 = time.perf_counter()
        try:
            report = drain(assistant.documents.ingest([doc]))
            out["summary"] = (f"{len(report.succeeded)} added, {len(report.failed)} failed"
                              + "".join(f" ({r})" for r in report.failed))
        except Exception:  # noqa: BLE001 - reported, not raised: the benchmark goes on
            out["summary"] = "raised:\n" + traceback.format_exc()
        out["seconds"] = time.perf_counter() - t0

    thread = threading.Thread(target=run, name="ingest", daemon=True)
    thread.start()
    return thread


def models_in_thread(client, base: str, calls: int, interval: float, timeout: float,
                     out: list) -> threading.Thread:
    def run() -> None:
        for i in range(calls):
            t0 = time.perf_counter()
            try:
                resp = client.get(base + "/v1/models", timeout=timeout)
                ok = resp.status_code == 200 and bool(resp.json().get("data"))
                out.append((ok, time.perf_counter() - t0, f"HTTP {resp.status_code}"))
            except Exception as exc:  # noqa: BLE001 - counted as a failed call
                out.append((False, time.perf_counter() - t0, repr(exc)))
            time.sleep(max(0.0, interval - (time.perf_counter() - t0)))

    thread = threading.Thread(target=run, name="models", daemon=True)
    thread.start()
    return thread


def send_all(client, base: str, bodies: list[dict], timeout: float) -> tuple[list[Result], float]:
    """Send ``bodies`` at once (a barrier); results and the wall time."""
    gate = threading.Barrier(len(bodies))

    def one(body: dict) -> Result:
        gate.wait()
        return chat(client, base + "/v1/chat/completions", body, timeout)

    t0 = time.perf_counter()
    with ThreadPoolExecutor(len(bodies)) as pool:
        results = list(pool.map(one, bodies))
    return results, time.perf_counter() - t0


def phase_load(args, settings, client) -> dict:
    with docent(settings, client) as (assistant, base, ready_s):
        print(f"phase 1: Docent ready in {ready_s:.1f} s at {base}")
        ingest: dict = {}
        models: list = []
        bodies = [{"rag": False, "max_tokens": args.max_tokens, "temperature": 0.0,
                   "stream": i % 2 == 0,
                   "messages": [{"role": "user", "content": QUESTIONS[i % len(QUESTIONS)]}]}
                  for i in range(args.chats)]
        t_ing = ingest_in_thread(assistant, args.doc, ingest)
        t_mod = models_in_thread(client, base, args.models_calls, args.models_interval,
                                 args.timeout, models)
        results, wall = send_all(client, base, bodies, args.timeout)
        t_mod.join(args.models_calls * (args.models_interval + args.timeout))
        t_ing.join(args.ingest_timeout)
        if t_ing.is_alive():
            raise SystemExit(f"The ingestion of {args.doc} did not finish {args.ingest_timeout:.0f} "
                             "s after the chats; stopping.")
    return {"results": results, "wall": wall, "models": models, "ingest": ingest}


def phase_burst(args, settings, client) -> dict:
    with docent(settings, client) as (_, base, ready_s):
        print(f"phase 2: Docent ready in {ready_s:.1f} s (max_queued_requests "
              f"{args.burst_queue})")
        bodies = [{"rag": False, "max_tokens": args.burst_tokens, "temperature": 0.0,
                   "stream": i % 2 == 1,
                   "messages": [{"role": "user", "content": QUESTIONS[i % len(QUESTIONS)]}]}
                  for i in range(args.burst)]
        results, wall = send_all(client, base, bodies, args.timeout)
    return {"results": results, "wall": wall}


# --- report ------------------------------------------------------------------------
def pct(values: list[float], q: float) -> float:
    """Nearest-rank percentile.

    >>> pct([1.0, 2.0, 3.0, 4.0], 0.5), pct([1.0, 2.0, 3.0, 4.0], 0.95)
    (2.0, 4.0)
    """
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[max(1, math.ceil(q * len(ordered))) - 1]


def counts(results: list[Result]) -> dict[str, int]:
    out = {k: 0 for k in ("ok", "refused", "http_error", "error_event", "incomplete",
                          "timeout", "connection")}
    for r in results:
        out[r.outcome or "incomplete"] += 1
    return out


def timeline(results: list[Result]) -> None:
    """Each request's first token and end, in the order of their ends."""
    print("\n| request | outcome | first token s | end s | tokens |")
    print("|---|---|---|---|---|")
    for i, r in sorted(enumerate(results), key=lambda p: p[1].total_s):
        kind = "stream" if r.stream else "plain"
        print(f"| {i} {kind} | {r.outcome} | {r.first_s:.1f} | {r.total_s:.1f} | {r.tokens} |")


def report(args, load: dict, burst: dict | None) -> None:
    res = load["results"]
    if args.timeline:
        timeline(res)
    c = counts(res)
    errors = c["http_error"] + c["error_event"] + c["connection"]
    lost = len(res) - c["ok"] - c["refused"]
    streamed = [r.first_s for r in res if r.stream and r.outcome == "ok"]
    whole = [r.first_s for r in res if not r.stream and r.outcome == "ok"]
    tokens = sum(r.tokens for r in res if r.outcome == "ok")
    lat = [s for ok, s, _ in load["models"] if ok]
    for r in res + (burst["results"] if burst else []):
        if r.outcome not in ("ok", "refused"):
            print(f"  {'stream' if r.stream else 'plain'} request: {r.outcome}: {r.detail}")
    for ok, _, detail in load["models"]:
        if not ok:
            print(f"  /v1/models failed: {detail}")
    print(f"\n## Docent under load ({args.model}, llm.parallel {args.parallel}, "
          f"max_tokens {args.max_tokens})\n")
    print("| measure | value |")
    print("|---|---|")
    rows = [
        ("chat completions sent (streamed / not)",
         f"{len(res)} ({sum(r.stream for r in res)} / {sum(not r.stream for r in res)})"),
        ("complete replies", c["ok"]),
        ("errors (non-2xx except 429, stream error events, connection errors)", errors),
        ("429 (max_queued_requests %d)" % args.queue, c["refused"]),
        ("lost (sent, no complete reply)", f"{lost} (timeouts {c['timeout']}, cut streams "
                                           f"{c['incomplete']})"),
        ("streamed: first content chunk p50 / p95 s", f"{pct(streamed, .5):.2f} / "
                                                      f"{pct(streamed, .95):.2f}"),
        ("non-streamed: full reply p50 / p95 s", f"{pct(whole, .5):.2f} / {pct(whole, .95):.2f}"),
        ("completion tokens / wall s", f"{tokens} / {load['wall']:.1f}"),
        ("total completion tokens/s", f"{tokens / load['wall']:.1f}" if load["wall"] else "-"),
        ("/v1/models calls ok", f"{len(lat)}/{len(load['models'])}"),
        ("/v1/models p50 / max latency ms", f"{pct(lat, .5) * 1000:.0f} / "
                                            f"{(max(lat) if lat else float('nan')) * 1000:.0f}"),
        (f"ingestion of {args.doc.name} s", f"{load['ingest'].get('seconds', float('nan')):.1f} "
                                            f"({load['ingest'].get('summary', '?')})"),
    ]
    for name, value in rows:
        print(f"| {name} | {value} |")
    if burst:
        b = counts(burst["results"])
        with_header = sum(1 for r in burst["results"] if r.outcome == "refused" and r.retry_after)
        fast = [r.total_s for r in burst["results"] if r.outcome == "refused"]
        print(f"\n## Burst over the queue: {args.burst} requests at once, "
              f"max_queued_requests {args.burst_queue} (max_tokens {args.burst_tokens})\n")
        print("| measure | value |")
        print("|---|---|")
        for name, value in [
            ("complete replies", b["ok"]),
            ("429 with Retry-After / without", f"{with_header} / {b['refused'] - with_header}"),
            ("429 answer time p50 / max ms", f"{pct(fast, .5) * 1000:.0f} / "
                                             f"{(max(fast) if fast else float('nan')) * 1000:.0f}"),
            ("connection errors / timeouts", f"{b['connection']} / {b['timeout']}"),
            ("other errors (non-2xx, error events, cut streams)",
             b["http_error"] + b["error_event"] + b["incomplete"]),
            ("burst wall s", f"{burst['wall']:.1f}"),
        ]:
            print(f"| {name} | {value} |")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="qwen2.5-coder-0.5b")
    ap.add_argument("--data-dir", type=Path, help="default: a temporary dir")
    ap.add_argument("--doc", type=Path, default=DEFAULT_DOC, help="document ingested meanwhile")
    ap.add_argument("--parallel", type=int, default=2, help="llm.parallel (slots)")
    ap.add_argument("--chats", type=int, default=20)
    ap.add_argument("--max-tokens", type=int, default=32)
    ap.add_argument("--queue", type=int, default=32, help="max_queued_requests in phase 1")
    ap.add_argument("--models-calls", type=int, default=10)
    ap.add_argument("--models-interval", type=float, default=2.0, help="seconds between them")
    ap.add_argument("--burst", type=int, default=20, help="0: no phase 2")
    ap.add_argument("--burst-queue", type=int, default=8)
    ap.add_argument("--burst-tokens", type=int, default=8)
    ap.add_argument("--timeout", type=float, default=180.0, help="seconds per request")
    ap.add_argument("--ingest-timeout", type=float, default=300.0,
                    help="seconds to wait for the ingestion after the chats")
    ap.add_argument("--timeline", action="store_true", help="print each chat of phase 1")
    args = ap.parse_args()
    logging.basicConfig(level=logging.WARNING,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    if not args.doc.is_file():
        raise SystemExit(f"--doc {args.doc} does not exist")

    import httpx

    with tempfile.TemporaryDirectory() as tmp:
        data = args.data_dir or Path(tmp) / "data"
        os.environ.setdefault("GRADIO_TEMP_DIR", str(Path(tmp) / "gradio"))
        llm = {"model": args.model, "parallel": args.parallel, "temperature": 0.0}
        limits = httpx.Limits(max_connections=args.chats + args.burst + 8)
        t0 = time.perf_counter()
        with httpx.Client(trust_env=False, limits=limits) as client:
            load = phase_load(args, bench_settings(
                data, llm=llm, server={"max_queued_requests": args.queue}), client)
            burst = phase_burst(args, bench_settings(
                data, llm=llm, server={"max_queued_requests": args.burst_queue}),
                client) if args.burst else None
        report(args, load, burst)
        print(f"\ntotal run time {time.perf_counter() - t0:.0f} s")


if __name__ == "__main__":
    main()
