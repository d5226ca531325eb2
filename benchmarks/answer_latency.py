"""Time to first token, tokens/s and resident memory for one cited answer.

    python -m benchmarks.answer_latency [--model qwen2.5-coder-1.5b] [--question ...]
"""
from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

from benchmarks.common import bench_settings, peak_rss_mb, rss_mb


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--model", default="qwen2.5-coder-1.5b")
    ap.add_argument("--question", default="How often should adults take amoxicillin, and what dose?")
    args = ap.parse_args()
    from assistant.core import Assistant
    from ingest.pipeline import drain
    from tests.helpers.docs import make_clinic_docs

    with tempfile.TemporaryDirectory() as tmp:
        s = bench_settings(Path(tmp) / "data", llm={"model": args.model, "temperature": 0.0})
        t0 = time.perf_counter()
        a = Assistant(s)
        a.warm_up()
        load_s = time.perf_counter() - t0
        drain(a.ingest(list(make_clinic_docs(Path(tmp) / "docs").values())))
        answer = a.answer(args.question)
        t = answer.timings
        gen = t["generate_s"] - t.get("first_token_s", 0)
        print(f"model {args.model}: load {load_s:.1f} s; retrieve {t['retrieve_s'] * 1000:.0f} ms; "
              f"first token {t.get('first_token_s', float('nan')):.2f} s; {answer.tokens} tokens, "
              f"{answer.tokens / gen if gen > 0 else float('nan'):.1f} tok/s after the first")
        print(f"RSS after one answer: {rss_mb():.0f} MB (peak {peak_rss_mb():.0f} MB)")
        print(f"answer: {answer.text}")
        print("citations:", [(c.source, c.page) for c in answer.citations])
        a.close()


if __name__ == "__main__":
    main()
