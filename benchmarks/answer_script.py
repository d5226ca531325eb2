"""Are Vietnamese and English answers kept free of Chinese characters while they are
generated? The default chat model (in its llama-server) answers questions written by
hand in Vietnamese and English from one MedQuAD passage each, with Docent's answer
prompt, twice: as sampled, and with every CJK/kana/Hangul token given a bias of -inf
(``LLM.latin_only``). Counts the raw answers that contain East Asian characters (what
the answer's own filter would otherwise have to delete) and the time per answer.

    python -m benchmarks.answer_script [--corpus DIR] [--model qwen2.5-coder-1.5b]
        [--max-tokens 120] [--temperature 0.2]
"""
from __future__ import annotations

import argparse
import json
import re
import tempfile
import time
from pathlib import Path

from benchmarks.common import SHARED_DATA, bench_settings
from common.text import EAST_ASIAN_RANGE

# (language, question, a phrase of the answering passage's title)
QUESTIONS = [
    ("vi", "Triệu chứng của viêm gan A là gì?", "What are the symptoms of Hepatitis A"),
    ("vi", "Trẻ em bị hen suyễn thường có những triệu chứng nào?",
     "What are the symptoms of Asthma - children"),
    ("vi", "Bệnh tiểu đường có những dấu hiệu gì?", "What are the symptoms of Diabetes"),
    ("vi", "Nguyên nhân gây bệnh zona là gì?", "What causes Shingles"),
    ("vi", "Làm sao để phòng ngừa bệnh thủy đậu?", "How to prevent Chickenpox"),
    ("vi", "Vì sao bị cao huyết áp?", "What causes High Blood Pressure"),
    ("vi", "Cholesterol trong máu cao là do đâu?", "What causes High Blood Cholesterol"),
    ("vi", "Thiếu máu do thiếu sắt xảy ra vì sao?", "What causes Iron deficiency anemia"),
    ("vi", "Điều gì gây ra bệnh hen suyễn?", "What causes Asthma"),
    ("vi", "Hội chứng buồng trứng đa nang là gì?", "What is (are) Polycystic ovary syndrome"),
    ("en", "What are the signs of hepatitis A?", "What are the symptoms of Hepatitis A"),
    ("en", "How can I avoid getting shingles?", "How to prevent Shingles"),
    ("en", "Why does high blood pressure happen?", "What causes High Blood Pressure"),
    ("en", "What does asthma look like in kids?", "What are the symptoms of Asthma - children"),
]
_EAST_ASIAN = re.compile(f"[{EAST_ASIAN_RANGE}]")  # one character at a time


def passages(corpus: Path) -> dict[str, dict]:
    by_title: dict[str, dict] = {}
    with (corpus / "corpus.jsonl").open(encoding="utf-8") as f:
        for line in f:
            row = json.loads(line)
            by_title.setdefault(row["title"].split(" ?")[0].strip(), row)
    return by_title


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--corpus", type=Path, default=SHARED_DATA / "retrieval" / "medquad_liveqa")
    ap.add_argument("--model", default="qwen2.5-coder-1.5b")
    ap.add_argument("--max-tokens", type=int, default=120)
    ap.add_argument("--temperature", type=float, default=0.2)
    args = ap.parse_args()

    from assistant.core import Assistant
    from assistant.profiles import preset
    from assistant.prompts import answer_messages
    from assistant.types import Source

    found = passages(args.corpus)
    with tempfile.TemporaryDirectory() as tmp:
        settings = bench_settings(Path(tmp), llm={"model": args.model, "parallel": 1})
        a = Assistant(settings)
        a.serving.warm_up()
        plain = a.serving.llm
        banned = plain.latin_only()
        assert banned is not plain, "this backend cannot bias tokens"
        system = preset("medical").system_prompt
        rows, totals = [], {"sampled": [0, 0, 0.0], "latin_only": [0, 0, 0.0]}
        for lang, question, title in QUESTIONS:
            doc = found.get(title)
            if doc is None:
                print(f"skipped (no passage titled {title!r})")
                continue
            src = Source(1, doc["_id"], "medquad", doc["_id"] + ".txt", 0, doc["text"][:2500], 1.0)
            messages = answer_messages(question, [src], system, lang)
            for label, llm in (("sampled", plain), ("latin_only", banned)):
                t0 = time.perf_counter()
                text = "".join(llm.stream_chat(messages, args.max_tokens, args.temperature))
                seconds = time.perf_counter() - t0
                han = len(_EAST_ASIAN.findall(text))
                totals[label][0] += han > 0
                totals[label][1] += han
                totals[label][2] += seconds
                rows.append((lang, question, label, han, seconds, text[:90].replace("\n", " ")))
                print(f"{lang} {label}: {han} CJK characters, {seconds:.1f} s", flush=True)
        a.close()
    n = len(rows) // 2
    print(f"\n## East Asian characters in {n} Vietnamese/English answers "
          f"({args.model}, temperature {args.temperature}, max_tokens {args.max_tokens})\n")
    print("| decoding | answers with any | characters | mean s per answer |")
    print("|---|---|---|---|")
    for label, (answers, chars, seconds) in totals.items():
        print(f"| {label} | {answers}/{n} | {chars} | {seconds / max(n, 1):.1f} |")
    print("\n| lang | question | decoding | CJK chars | s | start of the answer |")
    print("|---|---|---|---|---|---|")
    for lang, q, label, han, s, start in rows:
        print(f"| {lang} | {q} | {label} | {han} | {s:.1f} | {start} |")


if __name__ == "__main__":
    main()
