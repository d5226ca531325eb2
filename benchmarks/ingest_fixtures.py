"""Ingest every file of ../shared/data/fixtures into a temp knowledge base and print a table.

    python -m benchmarks.ingest_fixtures [--fixtures DIR]
"""
from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

from benchmarks.common import SHARED_DATA, bench_settings


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--fixtures", type=Path, default=SHARED_DATA / "fixtures")
    args = ap.parse_args()
    from assistant.core import Assistant
    from ingest.pipeline import IngestItem, drain

    files = sorted(p for p in args.fixtures.rglob("*") if p.is_file() and p.name != "MANIFEST.tsv")
    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        assistant = Assistant(bench_settings(Path(tmp)))
        setup_s = time.perf_counter() - t0
        items = [IngestItem(p, str(p.relative_to(args.fixtures))) for p in files]
        t1 = time.perf_counter()
        report = drain(assistant.documents.ingest(items))
        total_s = time.perf_counter() - t1
        chars = {d.source: d.chars for d in assistant.documents.list()}
        print("| file | result | chars | chunks | dup | s | reason / notes |\n|---|---|---|---|---|---|---|")
        for r in report.results:
            reason = r.reason.replace("|", "/")[:110]
            print(f"| {r.source} | {r.status} | {chars.get(r.source, 0)} | {r.chunks} | "
                  f"{r.duplicates} | {r.seconds:.2f} | {reason} |")
        print(f"\n{len(files)} files: {len(report.succeeded)} ingested, {len(report.failed)} refused; "
              f"{sum(r.chunks for r in report.results)} chunks in {total_s:.1f} s "
              f"(embedder load {setup_s:.1f} s)")
        assistant.close()


if __name__ == "__main__":
    main()
