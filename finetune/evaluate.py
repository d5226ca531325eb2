"""Before/after evaluation of an adapter on a dataset's held-out split, closed-book and,
when the job folder holds ``rag_eval.jsonl`` (the chat prompt with the knowledge base's
sources for each held-out question, written when the job was queued), with RAG too.

QA: exact match and token-F1 of the greedy reply against the reference answer; multiple
choice (a reference that is one option letter A-E): accuracy of the first letter in the
reply. Raw text (continued pretraining): held-out loss and perplexity.

>>> round(token_f1("The dose is 500 mg", "500 mg twice daily"), 2)
0.44
>>> token_f1("每日两次", "每日一次") == 0.75
True
>>> choice_letter("Answer: (B) because ...")
'B'
"""
from __future__ import annotations

import json
import logging
import math
import re
import time
from collections import Counter
from collections.abc import Callable, Sequence
from pathlib import Path

from common.text import MARKER, words
from finetune.data import Example

log = logging.getLogger(__name__)

MAX_EXAMPLES = 50
RAG_PROMPTS = "rag_eval.jsonl"
EVALUATION_FILE = "evaluation.jsonl"  # every held-out question's replies and scores
REPLIES = "replies"
MAX_NEW_TOKENS = 64
_LETTER = re.compile(r"^\s*\(?([A-E])\)?(?:[\s.):,]|$)")
_ANSWER_LETTER = re.compile(r"\b(?:answer|correct)\b[^A-Za-z]{0,12}\(?([A-E])\)?\b", re.IGNORECASE)


def tokens(text: str) -> list[str]:
    """Lowercased words; CJK characters one by one."""
    return words(text)


def token_f1(prediction: str, reference: str) -> float:
    p, r = tokens(prediction), tokens(reference)
    if not p or not r:
        return float(p == r)
    common = sum((Counter(p) & Counter(r)).values())
    if not common:
        return 0.0
    precision, recall = common / len(p), common / len(r)
    return 2 * precision * recall / (precision + recall)


def rouge_l(prediction: str, reference: str) -> float:
    """ROUGE-L F-measure: the longest common subsequence of words.

    >>> round(rouge_l("the cat sat on the mat", "the cat is on the mat"), 2)
    0.83
    """
    p, r = tokens(prediction), tokens(reference)
    if not p or not r:
        return 0.0
    prev = [0] * (len(r) + 1)
    for a in p:
        cur = [0]
        for j, b in enumerate(r):
            cur.append(prev[j] + 1 if a == b else max(prev[j + 1], cur[j]))
        prev = cur
    if not prev[-1]:
        return 0.0
    precision, recall = prev[-1] / len(p), prev[-1] / len(r)
    return 2 * precision * recall / (precision + recall)


def exact_match(prediction: str, reference: str) -> float:
    return float(tokens(prediction) == tokens(reference))


def choice_letter(text: str) -> str:
    m = _LETTER.match(text) or _ANSWER_LETTER.search(text)
    return m.group(1).upper() if m else ""


def is_multiple_choice(examples: Sequence[Example]) -> bool:
    return bool(examples) and all(re.fullmatch(r"\(?[A-E]\)?\.?", e.answer.strip())
                                  for e in examples)


def per_question(predictions: Sequence[str], examples: Sequence[Example]) -> list[float]:
    """Each reply's score: the option letter's correctness when the set is multiple
    choice, else token-F1."""
    if is_multiple_choice(examples):
        return [float(choice_letter(p) == choice_letter(e.answer))
                for p, e in zip(predictions, examples)]
    return [token_f1(p, e.answer) for p, e in zip(predictions, examples)]


def score(predictions: Sequence[str], examples: Sequence[Example],
          values: Sequence[float] | None = None) -> dict:
    """Averages of ``per_question`` (passed as ``values`` when already computed)."""
    values = per_question(predictions, examples) if values is None else values
    mean = round(sum(values) / len(values), 4)
    if is_multiple_choice(examples):
        return {"accuracy": mean}
    em = [exact_match(p, e.answer) for p, e in zip(predictions, examples)]
    return {"token_f1": mean, "exact": round(sum(em) / len(em), 4)}


def _prompt(example: Example) -> list[dict]:
    if example.messages:
        return [{"role": r, "content": c} for r, c in example.messages[:-1]]
    return [{"role": "user", "content": example.prompt}]


def hf_generate(model, tok, messages: list[dict], max_new_tokens: int = MAX_NEW_TOKENS) -> str:
    import torch

    text = tok.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    enc = tok(text, return_tensors="pt", add_special_tokens=False).to(model.device)
    with torch.no_grad():
        out = model.generate(**enc, max_new_tokens=max_new_tokens, do_sample=False,
                             pad_token_id=tok.pad_token_id, eos_token_id=tok.eos_token_id)
    return tok.decode(out[0][enc["input_ids"].shape[-1]:], skip_special_tokens=True).strip()


def read_rag_prompts(job_dir: Path) -> list[dict]:
    """The RAG prompts a job was queued with ({"kb", "messages"} per held-out question)."""
    path = job_dir / RAG_PROMPTS
    if not path.is_file():
        return []
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()
            if line.strip()]


def _run(generate_base: Callable[[list[dict]], str], generate_adapter: Callable[[list[dict]], str],
         prompts: Sequence[list[dict]], examples: Sequence[Example], mode: str,
         clean: Callable[[str], str] = str.strip) -> dict:
    t0 = time.perf_counter()
    base = [clean(generate_base(p)) for p in prompts]
    tuned = [clean(generate_adapter(p)) for p in prompts]
    base_scores, tuned_scores = per_question(base, examples), per_question(tuned, examples)
    replies = [{"mode": mode, "question": e.question, "reference": e.answer, "base": b,
                "adapter": a, "base_score": round(bs, 4), "adapter_score": round(ts, 4)}
               for e, b, a, bs, ts in zip(examples, base, tuned, base_scores, tuned_scores)]
    samples = [{k: r[k][:300] for k in ("question", "reference", "base", "adapter")}
               for r in replies[:3]]
    return {"heldout": len(examples), "mode": mode, "base": score(base, examples, base_scores),
            "adapter": score(tuned, examples, tuned_scores), "samples": samples,
            "eval_seconds": round(time.perf_counter() - t0, 1), REPLIES: replies}


def write_replies(job_dir: Path, evaluation: dict) -> int:
    """Move each question's replies and scores out of ``evaluation`` (they are too long
    for the adapter's manifest) into ``<job>/evaluation.jsonl``; the number written."""
    rows = evaluation.pop(REPLIES, []) + evaluation.get("rag", {}).pop(REPLIES, [])
    if rows:
        tmp = job_dir / (EVALUATION_FILE + ".tmp")
        tmp.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows),
                       encoding="utf-8")
        tmp.replace(job_dir / EVALUATION_FILE)
    return len(rows)


def compare(generate_base: Callable[[list[dict]], str], generate_adapter: Callable[[list[dict]], str],
            examples: Sequence[Example], rag: Sequence[dict] = ()) -> dict:
    """Scores of both models on the same examples, with a few sample replies: closed-book,
    and under "rag" with the knowledge base's sources in the prompt (``rag``: one prompt
    per example, in order; citation markers are removed before scoring)."""
    out = _run(generate_base, generate_adapter, [_prompt(e) for e in examples], examples,
               "closed-book")
    rag = list(rag)[:len(examples)]
    if rag:
        scored = list(examples)[:len(rag)]
        out["rag"] = _run(generate_base, generate_adapter, [r["messages"] for r in rag], scored,
                          f"with RAG ({rag[0].get('kb', '')})",
                          lambda t: MARKER.sub("", t).strip())
    return out


def evaluate_adapter(method: str, base_dir: Path, adapter_dir: Path,
                     heldout: Sequence[Example], max_examples: int = MAX_EXAMPLES,
                     rag: Sequence[dict] = ()) -> dict:
    """Base against adapter on up to ``max_examples`` held-out examples (and the same
    questions with RAG when ``rag`` holds their prompts, see ``read_rag_prompts``)."""
    examples = list(heldout)[:max_examples]
    if method == "reft":
        return _evaluate_reft(base_dir, adapter_dir, examples, rag)
    if method == "full":
        return _evaluate_full(base_dir, adapter_dir, examples, rag)
    from peft import PeftModel

    from finetune.train import load_base

    model, tok = load_base(base_dir)
    model = PeftModel.from_pretrained(model, str(adapter_dir))
    model.eval()
    if method == "cpt" and not examples[0].messages:
        return _evaluate_text(model, tok, examples)

    def base_fn(messages):
        with model.disable_adapter():
            return hf_generate(model, tok, messages)

    return compare(base_fn, lambda m: hf_generate(model, tok, m), examples, rag)


def _evaluate_full(base_dir: Path, model_dir: Path, examples: Sequence[Example],
                   rag: Sequence[dict] = ()) -> dict:
    """A fully fine-tuned model (its own folder, tokenizer included) against its base."""
    from finetune.train import load_base

    base, tok = load_base(base_dir)
    tuned, tuned_tok = load_base(model_dir)
    base.eval()
    tuned.eval()
    return compare(lambda m: hf_generate(base, tok, m),
                   lambda m: hf_generate(tuned, tuned_tok, m), examples, rag)


def _evaluate_reft(base_dir: Path, adapter_dir: Path, examples: Sequence[Example],
                   rag: Sequence[dict] = ()) -> dict:
    from finetune.reft import generate, load_reft
    from finetune.train import load_base

    model, tok = load_base(base_dir)
    model.eval()
    reft = load_reft(adapter_dir, base_dir, model=model)
    return compare(lambda m: hf_generate(model, tok, m),
                   lambda m: generate(reft, tok, m, max_new_tokens=MAX_NEW_TOKENS), examples, rag)


def _evaluate_text(model, tok, examples: Sequence[Example], block_size: int = 256) -> dict:
    """Held-out causal-LM loss of base and adapter on raw text."""
    import torch

    from finetune.train import text_blocks

    blocks = text_blocks(tok, examples, block_size)[:MAX_EXAMPLES]

    def mean_loss() -> float:
        losses = []
        with torch.no_grad():
            for b in blocks:
                ids = torch.tensor([b["input_ids"]], device=model.device)
                losses.append(float(model(input_ids=ids, labels=ids).loss))
        return sum(losses) / len(losses)

    with model.disable_adapter():
        base = mean_loss()
    tuned = mean_loss()
    return {"heldout": len(blocks), "mode": "held-out text",
            "base": {"loss": round(base, 4), "perplexity": round(math.exp(min(base, 50)), 2)},
            "adapter": {"loss": round(tuned, 4), "perplexity": round(math.exp(min(tuned, 50)), 2)}}
