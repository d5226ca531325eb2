"""Ingestion throughput against the embedder alone, and peak memory.

Builds a PDF of ``--pdf-pages`` pages and a TXT of ``--txt-mb`` MB from a BEIR corpus
(default: ../shared/data/retrieval/medquad_liveqa), ingests each into a fresh knowledge
base with the default embedder, then embeds the same chunks again with the embedder
alone. Prints pages/s, chunks/s, the ratio total/embedder-only, and peak RSS.

    python -m benchmarks.ingest_throughput [--pdf-pages 50] [--txt-mb 5] [--only pdf|txt]
"""
from __future__ import annotations

import argparse
import json
import tempfile
import textwrap
import time
from pathlib import Path

from benchmarks.common import SHARED_DATA, bench_settings, peak_rss_mb, rss_mb


def corpus_texts(corpus: Path):
    with corpus.open(encoding="utf-8") as f:
        for line in f:
            doc = json.loads(line)
            yield (doc.get("title", "") + "\n\n" + doc["text"]).strip()


def build_pdf(path: Path, corpus: Path, pages: int) -> Path:
    from tests.helpers.pdfgen import write_pdf

    lines: list[str] = []
    for text in corpus_texts(corpus):
        for para in text.split("\n"):
            lines.extend(textwrap.wrap(para.encode("latin-1", "replace").decode("latin-1"), 95) + [""])
        if len(lines) > pages * 50:
            break
    return write_pdf(path, [lines[i * 50:(i + 1) * 50] for i in range(pages)])


def build_txt(path: Path, corpus: Path, megabytes: float) -> Path:
    target, parts, size = int(megabytes * 2**20), [], 0
    while size < target:
        for text in corpus_texts(corpus):
            parts.append(text)
            size += len(text.encode()) + 2
            if size >= target:
                break
    path.write_text("\n\n".join(parts), encoding="utf-8")
    return path


def measure(path: Path, tmp: Path, label: str, pages: int | None, baseline: bool = True) -> None:
    from assistant.core import Assistant
    from ingest.pipeline import drain

    a = Assistant(bench_settings(tmp / f"data-{label}"))
    rss0 = rss_mb()
    t0 = time.perf_counter()
    report = drain(a.documents.ingest([path]))
    total = time.perf_counter() - t0
    (r,) = report.results
    assert r.status == "added", r
    kb = a.library.get(a.settings.default_kb)
    texts = [c.index_text for c, _ in kb.catalog.ready_chunks_with_tokens()]
    size_mb = path.stat().st_size / 2**20
    per_page = f", {pages / total:.2f} pages/s" if pages else ""
    line = (f"{label}: {size_mb:.2f} MB, {r.chunks} chunks ({r.duplicates} duplicates) in {total:.1f} s"
            f"{per_page}, {r.chunks / total:.2f} chunks/s; RSS {rss0:.0f} -> peak {peak_rss_mb():.0f} MB")
    if baseline:
        t1 = time.perf_counter()
        kb.embedder.embed_passages(texts)
        embed = time.perf_counter() - t1
        line += (f"; embedder alone {embed:.1f} s ({len(texts) / embed:.2f} chunks/s); "
                 f"ratio {total / embed:.2f}x")
    print(line, flush=True)
    a.close()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--corpus", type=Path, default=SHARED_DATA / "retrieval" / "medquad_liveqa" / "corpus.jsonl")
    ap.add_argument("--pdf-pages", type=int, default=50)
    ap.add_argument("--txt-mb", type=float, default=5.0)
    ap.add_argument("--only", choices=["pdf", "txt"])
    ap.add_argument("--no-baseline", action="store_true", help="skip the embedder-alone pass")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        if args.only in (None, "pdf"):
            pdf = build_pdf(tmp / "bench.pdf", args.corpus, args.pdf_pages)
            measure(pdf, tmp, "pdf", args.pdf_pages, not args.no_baseline)
        if args.only in (None, "txt"):
            txt = build_txt(tmp / "bench.txt", args.corpus, args.txt_mb)
            measure(txt, tmp, "txt", None, not args.no_baseline)


if __name__ == "__main__":
    main()
