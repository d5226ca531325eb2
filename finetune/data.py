"""Training datasets: load JSONL / CSV / parquet in the common shapes, validate with
row numbers, normalize to frozen ``Example``s, keep a held-out split, store on disk.

Shapes (detected from the first row's fields; every row must match it):
  chat        {"messages": [{"role": ..., "content": ...}, ...]}  (last turn: assistant)
              {"prompt", "response"} or {"instruction", "input", "output"} (Alpaca)
              -> both normalized to messages
  text        {"text"}                                  continued pretraining
  preference  {"prompt", "chosen", "rejected"}          DPO

>>> rows = [{"instruction": "Add", "input": "1+1", "output": "2"}]
>>> shape, ex = normalize_rows(rows, "x.jsonl")
>>> shape, ex[0].messages
('chat', (('user', 'Add\\n\\n1+1'), ('assistant', '2')))

A dataset lives in ``<data_dir>/datasets/<id>/``: train.jsonl, heldout.jsonl, meta.json.
"""
from __future__ import annotations

import csv
import hashlib
import json
import random
import re
import time
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from common.text import HAN, HAN_RANGE
from finetune.errors import FinetuneError

FORMAT_VERSION = 1
MAX_ERRORS = 20
SHAPES = ("chat", "text", "preference")
ROLES = ("system", "user", "assistant")


class DatasetError(FinetuneError, ValueError):
    """A dataset that cannot be used; the message names the rows that are wrong and why."""


@dataclass(frozen=True)
class Example:
    """One normalized training example (fields unused by its shape stay empty)."""

    messages: tuple[tuple[str, str], ...] = ()
    text: str = ""
    prompt: str = ""
    chosen: str = ""
    rejected: str = ""
    source: str = ""  # chunk id when generated from a knowledge base

    @property
    def shape(self) -> str:
        return "chat" if self.messages else "preference" if self.chosen else "text"

    def to_json(self) -> dict:
        if self.messages:
            out: dict = {"messages": [{"role": r, "content": c} for r, c in self.messages]}
        elif self.chosen:
            out = {"prompt": self.prompt, "chosen": self.chosen, "rejected": self.rejected}
        else:
            out = {"text": self.text}
        if self.source:
            out["source"] = self.source
        return out

    @property
    def question(self) -> str:
        """The last user turn (chat) or the prompt (preference)."""
        users = [c for r, c in self.messages if r == "user"]
        return users[-1] if users else self.prompt

    @property
    def answer(self) -> str:
        return self.messages[-1][1] if self.messages else self.chosen


@dataclass(frozen=True)
class DatasetRecord:
    id: str
    name: str
    shape: str
    train: int
    heldout: int
    hash: str
    origin: str
    created: str
    path: Path = field(compare=False)
    extra: dict = field(default_factory=dict, compare=False, hash=False)


def mean_tokens(examples: Sequence[Example]) -> float:
    """A tokenizer-free estimate of the mean example length in model tokens (words ~1.3
    tokens, CJK characters ~1, plus the chat template's few tokens per turn and its default
    system prompt). On the generated MedQuAD pairs: 85 against 87 counted by Qwen's
    tokenizer."""
    if not examples:
        return 0.0
    total = 22.0 * len(examples)
    for e in examples:
        parts = [c for _, c in e.messages] or [e.text or "", e.prompt, e.chosen, e.rejected]
        for part in parts:
            cjk = len(HAN.findall(part))
            total += 1.3 * len(_WORD.findall(part)) + cjk + 5
    return total / len(examples)


_WORD = re.compile(f"[^\\W{HAN_RANGE}]+", re.UNICODE)


# --- reading files ---------------------------------------------------------------
def read_rows(path: Path) -> list[tuple[int, object]]:
    """(row number, raw record) pairs. JSONL: the 1-based line; CSV: the 1-based data
    row (the header is not counted); parquet: the 1-based row."""
    suffix = path.suffix.lower()
    if suffix in (".jsonl", ".json", ".ndjson"):
        return _read_jsonl(path)
    if suffix in (".csv", ".tsv"):
        with path.open(newline="", encoding="utf-8-sig") as f:
            reader = csv.DictReader(f, delimiter="\t" if suffix == ".tsv" else ",")
            return [(i, dict(row)) for i, row in enumerate(reader, start=1)]
    if suffix == ".parquet":
        import pyarrow.parquet as pq

        return list(enumerate(pq.read_table(path).to_pylist(), start=1))
    raise DatasetError(f"{path.name}: unsupported file type {suffix or '(none)'}; "
                       "use .jsonl, .csv or .parquet.")


def _read_jsonl(path: Path) -> list[tuple[int, object]]:
    text = path.read_text(encoding="utf-8-sig")
    if path.suffix.lower() == ".json" and text.lstrip().startswith("["):
        try:
            return list(enumerate(json.loads(text), start=1))
        except json.JSONDecodeError as exc:
            raise DatasetError(f"{path.name}: not valid JSON ({exc}).") from exc
    rows, errors = [], []
    for n, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            rows.append((n, json.loads(line)))
        except json.JSONDecodeError as exc:
            errors.append(f"line {n}: not valid JSON ({exc.msg})")
    if errors:
        raise DatasetError(_summary(path.name, errors))
    return rows


# --- normalizing -------------------------------------------------------------------
def detect_shape(record: dict) -> str:
    keys = {k for k, v in record.items() if v not in (None, "")}
    if "messages" in keys:
        return "chat"
    if {"prompt", "chosen", "rejected"} <= keys:
        return "preference"
    if "instruction" in keys or {"prompt", "response"} <= keys or {"question", "answer"} <= keys:
        return "chat"
    if "text" in keys:
        return "text"
    raise DatasetError("cannot tell the dataset's shape from the fields "
                       f"{sorted(record)}: use messages, prompt/response, "
                       "instruction/input/output, text, or prompt/chosen/rejected.")


def _str(record: dict, key: str, required: bool = True) -> str:
    value = record.get(key)
    if value is None or (isinstance(value, str) and not value.strip()):
        if required:
            raise ValueError(f"'{key}' is missing or empty")
        return ""
    if not isinstance(value, (str, int, float)):
        raise ValueError(f"'{key}' must be text, not {type(value).__name__}")
    return str(value).strip()


def _chat(record: dict) -> Example:
    if "messages" in record:
        return Example(messages=_messages(record["messages"]), source=_str(record, "source", False))
    if "instruction" in record:
        prompt = _str(record, "instruction")
        extra = _str(record, "input", False)
        prompt = f"{prompt}\n\n{extra}" if extra else prompt
        answer = _str(record, "output")
    elif "question" in record and "prompt" not in record:
        prompt, answer = _str(record, "question"), _str(record, "answer")
    else:
        prompt, answer = _str(record, "prompt"), _str(record, "response")
    turns = (("user", prompt), ("assistant", answer))
    system = _str(record, "system", False)
    return Example(messages=((("system", system),) if system else ()) + turns,
                   source=_str(record, "source", False))


def _messages(value) -> tuple[tuple[str, str], ...]:
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except json.JSONDecodeError as exc:
            raise ValueError(f"'messages' is not valid JSON ({exc.msg})") from exc
    if not isinstance(value, list) or not value:
        raise ValueError("'messages' must be a non-empty list of {role, content}")
    out = []
    for i, m in enumerate(value, start=1):
        if not isinstance(m, dict) or m.get("role") not in ROLES:
            raise ValueError(f"message {i} needs a role of {', '.join(ROLES)}")
        content = m.get("content")
        if not isinstance(content, str) or not content.strip():
            raise ValueError(f"message {i} ({m['role']}) has no text content")
        out.append((m["role"], content.strip()))
    if out[-1][0] != "assistant":
        raise ValueError("the last message must be the assistant's reply (the training target)")
    if not any(r == "user" for r, _ in out):
        raise ValueError("there is no user message")
    return tuple(out)


def _normalize(record: object, shape: str) -> Example:
    if not isinstance(record, dict):
        raise ValueError(f"expected an object with fields, got {type(record).__name__}")
    if shape == "chat":
        return _chat(record)
    if shape == "text":
        return Example(text=_str(record, "text"), source=_str(record, "source", False))
    return Example(prompt=_str(record, "prompt"), chosen=_str(record, "chosen"),
                   rejected=_str(record, "rejected"), source=_str(record, "source", False))


def normalize_rows(rows: Iterable, name: str = "dataset",
                   numbered: bool = False) -> tuple[str, list[Example]]:
    """(shape, examples) from raw records; ``DatasetError`` listing each bad row."""
    pairs = list(rows) if numbered else list(enumerate(rows, start=1))
    if not pairs:
        raise DatasetError(f"{name}: the file has no rows.")
    first = pairs[0][1]
    if not isinstance(first, dict):
        raise DatasetError(f"{name}: row {pairs[0][0]}: expected an object with fields.")
    try:
        shape = detect_shape(first)
    except DatasetError as exc:
        raise DatasetError(f"{name}: row {pairs[0][0]}: {exc}") from None
    examples, errors = [], []
    for n, record in pairs:
        try:
            examples.append(_normalize(record, shape))
        except ValueError as exc:
            errors.append(f"row {n}: {exc}")
    if errors:
        raise DatasetError(_summary(name, errors, shape))
    return shape, examples


def _summary(name: str, errors: list[str], shape: str = "") -> str:
    head = f"{name}: {len(errors)} bad row(s)" + (f" for the {shape} shape" if shape else "")
    more = f"\n... and {len(errors) - MAX_ERRORS} more" if len(errors) > MAX_ERRORS else ""
    return head + ":\n" + "\n".join(errors[:MAX_ERRORS]) + more


def load_file(path: Path | str) -> tuple[str, list[Example]]:
    path = Path(path).expanduser()
    if not path.is_file():
        raise DatasetError(f"No dataset file at {path}.")
    return normalize_rows(read_rows(path), path.name, numbered=True)


# --- hashing, splitting, storing ---------------------------------------------------
def dataset_hash(examples: Sequence[Example]) -> str:
    h = hashlib.sha256()
    for ex in examples:
        h.update(json.dumps(ex.to_json(), ensure_ascii=False, sort_keys=True).encode())
        h.update(b"\n")
    return h.hexdigest()


def heldout_split(examples: Sequence[Example], digest: str, fraction: float = 0.1,
                  minimum: int = 5, below: int = 20) -> tuple[list[Example], list[Example]]:
    """(train, heldout): ``fraction`` (at least ``minimum``) held out when there are at
    least ``below`` examples, chosen by a shuffle seeded with the dataset hash.

    Examples whose source passage has another example are held out first, one per
    passage, so that a held-out question asks about a passage the model is trained on
    (in other words): closed-book scores then measure what the adapter learned from the
    documents, not what it can guess about passages it never saw.

    >>> ex = [Example(messages=(("user", f"q{i}"), ("assistant", "a")), source=f"c{i // 2}")
    ...       for i in range(40)]
    >>> train, held = heldout_split(ex, "0" * 16)
    >>> len(held), len({e.source for e in held}), {e.source for e in held} <= {e.source for e in train}
    (5, 5, True)
    """
    n = len(examples)
    if n < below:
        return list(examples), []
    k = max(minimum, round(fraction * n))
    order = list(range(n))
    random.Random(int(digest[:16], 16)).shuffle(order)
    per_source = Counter(e.source for e in examples if e.source not in ("", "refusal"))
    held: list[int] = []
    sources: set[str] = set()
    for i in order:  # first: one example of each passage that keeps another in training
        src = examples[i].source
        if len(held) < k and per_source[src] >= 2 and src not in sources:
            held.append(i)
            sources.add(src)
    chosen = set(held)
    chosen.update([i for i in order if i not in chosen][: k - len(chosen)])
    return ([e for i, e in enumerate(examples) if i not in chosen],
            [e for i, e in enumerate(examples) if i in chosen])


def _slug(name: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-")[:40] or "dataset"


def _write_jsonl(path: Path, examples: Iterable[Example]) -> None:
    tmp = path.with_name(path.name + ".tmp")
    with tmp.open("w", encoding="utf-8") as f:
        for ex in examples:
            f.write(json.dumps(ex.to_json(), ensure_ascii=False) + "\n")
    tmp.replace(path)


def save_dataset(root: Path, examples: Sequence[Example], shape: str, name: str,
                 origin: str, extra: dict | None = None) -> DatasetRecord:
    """Store ``examples`` (split automatically) as a dataset; the same content under the
    same name returns the stored record."""
    if not examples:
        raise DatasetError(f"{name}: no examples to store.")
    digest = dataset_hash(examples)
    ds_id = f"{_slug(name)}-{digest[:8]}"
    folder = root / ds_id
    if (folder / "meta.json").is_file():
        return get_dataset(root, ds_id)
    folder.mkdir(parents=True, exist_ok=True)
    train, held = heldout_split(examples, digest)
    _write_jsonl(folder / "train.jsonl", train)
    _write_jsonl(folder / "heldout.jsonl", held)
    meta = {"format_version": FORMAT_VERSION, "id": ds_id, "name": name, "shape": shape,
            "train": len(train), "heldout": len(held), "hash": digest, "origin": origin,
            "created": time.strftime("%Y-%m-%dT%H:%M:%S"), "extra": extra or {}}
    _write_json(folder / "meta.json", meta)
    return _record(meta, folder)


def _write_json(path: Path, data: dict) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(data, indent=2, ensure_ascii=False), encoding="utf-8")
    tmp.replace(path)


def _record(meta: dict, folder: Path) -> DatasetRecord:
    return DatasetRecord(meta["id"], meta["name"], meta["shape"], meta["train"], meta["heldout"],
                         meta["hash"], meta["origin"], meta["created"], folder,
                         meta.get("extra", {}))


def import_dataset(root: Path, path: Path | str, name: str = "", kb: str = "") -> DatasetRecord:
    """Validate and store a file; ``kb``: the knowledge base its questions are about (jobs
    then evaluate with RAG over it too)."""
    path = Path(path).expanduser()
    shape, examples = load_file(path)
    return save_dataset(root, examples, shape, name or path.stem, str(path.resolve()),
                        {"kb": kb} if kb else None)


def get_dataset(root: Path, ds_id: str) -> DatasetRecord:
    meta_path = root / ds_id / "meta.json"
    if "/" in ds_id or ".." in ds_id or not meta_path.is_file():
        raise DatasetError(f"No dataset {ds_id!r}; import one first (`finetune data import`).")
    meta = json.loads(meta_path.read_text(encoding="utf-8"))
    if meta.get("format_version") != FORMAT_VERSION:
        raise DatasetError(f"Dataset {ds_id} has format {meta.get('format_version')}; "
                           f"this version reads {FORMAT_VERSION}: import it again.")
    return _record(meta, root / ds_id)


def list_datasets(root: Path) -> list[DatasetRecord]:
    if not root.is_dir():
        return []
    out = [get_dataset(root, p.name) for p in sorted(root.iterdir())
           if (p / "meta.json").is_file()]
    return sorted(out, key=lambda r: r.created, reverse=True)


def read_split(record: DatasetRecord, split: str = "train") -> list[Example]:
    if split not in ("train", "heldout"):
        raise ValueError("split is 'train' or 'heldout'")
    path = record.path / f"{split}.jsonl"
    rows = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line]
    return [_normalize(r, record.shape) for r in rows]


def preview(root: Path, ref: str, n: int = 5) -> list[dict]:
    """The first ``n`` normalized training rows of a stored dataset id or of a file."""
    path = Path(ref).expanduser()
    if path.is_file():
        _, examples = load_file(path)
    else:
        examples = read_split(get_dataset(root, ref), "train")
    return [e.to_json() for e in examples[:n]]


def replace_examples(root: Path, ds_id: str, rows: Sequence[dict]) -> DatasetRecord:
    """Edit before training: store ``rows`` (train and held-out together) as a new
    dataset derived from ``ds_id`` (the original is kept; its hash no longer matches)."""
    old = get_dataset(root, ds_id)
    shape, examples = normalize_rows(rows, old.name)
    if shape != old.shape:
        raise DatasetError(f"The edited rows have the {shape} shape; {ds_id} is {old.shape}.")
    return save_dataset(root, examples, shape, old.name, f"edited from {ds_id}", old.extra)
