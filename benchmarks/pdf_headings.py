"""What section headings are worth when the documents are PDFs.

Lays a BEIR corpus whose documents have titles (default: MedQuAD x LiveQA) out as PDF
handbooks of ``--per-pdf`` documents each: every document starts with its title on a
line of its own, then its text, wrapped, 50 lines a page. Each variant is ingested into
a fresh knowledge base through the product (``Documents.ingest``) and searched with the
product's defaults; a chunk is credited to the document(s) its lines come from, and
documents are ranked by their best chunk, as ``benchmarks.retrieval`` ranks them.

Variants: ``plain`` (no outline, one font size: no headings), ``outline`` (a bookmark
per document, pointing at its page: the loader finds the title on the page and starts a
section), ``fonts`` (no outline; titles set in 14 pt over 11 pt text: the loader detects
them by their size).

    python -m benchmarks.pdf_headings [--data DIR] [--split test] [--per-pdf 40] \
        [--variants plain,outline,fonts] [--work DIR]
"""
from __future__ import annotations

import argparse
import tempfile
import textwrap
import time
from collections import Counter
from pathlib import Path

from benchmarks.common import SHARED_DATA, bench_settings

LINES_PER_PAGE = 50


def latin1(text: str) -> str:
    return text.encode("latin-1", "replace").decode("latin-1")


def layout(docs: list[dict], title_size: float = 0.0
           ) -> tuple[list[list], list[tuple[int, str]], dict[str, set[str]]]:
    """``(pages of lines, outline entries (page index, title), line -> documents)``;
    titles set in ``title_size`` points when given."""
    lines: list = []
    outline, owners = [], {}
    for doc in docs:
        title = " ".join(latin1(doc.get("title", "")).split())
        block: list = [(line, title_size) if title_size else line for line in textwrap.wrap(title, 95)]
        for para in latin1(doc["text"]).split("\n"):
            block += textwrap.wrap(para, 95)
        if title:
            outline.append((len(lines) // LINES_PER_PAGE, title))
        for line in block:
            text = line[0] if isinstance(line, tuple) else line
            owners.setdefault(" ".join(text.split()), set()).add(doc["_id"])
        lines += block + [""]
    pages = [lines[i:i + LINES_PER_PAGE] for i in range(0, len(lines), LINES_PER_PAGE)]
    return pages, outline, owners


def write_handbook(path: Path, pages: list[list[str]], outline: list[tuple[int, str]] | None) -> Path:
    from pypdf import PdfReader, PdfWriter

    from tests.helpers.pdfgen import write_pdf

    write_pdf(path, pages)
    if outline:
        writer = PdfWriter(clone_from=PdfReader(path))
        for page, title in outline:
            writer.add_outline_item(title=title, page_number=page)
        writer.write(path)
    return path


def chunk_documents(text: str, owners: dict[str, set[str]]) -> set[str]:
    """The documents that hold most of a chunk's lines."""
    votes = Counter()
    lines = [" ".join(line.split()) for line in text.split("\n") if line.strip()]
    for line in lines:
        votes.update(owners.get(line, ()))
    best = max(votes.values(), default=0)
    return {d for d, v in votes.items() if v == best}  # ties: identical documents


def run_variant(name: str, corpus, queries, qrels, work: Path, per_pdf: int) -> dict:
    import ir_measures
    from ir_measures import RR, R, nDCG

    from assistant.core import Assistant
    from ingest.pipeline import drain

    folder = work / f"pdf-{name}"
    folder.mkdir(parents=True, exist_ok=True)
    owners: dict[str, set[str]] = {}
    paths = []
    for i in range(0, len(corpus), per_pdf):
        pages, outline, own = layout(corpus[i:i + per_pdf], 14.0 if name == "fonts" else 0.0)
        for line, docs in own.items():
            owners.setdefault(line, set()).update(docs)
        paths.append(write_handbook(folder / f"handbook-{i // per_pdf + 1:03d}.pdf", pages,
                                    outline if name == "outline" else None))
    a = Assistant(bench_settings(work / f"data-{name}"))
    t0 = time.perf_counter()
    report = drain(a.documents.ingest(paths))
    ingest_s = time.perf_counter() - t0
    kb = a.library.get(a.settings.default_kb)
    run, headed, latency = [], 0, []
    for qid, text in queries.items():
        t = time.perf_counter()
        hits = kb.search(text, 20)
        latency.append(time.perf_counter() - t)
        scores: dict[str, float] = {}
        for rank, hit in enumerate(hits):
            headed += bool(hit.chunk.heading)
            for doc in chunk_documents(hit.chunk.text, owners):
                scores.setdefault(doc, -rank)
        run += [ir_measures.ScoredDoc(qid, d, s) for d, s in scores.items()]
    qrel_list = [ir_measures.Qrel(q, d, s) for q, docs in qrels.items() for d, s in docs.items()]
    m = ir_measures.calc_aggregate([nDCG @ 10, R @ 100, RR @ 10], qrel_list, run)
    chunks = sum(r.chunks for r in report.results)
    a.close()
    latency.sort()
    return {"variant": name, "pdfs": len(paths), "chunks": chunks, "ingest_s": ingest_s,
            "nDCG@10": m[nDCG @ 10], "R@20": m[R @ 100], "MRR@10": m[RR @ 10],
            "hits_with_heading": headed / max(1, 20 * len(queries)),
            "search_p50_ms": 1000 * latency[len(latency) // 2]}


def main() -> None:
    from benchmarks.retrieval import load_beir

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", type=Path, default=SHARED_DATA / "retrieval" / "medquad_liveqa")
    ap.add_argument("--split", default="test")
    ap.add_argument("--per-pdf", type=int, default=40, help="documents per PDF handbook")
    ap.add_argument("--variants", default="plain,outline,fonts")
    ap.add_argument("--work", type=Path, help="keep the PDFs and knowledge bases here")
    ap.add_argument("--docs", type=int, default=0, help="only the first N documents (a smoke run)")
    args = ap.parse_args()
    corpus, queries, qrels = load_beir(args.data, args.split)
    corpus = corpus[:args.docs] if args.docs else corpus
    with tempfile.TemporaryDirectory() as tmp:
        work = args.work or Path(tmp)
        for name in args.variants.split(","):
            r = run_variant(name, corpus, queries, qrels, work, args.per_pdf)
            print(f"{r['variant']:8s} {r['pdfs']} PDFs, {r['chunks']} chunks, ingested in "
                  f"{r['ingest_s']:.0f} s; nDCG@10 {r['nDCG@10']:.3f} R@20 {r['R@20']:.3f} "
                  f"MRR@10 {r['MRR@10']:.3f}; hits with a heading {r['hits_with_heading']:.0%}; "
                  f"search p50 {r['search_p50_ms']:.0f} ms", flush=True)


if __name__ == "__main__":
    main()
