"""Plain formatting for the Fine-tune tab and the chat model menu (no gradio here, so
they are easy to test): dataset rows <-> an editable table, job rows, the loss curve,
adapter rows and the before/after metrics.

>>> headers, table = dataset_table("chat", [{"messages": [
...     {"role": "user", "content": "Hours?"}, {"role": "assistant", "content": "2-7 pm"}]}])
>>> headers, table
(['system', 'user', 'assistant', 'source'], [['', 'Hours?', '2-7 pm', '']])
>>> table_rows(headers, table)
[{'messages': [{'role': 'user', 'content': 'Hours?'}, {'role': 'assistant', 'content': '2-7 pm'}]}]
>>> duration(3725)
'1 h 02 min'
"""
from __future__ import annotations

import json
import math
from collections.abc import Sequence

CHAT_COLUMNS = ["system", "user", "assistant", "source"]
MESSAGES_COLUMNS = ["messages (JSON)", "source"]
TEXT_COLUMNS = ["text", "source"]
PREFERENCE_COLUMNS = ["prompt", "chosen", "rejected", "source"]
JOB_HEADERS = ["Job", "Name", "Method", "Status", "Step", "Loss", "Elapsed", "ETA"]
ADAPTER_HEADERS = ["Adapter", "Name", "Method", "Base model", "Created", "Chat backend",
                   "Base → adapter (held-out)"]
METHOD_LABELS = {"lora": "LoRA", "cpt": "Continued pretraining", "dpo": "DPO", "reft": "ReFT",
                 "full": "Full fine-tuning"}
SCORES = (("token_f1", "token F1", True), ("exact", "exact match", True),
          ("accuracy", "accuracy", True), ("loss", "loss", False),
          ("perplexity", "perplexity", False))


# --- datasets ------------------------------------------------------------------------
def _single_turn(row: dict) -> bool:
    roles = [m.get("role") for m in row.get("messages", [])]
    return roles in (["user", "assistant"], ["system", "user", "assistant"])


def dataset_table(shape: str, rows: Sequence[dict]) -> tuple[list[str], list[list[str]]]:
    """(headers, cells) of normalized dataset rows for an editable table. Chat rows are
    system/user/assistant columns when every row is one exchange, else a JSON column."""
    if shape == "text":
        return TEXT_COLUMNS, [[r.get("text", ""), r.get("source", "")] for r in rows]
    if shape == "preference":
        return PREFERENCE_COLUMNS, [[r.get(k, "") for k in PREFERENCE_COLUMNS] for r in rows]
    if all(_single_turn(r) for r in rows):
        table = []
        for r in rows:
            turns = {m["role"]: m["content"] for m in r["messages"]}
            table.append([turns.get("system", ""), turns["user"], turns["assistant"],
                          r.get("source", "")])
        return CHAT_COLUMNS, table
    return MESSAGES_COLUMNS, [[json.dumps(r["messages"], ensure_ascii=False), r.get("source", "")]
                              for r in rows]


def _cell(value) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return ""
    return str(value).strip()


def table_rows(headers: Sequence[str], table: Sequence[Sequence]) -> list[dict]:
    """Dataset rows back from an edited table; a row with every cell empty is dropped
    (that is how a row is deleted). Bad rows are left for the dataset validator."""
    out = []
    for cells in table:
        row = {h: _cell(v) for h, v in zip(headers, cells)}
        if not any(row.values()):
            continue
        out.append(_table_row(list(headers), row))
    return out


def _table_row(headers: list[str], row: dict) -> dict:
    source = {"source": row["source"]} if row.get("source") else {}
    if headers == CHAT_COLUMNS:
        messages = [{"role": "system", "content": row["system"]}] if row["system"] else []
        messages += [{"role": "user", "content": row["user"]},
                     {"role": "assistant", "content": row["assistant"]}]
        return {"messages": messages, **source}
    if headers == MESSAGES_COLUMNS:
        return {"messages": row["messages (JSON)"], **source}  # a JSON string: validated later
    return {k: v for k, v in row.items() if k != "source"} | source


def dataset_label(record) -> str:
    """'faq (chat, 180 train / 20 held-out)' for a ``DatasetRecord``."""
    return f"{record.name} ({record.shape}, {record.train} train / {record.heldout} held-out)"


# --- jobs ------------------------------------------------------------------------------
def duration(seconds: float | None) -> str:
    if seconds is None or seconds < 0:
        return "–"
    seconds = round(seconds)
    if seconds < 60:
        return f"{seconds} s"
    if seconds < 3600:
        return f"{seconds // 60} min {seconds % 60:02d} s"
    return f"{seconds // 3600} h {seconds % 3600 // 60:02d} min"


def job_row(record, now: float) -> list[str]:
    """One row of the jobs table for a ``JobRecord`` (its last progress line included)."""
    p = record.progress or {}
    step = f"{p['step']}/{p['total']}" if "step" in p else "–"
    loss = f"{p['loss']:.4f}" if isinstance(p.get("loss"), (int, float)) else "–"
    if "elapsed" in p:
        elapsed = duration(p["elapsed"])
    elif record.started:
        elapsed = duration((record.ended or now) - record.started)
    else:
        elapsed = "–"
    eta = duration(p.get("eta")) if record.status == "running" and "eta" in p else "–"
    return [record.id, record.name, METHOD_LABELS.get(record.method, record.method),
            record.status, step, loss, elapsed, eta]


def job_label(record) -> str:
    name = f" {record.name}" if record.name else ""
    return f"{record.id}{name} ({record.method}, {record.status})"


def loss_points(rows: Sequence[dict]) -> list[tuple[int, float]]:
    """(step, loss) of the metrics lines, one per step (a resumed job repeats the steps
    after its last checkpoint: the later line wins), in step order.

    >>> loss_points([{"step": 1, "loss": 2.0}, {"step": 2, "loss": 1.5},
    ...              {"step": 2, "loss": 1.4}, {"step": 3}])
    [(1, 2.0), (2, 1.4)]
    """
    points: dict[int, float] = {}
    for row in rows:
        if isinstance(row.get("step"), int) and isinstance(row.get("loss"), (int, float)):
            points[row["step"]] = float(row["loss"])
    return sorted(points.items())


def job_details(record) -> str:
    """Markdown: status, the error, the estimate it started with, the result."""
    lines = [(f"**{record.id}** · {METHOD_LABELS.get(record.method, record.method)} on "
              f"`{record.base_model}` · dataset `{record.dataset_id}` · **{record.status}**")]
    if record.error:
        lines.append(f"⚠️ {record.error}")
    if record.estimate:
        e = record.estimate
        lines.append(f"Estimate at start: ~{e.get('memory_gb', 0):.1f} GB, "
                     f"~{e.get('seconds_per_step', 0):.1f} s per step.")
    if record.adapter_id:
        lines.append(f"Adapter **{record.adapter_id}** is registered: pick it in the Chat "
                     "tab's model menu.")
    return "\n\n".join(lines)


# --- adapters ------------------------------------------------------------------------
def _fmt(value: float, percent: bool) -> str:
    return f"{value * 100:.1f}" if percent else f"{value:.3f}"


def _delta(base: float, tuned: float, percent: bool) -> str:
    d = (tuned - base) * (100 if percent else 1)
    return f"{d:+.1f} pts" if percent else f"{d:+.3f}"


def headline(metrics: dict) -> str:
    """'token F1 31.0 → 52.0' from an adapter's metrics ('' before evaluation)."""
    base, tuned = metrics.get("base") or {}, metrics.get("adapter") or {}
    for key, label, percent in SCORES:
        if key in base and key in tuned:
            return f"{label} {_fmt(base[key], percent)} → {_fmt(tuned[key], percent)}"
    return ""


def backend_label(record) -> str:
    if record.is_full:
        if record.gguf:
            return "llama.cpp (its own GGUF model)"
        return f"llama.cpp (GGUF failed: {record.gguf_error})" if record.gguf_error else \
            "llama.cpp (GGUF made on first use)"
    if not record.is_lora:
        return "transformers (ReFT)"
    if record.gguf:
        return "llama.cpp (GGUF LoRA)"
    return f"transformers (GGUF failed: {record.gguf_error})" if record.gguf_error else \
        "transformers"


def adapter_row(record) -> list[str]:
    return [record.adapter_id, record.name, METHOD_LABELS.get(record.method, record.method),
            record.base_model, record.created.replace("T", " ")[:16],
            backend_label(record), headline(record.metrics) or "–"]


def _evaluations(metrics: dict) -> list[tuple[str, dict, dict]]:
    """(mode, base scores, adapter scores) for closed-book and, when present, RAG."""
    out = []
    if metrics.get("base") and metrics.get("adapter"):
        out.append((metrics.get("mode", "closed-book"), metrics["base"], metrics["adapter"]))
    rag = metrics.get("rag")
    if isinstance(rag, dict) and rag.get("base") and rag.get("adapter"):
        out.append((rag.get("mode", "with RAG"), rag["base"], rag["adapter"]))
    return out


def metrics_markdown(record) -> str:
    """The adapter's before/after evaluation side by side, training facts and samples."""
    m = record.metrics or {}
    evals = _evaluations(m)
    parts = [(f"### {record.name} · {METHOD_LABELS.get(record.method, record.method)} on "
              f"`{record.base_model}`")]
    if evals:
        parts.append(_comparison_table(evals, m.get("heldout")))
    else:
        why = m.get("eval_error") or m.get("eval_note") or "not evaluated yet"
        parts.append(f"No before/after numbers: {why}.")
    parts.append(_training_line(m))
    if m.get("samples"):
        parts.append(_samples_table(m["samples"]))
    return "\n\n".join(p for p in parts if p)


def _comparison_table(evals: list[tuple[str, dict, dict]], heldout) -> str:
    head = ["Metric"]
    for mode, _, _ in evals:
        head += [f"Base ({mode})", f"Adapter ({mode})", "Change"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for key, label, percent in SCORES:
        if not any(key in b and key in a for _, b, a in evals):
            continue
        cells = [label + (" (%)" if percent else "")]
        for _, base, tuned in evals:
            if key in base and key in tuned:
                cells += [_fmt(base[key], percent), _fmt(tuned[key], percent),
                          _delta(base[key], tuned[key], percent)]
            else:
                cells += ["–", "–", "–"]
        lines.append("| " + " | ".join(cells) + " |")
    note = f"\n\nOn {heldout} held-out examples." if heldout else ""
    return "\n".join(lines) + note


def _training_line(m: dict) -> str:
    facts = []
    if m.get("steps"):
        facts.append(f"{m['steps']} steps")
    if m.get("seconds"):
        facts.append(f"in {duration(m['seconds'])}")
    if isinstance(m.get("train_loss"), (int, float)):
        facts.append(f"final training loss {m['train_loss']:.4f}")
    if m.get("trainable_params") and m.get("total_params"):
        share = 100 * m["trainable_params"] / m["total_params"]
        facts.append(f"{m['trainable_params']:,} trainable parameters ({share:.3f}% of "
                     f"{m['total_params']:,})")
    return ("Trained: " + ", ".join(facts) + ".") if facts else ""


def _samples_table(samples: Sequence[dict]) -> str:
    def cell(text) -> str:
        return str(text or "").replace("|", "\\|").replace("\n", " ")[:200]

    lines = ["| Question | Reference | Base | Adapter |", "|---|---|---|---|"]
    lines += [f"| {cell(s.get('question'))} | {cell(s.get('reference'))} | "
              f"{cell(s.get('base'))} | {cell(s.get('adapter'))} |" for s in samples]
    return "**Samples**\n\n" + "\n".join(lines)


def model_menu(choices: Sequence) -> list[tuple[str, str]]:
    """(label, id) pairs of ``ModelChoice``s for the chat model dropdown."""
    return [(c.label, c.model_id) for c in choices]
