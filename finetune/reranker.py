"""Train a knowledge base's own cross-encoder reranker (generative pseudo-labelling).

No reranker with weights ships offline, so Docent makes one per knowledge base:

1. sample chunks spread over its documents;
2. the local LLM writes a question for each (``finetune.questions``; kept in
   ``reranker/questions.jsonl`` so a re-run reuses them);
3. hard negatives for each question come from the knowledge base's own hybrid search
   (chunks of other documents ranked near the top);
4. a cross-encoder initialised from the installed all-MiniLM-L6-v2 weights learns to put
   the chunk a question was written from above its negatives (softmax over the group);
5. the model is saved as safetensors under ``reranker/v<N>/`` with a ``record.json``,
   and ``reranker/current.json`` points at it (written last, atomically).

``train_reranker`` is a generator of ``TrainingEvent``s that returns the record; the job
system runs it in a worker process over a snapshot of the knowledge base
(``knowledge.snapshot``) through ``train_reranker_on``.
"""
from __future__ import annotations

import json
import logging
import random
import time
from collections.abc import Generator
from dataclasses import asdict, dataclass
from datetime import datetime, timezone
from pathlib import Path

from finetune.questions import generate_questions, sample_chunks
from knowledge.embedders import minilm_folder
from knowledge.errors import KnowledgeError
from knowledge.rerank import RerankerRecord, reranker_dir
from knowledge.types import Chunk

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class RerankerTraining:
    questions: int = 300
    negatives: int = 7  # hard negatives per question
    negatives_from: int = 2  # skip the top N other-document hits (likely unjudged answers)
    candidates: int = 30  # hybrid hits mined per question
    epochs: int = 2
    groups_per_step: int = 4  # questions per optimiser step (each with 1 + negatives pairs)
    max_length: int = 256
    learning_rate: float = 5e-5
    seed: int = 0


@dataclass(frozen=True)
class TrainingEvent:
    stage: str  # questions | mining | training | saving | done
    done: int
    total: int
    message: str = ""


def _load_questions(path: Path) -> dict[str, str]:
    if not path.is_file():
        return {}
    out = {}
    for line in path.read_text(encoding="utf-8").splitlines():
        row = json.loads(line)
        out[row["chunk_id"]] = row["question"]
    return out


def train_reranker(kb, llm, cfg: RerankerTraining = RerankerTraining(),
                   base: Path | None = None) -> Generator[TrainingEvent, None, RerankerRecord]:
    """Train and install a reranker for ``kb``, in this process (see module doc)."""
    chunks = [c for c, _ in kb.catalog.ready_chunks_with_tokens()]
    retriever = kb.retriever("hybrid", candidates=cfg.candidates)
    return (yield from train_reranker_on(chunks, retriever, reranker_dir(kb.root), llm, cfg,
                                         base))


def train_reranker_on(chunks: list[Chunk], retriever, root: Path, llm,
                      cfg: RerankerTraining = RerankerTraining(), base: Path | None = None
                      ) -> Generator[TrainingEvent, None, RerankerRecord]:
    """Train a reranker on ``chunks`` (a knowledge base's passages), mining negatives
    with ``retriever`` (its hybrid search, or one over a snapshot of it), and install it
    under ``root`` (the knowledge base's ``reranker/`` folder)."""
    seconds: dict[str, float] = {}
    root.mkdir(parents=True, exist_ok=True)
    if len(chunks) < 20:
        raise KnowledgeError("Add more documents first: training a reranker needs at least "
                             "20 chunks of text in the knowledge base.")
    picked = sample_chunks(chunks, cfg.questions, cfg.seed)

    # 1-2. questions from the corpus (reused across runs)
    t = time.perf_counter()
    qfile = root / "questions.jsonl"
    known = _load_questions(qfile)
    todo = [c for c in picked if c.chunk_id not in known]
    with qfile.open("a", encoding="utf-8") as f:
        for n, gq in enumerate(generate_questions(llm, todo), start=1):
            if gq is not None:
                known[gq.chunk.chunk_id] = gq.question
                f.write(json.dumps({"chunk_id": gq.chunk.chunk_id, "question": gq.question},
                                   ensure_ascii=False) + "\n")
                f.flush()
            yield TrainingEvent("questions", n, len(todo), gq.question if gq else "(no question)")
    pairs = [(c, known[c.chunk_id]) for c in picked if c.chunk_id in known]
    seconds["questions"] = time.perf_counter() - t
    if len(pairs) < 10:
        raise KnowledgeError("The model wrote too few usable questions to train on.")

    # 3. hard negatives from the knowledge base's own hybrid search
    t = time.perf_counter()
    rng = random.Random(cfg.seed)
    groups: list[tuple[str, Chunk, list[Chunk]]] = []
    for n, (pos, question) in enumerate(pairs, start=1):
        others = [h.chunk for h in retriever.retrieve(question, cfg.candidates)
                  if h.chunk.doc_id != pos.doc_id and h.chunk.text != pos.text]
        pool = others[cfg.negatives_from:]
        if len(pool) > cfg.negatives:
            pool = rng.sample(pool, cfg.negatives)
        if pool:
            groups.append((question, pos, pool))
        if n % 20 == 0 or n == len(pairs):
            yield TrainingEvent("mining", n, len(pairs))
    seconds["mining"] = time.perf_counter() - t

    # 4. train
    t = time.perf_counter()
    model, tokenizer, losses = None, None, []
    for event in _train(groups, cfg, base or minilm_folder(), losses):
        if isinstance(event, TrainingEvent):
            yield event
        else:
            model, tokenizer = event
    seconds["training"] = time.perf_counter() - t

    # 5. save, then point at it
    yield TrainingEvent("saving", 0, 1)
    version = _next_version(root)
    out = root / f"v{version}"
    model.save_pretrained(out, safe_serialization=True)
    tokenizer.save_pretrained(out)
    record = RerankerRecord(
        version=version, path=out.name, base_model=str(base or "all-MiniLM-L6-v2"),
        questions=len(pairs), groups=len(groups), loss_first=losses[0], loss_last=losses[-1],
        seconds={k: round(v, 1) for k, v in seconds.items()},
        created_at=datetime.now(timezone.utc).isoformat(timespec="seconds"),
        max_length=cfg.max_length,
    )
    (out / "record.json").write_text(json.dumps(asdict(record), indent=2), encoding="utf-8")
    _point_at(root, record)
    yield TrainingEvent("done", 1, 1, f"reranker v{version} from {len(groups)} questions")
    return record


def install_reranker(trained: Path, kb_root: Path) -> RerankerRecord:
    """Move the reranker a job trained under ``trained`` (its own ``reranker/`` folder)
    into the knowledge base at ``kb_root`` as its next version, with the questions
    written, and point ``current.json`` at it (last, atomically)."""
    made = RerankerRecord(**json.loads((trained / "current.json").read_text(encoding="utf-8")))
    root = reranker_dir(kb_root)
    root.mkdir(parents=True, exist_ok=True)
    version = _next_version(root)
    record = RerankerRecord(**{**asdict(made), "version": version, "path": f"v{version}"})
    (trained / made.path).replace(root / record.path)
    (root / record.path / "record.json").write_text(json.dumps(asdict(record), indent=2),
                                                    encoding="utf-8")
    questions = trained / "questions.jsonl"
    if questions.is_file():
        tmp = root / "questions.jsonl.tmp"
        tmp.write_bytes(questions.read_bytes())
        tmp.replace(root / "questions.jsonl")
    _point_at(root, record)
    return record


def _next_version(root: Path) -> int:
    return 1 + max((int(p.name[1:]) for p in root.glob("v*") if p.name[1:].isdigit()),
                   default=0)


def _point_at(root: Path, record: RerankerRecord) -> None:
    tmp = root / "current.json.tmp"
    tmp.write_text(json.dumps(asdict(record), indent=2), encoding="utf-8")
    tmp.replace(root / "current.json")


def _train(groups, cfg: RerankerTraining, base: Path, losses: list[float]):
    """Listwise training: for each question, softmax over [positive, negatives...]."""
    import torch
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    torch.manual_seed(cfg.seed)
    tokenizer = AutoTokenizer.from_pretrained(str(base), local_files_only=True)
    model = AutoModelForSequenceClassification.from_pretrained(
        str(base), num_labels=1, local_files_only=True, trust_remote_code=False)
    model.train()
    optim = torch.optim.AdamW(model.parameters(), lr=cfg.learning_rate, weight_decay=0.01)
    steps_per_epoch = max(1, -(-len(groups) // cfg.groups_per_step))
    total = steps_per_epoch * cfg.epochs
    sched = torch.optim.lr_scheduler.LambdaLR(
        optim, lambda s: min(1.0, (s + 1) / max(1, total // 10)) * max(0.0, 1 - s / total))
    rng = random.Random(cfg.seed)
    step = 0
    for _ in range(cfg.epochs):
        order = list(groups)
        rng.shuffle(order)
        for i in range(0, len(order), cfg.groups_per_step):
            batch = order[i:i + cfg.groups_per_step]
            queries, passages, sizes = [], [], []
            for question, pos, negs in batch:
                for c in [pos, *negs]:
                    queries.append(question)
                    passages.append(c.index_text)
                sizes.append(1 + len(negs))
            enc = tokenizer(queries, passages, truncation="only_second", padding=True,
                            max_length=cfg.max_length, return_tensors="pt")
            logits = model(**enc).logits.squeeze(-1)
            loss = torch.stack([
                torch.nn.functional.cross_entropy(part.unsqueeze(0), torch.zeros(1, dtype=torch.long))
                for part in torch.split(logits, sizes)
            ]).mean()
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            optim.step()
            sched.step()
            optim.zero_grad()
            step += 1
            losses.append(loss.item())
            yield TrainingEvent("training", step, total, f"loss {losses[-1]:.3f}")
    model.eval()
    yield model, tokenizer
