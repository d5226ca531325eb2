"""Questions in Simplified Chinese, Traditional Chinese and Vietnamese over English
documents (``benchmarks/data/crosslingual``, written by hand, each answered by a named
MedQuAD passage), asked of the whole MedQuAD x LiveQA corpus as one knowledge base with
the real default models.

Reports, per language and in all:
  * retrieval: the named passage (or one the set lists as answering equally) among the
    top 5 hits, searching with the question itself (no model involved);
  * the best hit's dense similarity (what the evidence gate judges) for answerable
    questions, so the gate can be calibrated for questions asked across languages;
  * with ``--answers``, the product's whole path (translation checked, both searches,
    gate, guardrail, answer): the named passage among the sources, answers withheld,
    answers in the question's language and script (not pasted English), answers citing
    the named passage, and answers citing its MedQuAD article (another section of it).

    python -m benchmarks.crosslingual [--corpus ../shared/data/retrieval/medquad_liveqa]
        [--set benchmarks/data/crosslingual] [--keep DIR] [--translations] [--answers]
        [--limit N] [--max-tokens N] [--embedder NAME]

``--keep DIR`` keeps the knowledge base (its first build embeds ~3,400 passages).
"""
from __future__ import annotations

import argparse
import json
import re
import statistics
import tempfile
import time
from collections import defaultdict
from pathlib import Path

from benchmarks.common import SHARED_DATA, bench_settings
from common.text import HAN

HERE = Path(__file__).resolve().parent
KB = "eval"
_LATIN_WORD = re.compile(r"[A-Za-z]{3,}")
_VI_MARK = re.compile(r"[ăâđêôơưạảấầẩẫậắằẳẵặẹẻẽếềểễệỉịọỏốồổỗộớờởỡợụủứừửữựỳỵỷỹ]", re.I)


def load_set(folder: Path) -> list[dict]:
    return [json.loads(line) for line in (folder / "queries.jsonl").open(encoding="utf-8")
            if line.strip()]


def build(corpus_dir: Path, data_dir: Path, cache: Path, embedder: str = "auto"):
    """The corpus as knowledge base ``eval`` under ``data_dir`` (vectors cached by content
    under ``cache``, so a rebuild does not embed again), embedded by ``embedder``."""
    from assistant.settings import load_settings
    from knowledge.embed_cache import CachedEmbedder
    from knowledge.embedders import EmbedderPool, load_embedder
    from benchmarks.retrieval import build_kb

    corpus = [json.loads(line) for line in (corpus_dir / "corpus.jsonl").open(encoding="utf-8")]
    models = load_settings().paths.models_dir
    pool = EmbedderPool(embedder, loader=lambda name: CachedEmbedder(
        load_embedder(name, models_dir=models), cache / "embeddings.sqlite3"))
    t0 = time.perf_counter()
    lib, kb = build_kb(corpus, data_dir, pool, 220, 40)
    print(f"knowledge base: {len(corpus)} passages -> {kb.chunk_count()} chunks, "
          f"{kb.manifest.embedder}, {time.perf_counter() - t0:.0f} s", flush=True)
    lib.close()


def answering(row: dict) -> set[str]:
    return {row["doc"], *row.get("also", [])}


def article(passage: str) -> str:
    """The MedQuAD article a passage id belongs to (``ADAM_0003147_Sec2``: ``ADAM_0003147``)."""
    return passage.rsplit("_Sec", 1)[0]


def script_ok(lang: str, text: str) -> bool:
    """The answer's body is in the question's script: no Han characters in Vietnamese;
    Traditional characters for zh-Hant and Simplified ones for zh-Hans."""
    from assistant.language import is_traditional

    if lang == "vi":
        return not HAN.search(text)
    if not HAN.search(text):
        return False
    return is_traditional(text) == (lang == "zh-Hant")


def language_ok(lang: str, text: str) -> bool:
    """Written in the asker's language, not pasted English: most words are Vietnamese
    (a tone mark in a good share of them) or most letters are Han characters."""
    words = text.split()
    if not words:
        return False
    if lang == "vi":
        return sum(bool(_VI_MARK.search(w)) for w in words) / len(words) >= 0.2
    han = len(HAN.findall(text))
    latin = sum(len(w) for w in _LATIN_WORD.findall(text))
    return han > 0 and han >= latin


def body(answer) -> str:
    """The model's text without the notices Docent adds and the [n] markers."""
    text = answer.text
    for notice in answer.notices:
        text = text.replace(notice, "")
    return re.sub(r"\[\d+\]", "", text).strip()


def retrieval(a, rows: list[dict]) -> list[dict]:
    from assistant.guard import support

    out = []
    for row in rows:
        hits = a.chat.search(row["text"], KB, top_k=5)
        top = [h.chunk.source for h in hits]
        out.append({"id": row["_id"], "lang": row["lang"], "found": bool(answering(row) & set(top)),
                    "support": support(hits)})
    return out


def translations(a, rows: list[dict]) -> list[dict]:
    """The translation step alone: the model's English for each question, whether the
    checks accept it, and whether searching with it (as the product does, beside the
    question) finds the named passage in the top 5."""
    from assistant.condense import translate_query
    from assistant.step_checks import check_translation

    out = []
    for row in rows:
        t0 = time.perf_counter()
        english = translate_query(a.serving.llm, row["text"], "en")
        verdict = check_translation(row["text"], english, "en")
        query = english if verdict.ok else row["text"]
        top = {h.chunk.source for h in a.chat.search(query, KB, top_k=5)}
        rec = {"id": row["_id"], "lang": row["lang"], "accepted": verdict.ok,
               "found": bool(answering(row) & top), "reason": verdict.reason,
               "english": english, "seconds": round(time.perf_counter() - t0, 1)}
        out.append(rec)
        print(json.dumps(rec, ensure_ascii=False), flush=True)
    return out


def ask_all(a, rows: list[dict]) -> list[dict]:
    from assistant.types import Answer, AnswerDelta

    out = []
    for row in rows:
        t0 = time.perf_counter()
        final, streamed = None, []
        for event in a.chat.ask(row["text"], KB):
            if isinstance(event, AnswerDelta):
                streamed.append(event.text)
            elif isinstance(event, Answer):
                final = event
        text = body(final)
        want = answering(row)
        rec = {
            "id": row["_id"], "lang": row["lang"], "refused": final.refused,
            "in_sources": any(s.source in want for s in final.sources[:5]),
            "cites": any(c.source in want for c in final.citations),
            # another section of the named passage's MedQuAD article: in a clinic's
            # knowledge base, where one article is one file, the right file
            "cites_article": bool({article(c.source) for c in final.citations}
                                  & {article(w) for w in want}),
            "cited": sorted({c.source for c in final.citations}),
            "language": bool(text) and not final.refused and language_ok(row["lang"], text),
            "script": script_ok(row["lang"], text) if text else True,
            "support": final.support, "steps": list(final.steps),
            "search_query": final.search_query, "seconds": round(time.perf_counter() - t0, 1),
            "answer": final.text[:300],
            "streamed": "".join(streamed)[:600],  # what the model wrote, before any withdrawal
        }
        out.append(rec)
        print(json.dumps(rec, ensure_ascii=False), flush=True)
    return out


def report(title: str, rows: list[dict], keys: list[str]) -> None:
    by_lang = defaultdict(list)
    for r in rows:
        by_lang[r["lang"]].append(r)
    print(f"\n{title}\n| language | n | " + " | ".join(keys) + " |")
    print("|---|---|" + "---|" * len(keys))
    for lang, group in [*sorted(by_lang.items()), ("all", rows)]:
        cells = [f"{sum(bool(r[k]) for r in group)}/{len(group)}" for k in keys]
        print(f"| {lang} | {len(group)} | " + " | ".join(cells) + " |")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--corpus", type=Path, default=SHARED_DATA / "retrieval" / "medquad_liveqa")
    ap.add_argument("--set", type=Path, default=HERE / "data" / "crosslingual")
    ap.add_argument("--keep", type=Path, help="data dir to keep the knowledge base in")
    ap.add_argument("--cache", type=Path, default=Path(tempfile.gettempdir()) / "docent-eval-cache")
    ap.add_argument("--translations", action="store_true",
                    help="also measure the translation step alone")
    ap.add_argument("--answers", action="store_true", help="also ask the model (slow)")
    ap.add_argument("--max-tokens", type=int, default=0, help="cap answers (0: the setting)")
    ap.add_argument("--limit", type=int, default=0, help="first N questions of each language")
    ap.add_argument("--model", default="qwen2.5-coder-1.5b")
    ap.add_argument("--embedder", default="auto",
                    help="the knowledge base's embedder (e.g. embeddinggemma-300m)")
    args = ap.parse_args()

    from assistant.core import Assistant
    from assistant.settings import EmbedderSettings

    rows = load_set(args.set)
    if args.limit:
        seen = defaultdict(int)
        rows = [r for r in rows if (seen.__setitem__(r["lang"], seen[r["lang"]] + 1)
                                    or seen[r["lang"]] <= args.limit)]
    with tempfile.TemporaryDirectory() as tmp:
        data_dir = args.keep or Path(tmp) / "data"
        build(args.corpus, data_dir, args.cache, args.embedder)
        llm = {"model": args.model, "temperature": 0.0}
        llm.update({"max_tokens": args.max_tokens} if args.max_tokens else {})
        # a knowledge base on the product's cross-lingual embedder is treated as the
        # product treats one it moved there (``embedder.across``); others keep theirs
        across = EmbedderSettings().across
        settings = bench_settings(data_dir, default_kb=KB, llm=llm, embedder={
            "across": across if args.embedder == across else ""})
        a = Assistant(settings)
        found = retrieval(a, rows)
        report("Retrieval with the question itself (hybrid, top 5)", found, ["found"])
        sims = sorted(r["support"] for r in found if r["support"] is not None)
        if sims:
            print(f"best-hit similarity of these answerable questions: p5 "
                  f"{sims[int(0.05 * (len(sims) - 1))]:.3f}, median {statistics.median(sims):.3f}, "
                  f"min {sims[0]:.3f} ({a.library.manifest(KB).embedder})")
        if args.translations:
            a.serving.warm_up()
            report("The translation step (checked; the question itself when rejected)",
                   translations(a, rows), ["accepted", "found"])
        if args.answers:
            a.serving.warm_up()
            answers = ask_all(a, rows)
            for r in answers:
                r["answered"] = not r["refused"]
            report("Answers (the product's whole path)", answers,
                   ["in_sources", "answered", "language", "script", "cites", "cites_article"])
            used = sum(any(s.startswith("translate used") for s in r["steps"]) for r in answers)
            print(f"translation used for {used}/{len(answers)} searches; median "
                  f"{statistics.median(r['seconds'] for r in answers):.0f} s per answer")
        a.close()


if __name__ == "__main__":
    main()
