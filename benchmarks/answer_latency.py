"""Time to first token and tokens/s of cited answers, against raw llama-cpp-python on
the very same prompt (the prompt cache is cleared before every call, so both pay the
full prompt).

    python -m benchmarks.answer_latency [--model qwen2.5-coder-1.5b] [--kb-dir DIR --kb eval]
        [--questions "q1" "q2" ...] [--repeat 1]

Without --kb-dir the clinic test documents are indexed (short sources); with a knowledge
base kept by `benchmarks.retrieval --keep DIR` (e.g. MedQuAD) the five sources fill about
1,300 tokens: the "full context" case.
"""
from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

from benchmarks.common import bench_settings, peak_rss_mb, rss_mb

QUESTIONS = ["How often should adults take amoxicillin, and what dose?",
             "What are the symptoms of shingles and how is it treated?",
             "What causes high blood pressure?"]


def raw_stream(llama, messages, max_tokens: int) -> tuple[float, int, float]:
    """(first token s, tokens, generation s) for llama-cpp-python's own streaming call."""
    llama.reset()
    t0 = time.perf_counter()
    first, n = None, 0
    for part in llama.create_chat_completion(messages=messages, max_tokens=max_tokens,
                                             temperature=0.0, stream=True):
        if part["choices"][0].get("delta", {}).get("content"):
            first = first or time.perf_counter() - t0
            n += 1
    return first or float("nan"), n, time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="qwen2.5-coder-1.5b")
    ap.add_argument("--kb-dir", type=Path, help="a data dir holding knowledge/<kb>")
    ap.add_argument("--kb", default="eval")
    ap.add_argument("--questions", nargs="+", default=QUESTIONS)
    ap.add_argument("--max-tokens", type=int, default=128)
    args = ap.parse_args()
    from assistant.core import Assistant
    from ingest.pipeline import drain
    from tests.helpers.docs import make_clinic_docs

    with tempfile.TemporaryDirectory() as tmp:
        data = args.kb_dir or Path(tmp) / "data"
        s = bench_settings(data, default_kb=args.kb if args.kb_dir else "default",
                           llm={"model": args.model, "temperature": 0.0, "max_tokens": args.max_tokens},
                           answers={"default_profile": "general", "gate": False})
        t0 = time.perf_counter()
        a = Assistant(s)
        a.serving.warm_up()
        print(f"model {args.model}: loaded in {time.perf_counter() - t0:.1f} s")
        if not args.kb_dir:
            drain(a.documents.ingest(list(make_clinic_docs(Path(tmp) / "docs").values())))
        llm = a.serving.llm
        seen: list = []
        original = llm.stream_chat

        def recording(messages, max_tokens, temperature):
            seen.append(list(messages))
            llm._llm.reset()  # no prompt-cache reuse between calls: every call pays its prompt
            yield from original(messages, max_tokens, temperature)

        llm.stream_chat = recording
        rows = []
        for q in args.questions:
            answer = a.chat.answer(q)
            t = answer.timings
            gen_s = t["generate_s"] - t["first_token_s"]
            ours = answer.tokens / gen_s if gen_s > 0 else float("nan")
            r_first, r_n, r_total = raw_stream(llm._llm, seen[-1], args.max_tokens)
            raw = r_n / (r_total - r_first) if r_total > r_first else float("nan")
            rows.append((answer.prompt_tokens, t["first_token_s"], ours, r_first, raw))
            print(f"- prompt {answer.prompt_tokens} tokens: Docent first token "
                  f"{t['first_token_s']:.2f} s, {ours:.1f} tok/s ({answer.tokens} tokens) | raw "
                  f"llama-cpp first token {r_first:.2f} s, {raw:.1f} tok/s ({r_n} chunks) | "
                  f"retrieve {t['retrieve_s'] * 1000:.0f} ms")
        ratio = statistics.median(r[2] / r[4] for r in rows)
        print(f"median: prompt {statistics.median(r[0] for r in rows):.0f} tokens, first token "
              f"{statistics.median(r[1] for r in rows):.2f} s (raw {statistics.median(r[3] for r in rows):.2f} s), "
              f"tokens/s Docent / raw = {ratio:.2f}x")
        print(f"RSS {rss_mb():.0f} MB (peak {peak_rss_mb():.0f} MB)")
        a.close()


if __name__ == "__main__":
    main()
