"""The training worker: ``python -m finetune.worker --job DIR``.

Runs one job record (see ``finetune.jobs``): resolves the base model (dequantizing a
GGUF once), reads the dataset, trains, then on rank 0 registers the adapter and converts a
LoRA (or a fully fine-tuned model) to GGUF (so chat can use it at once), and evaluates base
against adapter on the held-out split into the adapter's metrics. A full fine-tune's
checkpoints (fp32 weights and AdamW states, ~7.5 GB for the 0.5B) are deleted once it is
registered. A job resumed after registration goes straight
to the evaluation.

Runs unchanged under ``torchrun --nproc_per_node N -m finetune.worker --job DIR`` (the
queue starts it so when ``training.launcher`` asks; ``accelerate launch`` works too): the
Trainer picks up the distributed environment (gloo on CPU). Only rank 0 writes the record
(with how the job was launched), the progress lines, the adapter and its registration;
the other ranks train and end. ReFT refuses more than one process (``finetune.launch``).
"""
from __future__ import annotations

import json
import logging
import os
import shutil
import sys
import time
import traceback
from pathlib import Path

from common.jobs import finish, start, worker_main

log = logging.getLogger("finetune.worker")
REGISTERED = "registered.json"  # in the job folder once the adapter is in the registry


def _rank0() -> bool:
    return int(os.environ.get("RANK", "0")) == 0


def _world_size() -> int:
    return int(os.environ.get("WORLD_SIZE", "1"))


def _launched() -> dict:
    """How this worker runs, for the record (torchrun sets TORCHELASTIC_RUN_ID)."""
    launcher = "torchrun" if "TORCHELASTIC_RUN_ID" in os.environ else "python"
    return {"launcher": launcher, "processes": _world_size()}


def run_job(job_dir: Path) -> int:
    from finetune.jobs import JobRecord, read_job

    record = read_job(job_dir)
    log.info("Job %s: rank %s of %d", record.id, os.environ.get("RANK", "0"), _world_size())
    if _rank0():
        if not start(job_dir, JobRecord, started=record.started or time.time(), **_launched()):
            return 0  # cancelled before it began
    elif record.status == "cancelled":
        return 0
    try:
        result = _train_and_register(record, job_dir)
    except Exception as exc:  # noqa: BLE001 - recorded in the job, then exit non-zero
        log.error("Training job %s failed:\n%s", record.id, traceback.format_exc())
        if _rank0():
            _finish(job_dir, status="failed", error=f"{type(exc).__name__}: {exc}")
        return 1
    if _rank0():
        _finish(job_dir, status="succeeded", error="", adapter_id=result.get("adapter_id", ""),
                result=result)
    return 0


def _finish(job_dir: Path, **changes) -> None:
    """Write the end of the job unless the user cancelled it meanwhile."""
    from finetune.jobs import JobRecord

    finish(job_dir, JobRecord, **changes)


def _train_and_register(record, job_dir: Path) -> dict:
    from finetune.base_models import hf_base
    from finetune.data import get_dataset, read_split
    from finetune.registry import AdapterRegistry
    from finetune.specs import spec_from_dict

    data_dir, models_dir = Path(record.data_dir), Path(record.models_dir)
    spec = spec_from_dict(record.method, record.spec)
    dataset = get_dataset(data_dir / "datasets", record.dataset_id)
    examples = read_split(dataset, "train")
    log.info("Job %s: %s on %s, dataset %s (%d examples)", record.id, record.method,
             record.base_model, dataset.id, len(examples))
    base_dir = hf_base(record.base_model, models_dir, data_dir / "hf-models")
    done = _registered(job_dir)
    if done:  # a resumed job that had registered its adapter: only the evaluation is left
        log.info("Job %s: adapter %s is registered; evaluating it", record.id, done["adapter_id"])
    else:
        done = _train_then_register(record, spec, dataset, examples, base_dir, job_dir)
    if not _rank0():
        return {}
    registry = AdapterRegistry(data_dir / "adapters")
    adapter = registry.get(done["adapter_id"])
    evaluation = _evaluate(record.method, base_dir, adapter.path,
                           read_split(dataset, "heldout"), job_dir)
    registry.update_metrics(adapter.adapter_id, evaluation)
    return {**done["result"], "evaluation": evaluation, "adapter_id": adapter.adapter_id}


def _registered(job_dir: Path) -> dict | None:
    """What an earlier attempt of this job registered (adapter id and training result)."""
    path = job_dir / REGISTERED
    return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else None


def _train_then_register(record, spec, dataset, examples, base_dir: Path, job_dir: Path
                         ) -> dict | None:
    """Train; on rank 0 register the adapter and record that in the job folder (other
    ranks: None)."""
    trained = _train(record.method, spec, base_dir, examples, job_dir, record.resume)
    if not _rank0():
        return None
    result = {"steps": trained["steps"], "train_loss": trained["loss"],
              "world_size": _world_size(),
              "seconds": round(trained["seconds"], 1),
              "seconds_per_step": round(trained["seconds_per_step"], 3),
              "trainable_params": trained["trainable"], "total_params": trained["total"]}
    done = {"adapter_id": _register(record, dataset, trained["adapter_dir"], base_dir, result),
            "result": result}
    (job_dir / REGISTERED).write_text(json.dumps(done), encoding="utf-8")
    if record.method == "full":
        shutil.rmtree(job_dir / "checkpoints", ignore_errors=True)
    return done


def _train(method: str, spec, base_dir: Path, examples, job_dir: Path, resume: bool) -> dict:
    if method == "reft":
        from finetune.launch import REFT_NOTE
        from finetune.reft import ReftError, train_reft
        from finetune.train import last_elapsed

        if _world_size() > 1:
            raise ReftError(REFT_NOTE + "; start it without torchrun.")

        t0 = time.time() - (last_elapsed(job_dir / "metrics.jsonl") if resume else 0.0)

        def on_step(step, total, loss, lr):
            _append_progress(job_dir, step, total, loss, lr, time.time() - t0)

        r = train_reft(base_dir, examples, spec, job_dir / "adapter", on_step=on_step,
                       checkpoint_dir=job_dir / "reft-checkpoint", resume=resume)
        return {"adapter_dir": r.adapter_dir, "steps": r.steps, "loss": r.loss,
                "seconds": r.seconds, "seconds_per_step": r.seconds / max(1, r.steps),
                "trainable": r.trainable_params, "total": r.base_params}
    from finetune import train

    fn = {"dpo": train.train_dpo, "full": train.train_full}.get(method, train.train_lora)
    r = fn(spec, base_dir, examples, job_dir, resume=resume)
    return {"adapter_dir": r.adapter_dir, "steps": r.steps, "loss": r.train_loss,
            "seconds": r.seconds, "seconds_per_step": r.seconds_per_step,
            "trainable": r.trainable_params, "total": r.total_params}


def _append_progress(job_dir: Path, step, total, loss, lr, elapsed) -> None:
    eta = elapsed / step * (total - step) if step else 0.0
    row = {"step": step, "total": total, "loss": round(float(loss), 5), "lr": float(lr),
           "elapsed": round(elapsed, 2), "eta": round(eta, 1),
           "seconds_per_step": round(elapsed / max(1, step), 3), "time": time.time()}
    with (job_dir / "metrics.jsonl").open("a", encoding="utf-8") as f:
        f.write(json.dumps(row) + "\n")


def _evaluate(method: str, base_dir: Path, adapter_dir: Path, heldout, job_dir: Path) -> dict:
    if not heldout:
        return {"eval_note": "no held-out split (fewer than 20 examples)"}
    from finetune.evaluate import evaluate_adapter, read_rag_prompts, write_replies

    try:
        evaluation = evaluate_adapter(method, base_dir, adapter_dir, heldout,
                                      rag=read_rag_prompts(job_dir))
        write_replies(job_dir, evaluation)
        return evaluation
    except Exception as exc:
        log.exception("Evaluation failed")
        return {"eval_error": f"{type(exc).__name__}: {exc}"}


def _register(record, dataset, adapter_dir: Path, base_dir: Path, metrics: dict) -> str:
    from finetune.registry import AdapterRegistry
    from finetune.specs import spec_from_dict, to_dict

    registry = AdapterRegistry(Path(record.data_dir) / "adapters")
    spec = to_dict(spec_from_dict(record.method, record.spec))
    adapter = registry.register(adapter_dir, method=record.method, base_model=record.base_model,
                                dataset_hash=dataset.hash, spec=spec, metrics=metrics,
                                name=record.name, move=record.method == "full")
    if adapter.is_lora or adapter.is_full:
        try:
            from finetune.gguf import to_gguf_full, to_gguf_lora

            if adapter.is_full:
                to_gguf_full(adapter)
            else:
                to_gguf_lora(adapter, base_dir)
        except Exception as exc:  # noqa: BLE001 - recorded in the manifest by to_gguf_*
            log.warning("GGUF conversion of %s failed: %s", adapter.adapter_id, exc)
    return adapter.adapter_id


def main(argv: list[str] | None = None) -> int:
    return worker_main(run_job, "python -m finetune.worker", argv)


if __name__ == "__main__":
    sys.exit(main())
