"""The services' worker: ``python -m assistant.worker --job DIR``.

Runs one job of ``assistant.background`` (reranker training, re-embedding, the
real-task evaluation) from its folder: the settings the app had, a snapshot of the
knowledge base (the evaluation asks the app's API instead), the parameters.
Progress goes to ``metrics.jsonl`` as ``{"stage", "done", "total", "message"}`` lines;
the end (succeeded with a result, or failed with the reason) to the record.
"""
from __future__ import annotations

import json
import logging
import sys
import time
import traceback
from dataclasses import asdict
from pathlib import Path

import numpy as np

from assistant.background import (
    EVAL_QUESTIONS, EVAL_TOKEN, EVALUATION, NEW_IDS, NEW_VECTORS, REEMBED, TRAIN_RERANKER,
    TRAINED, settings_of,
)
from common.jobs import TaskRecord, append_metrics, finish, read_record, start, worker_main
from common.progress import drain

log = logging.getLogger("assistant.worker")


def run_job(job_dir: Path) -> int:
    record = read_record(job_dir)
    if not start(job_dir, started=record.started or time.time()):
        return 0  # cancelled before it began
    work = {TRAIN_RERANKER: _train_reranker, REEMBED: _reembed,
            EVALUATION: _evaluate}.get(record.kind)
    try:
        if work is None:
            raise ValueError(f"this worker does not run {record.kind!r} jobs")
        result = work(record, job_dir)
    except Exception as exc:  # noqa: BLE001 - recorded in the job, then exit non-zero
        log.error("Job %s failed:\n%s", record.id, traceback.format_exc())
        finish(job_dir, status="failed", error=str(exc) or type(exc).__name__)
        return 1
    finish(job_dir, status="succeeded", error="", result=result)
    return 0


def _progress(job_dir: Path, stage: str, done: int, total: int, message: str = "") -> None:
    append_metrics(job_dir, {"stage": stage, "done": done, "total": total, "message": message,
                             "time": time.time()})


def _embedders(settings):
    from knowledge.embedders import EmbedderPool

    return EmbedderPool(settings.embedder.model, settings.embedder.batch_size,
                        models_dir=settings.paths.models_dir)


def _train_reranker(record: TaskRecord, job_dir: Path) -> dict:
    from assistant.llm import LlamaCppLLM, OpenAICompatLLM
    from common.models import resolve_gguf
    from finetune.reranker import RerankerTraining, train_reranker_on
    from knowledge.errors import KnowledgeError
    from knowledge.snapshot import read_snapshot, snapshot_retriever

    settings = settings_of(job_dir)
    snapshot = read_snapshot(job_dir / "snapshot")
    try:
        embedder = _embedders(settings).get(snapshot.embedder)
    except KnowledgeError as exc:  # e.g. a folder that is gone: mine with keywords alone
        log.warning("Mining negatives with BM25 alone: %s", exc)
        embedder = None
    cfg = RerankerTraining(**record.params["config"])
    retrieval = settings.retrieval.config()
    retriever = snapshot_retriever(snapshot, embedder, retrieval.fusion, cfg.candidates)
    llm_cfg = settings.llm
    if llm_cfg.backend == "openai":
        llm = OpenAICompatLLM(llm_cfg.base_url, llm_cfg.remote_model, llm_cfg.api_key,
                              llm_cfg.request_timeout, llm_cfg.n_ctx, llm_cfg.seed)
    else:  # the worker loads its own copy: a crash here costs this job only
        llm = LlamaCppLLM(resolve_gguf(llm_cfg.model, settings.paths.models_dir), llm_cfg.n_ctx,
                          llm_cfg.n_threads, llm_cfg.n_gpu_layers, llm_cfg.seed,
                          llm_cfg.repeat_penalty)
    # trained into the job's folder; the app moves it into the knowledge base when done
    events = train_reranker_on([c for c, _ in snapshot.chunks], retriever,
                               job_dir / TRAINED, llm, cfg)
    reranker = drain(events, lambda e: _progress(job_dir, e.stage, e.done, e.total, e.message))
    return asdict(reranker)


def _reembed(record: TaskRecord, job_dir: Path) -> dict:
    from knowledge.snapshot import read_snapshot

    settings = settings_of(job_dir)
    embedder = _embedders(settings).get(record.params["embedder"])
    chunks = [c for c, _ in read_snapshot(job_dir / "snapshot").chunks]
    batch = max(1, settings.embedder.batch_size)
    parts = []
    _progress(job_dir, "re-embedding", 0, len(chunks), embedder.name)
    for start in range(0, len(chunks), batch):
        part = chunks[start:start + batch]
        parts.append(np.asarray(embedder.embed_passages([c.index_text for c in part]),
                                dtype=np.float32))
        _progress(job_dir, "re-embedding", start + len(part), len(chunks), embedder.name)
    vectors = np.concatenate(parts) if parts else np.zeros((0, embedder.dim), np.float32)
    np.save(job_dir / NEW_VECTORS, vectors)
    (job_dir / NEW_IDS).write_text(json.dumps([c.chunk_id for c in chunks]), encoding="utf-8")
    return {"embedder": embedder.name, "passages": len(chunks)}


def _evaluate(record: TaskRecord, job_dir: Path) -> dict:
    """Ask the running app's API each question of the set, model after model; the
    replies kept in the folder are not asked again (a resumed job continues)."""
    from assistant.evaluation import REPLIES, load_questions, read_rows, run, summarize

    params = record.params
    questions = load_questions(job_dir / EVAL_QUESTIONS)[: params.get("limit") or None]
    token = (job_dir / EVAL_TOKEN).read_text(encoding="utf-8").strip()
    answer = api_answerer(params["url"], token, record.target)
    _progress(job_dir, "asking", 0, len(questions) * len(params["models"]), "")
    for done, total, message in run(questions, params["models"], answer, job_dir / REPLIES):
        _progress(job_dir, "asking", done, total, message)
    return {"summary": summarize(read_rows(job_dir / REPLIES))}


def api_answerer(url: str, token: str, kb: str, timeout: float = 600.0):
    """(question, model) -> ``EvalReply``, asked of Docent's API at ``url``."""
    import httpx

    from assistant.evaluation import EvalReply, EvaluationError

    client = httpx.Client(base_url=url, timeout=timeout,
                          headers={"Authorization": f"Bearer {token}"} if token else {})

    def answer(q, model: str) -> EvalReply:
        t0 = time.perf_counter()
        try:
            reply = client.post("/v1/chat/completions", json={
                "model": model, "knowledge_base": kb, "rag": True,
                "messages": [{"role": "user", "content": q.question}]})
        except httpx.HTTPError as exc:
            raise EvaluationError(f"The app at {url} did not answer ({exc}); is it "
                                  "running? Resume the job once it is.") from exc
        if reply.status_code != 200:
            raise EvaluationError(f"The app answered {reply.status_code}: {reply.text[:300]}")
        body = reply.json()
        text = body["choices"][0]["message"]["content"]
        for notice in body.get("notices", []):
            text = text.replace(notice, "")
        sources = body.get("sources", [])
        return EvalReply(text.strip(), bool(body.get("refused")),
                         _documents([s for s in sources if s["cited"]]), _documents(sources),
                         time.perf_counter() - t0)
    return answer


def _documents(sources: list[dict]) -> tuple[str, ...]:
    """Every document holding the passages of ``sources`` (the API's rows)."""
    return tuple(sorted({d for s in sources for d in s.get("documents", [s["source"]])}))


def main(argv: list[str] | None = None) -> int:
    return worker_main(run_job, "python -m assistant.worker", argv)


if __name__ == "__main__":
    sys.exit(main())
