"""Fine-tuning jobs: the base models, an estimate before a start, and the fine-tuning
jobs of the one job queue (records on disk, each run by a worker subprocess; see
common.jobs and finetune.jobs). Adapters that jobs produce are registered in <data_dir>/adapters and
served by ``Serving``."""
from __future__ import annotations

import json

from assistant.language import question_language
from assistant.prompts import answer_messages, source_from_hit
from assistant.services.bases import KnowledgeBases
from assistant.services.datasets import Datasets
from assistant.settings import Paths
from finetune.evaluate import RAG_PROMPTS
from finetune.jobs import JobQueue


class Training:
    def __init__(self, paths: Paths, datasets: Datasets, bases: KnowledgeBases, top_k: int,
                 queue: JobQueue):
        self._paths, self._datasets, self._bases = paths, datasets, bases
        self._top_k = top_k  # hits per held-out question when a job is evaluated with RAG
        self.queue = queue

    def base_models(self) -> list[str]:
        """The installed default models one can train on, the smallest (fastest) first;
        a local Hugging Face folder is accepted too."""
        from finetune.base_models import DEFAULT_MODELS

        return sorted(DEFAULT_MODELS, key=lambda name: DEFAULT_MODELS[name].size)

    def estimate(self, method: str, spec: dict, base_model: str,
                 dataset_id: str | None = None):
        """Memory and time estimate (``finetune.base_models.Estimate``) before a start;
        with ``dataset_id`` the time per step follows its examples' length."""
        from finetune.base_models import estimate
        from finetune.data import get_dataset, mean_tokens, read_split
        from finetune.specs import spec_from_dict

        length = (mean_tokens(read_split(get_dataset(self._datasets.root, dataset_id), "train"))
                  if dataset_id else 0.0)
        return estimate(spec_from_dict(method, spec), base_model,
                        self._paths.data_dir / "hf-models", length)

    def start(self, method: str, spec: dict, base_model: str, dataset_id: str,
              name: str = "", force: bool = False):
        """Validate, estimate and queue a job -> ``finetune.jobs.JobRecord``. Refused (
        ``JobError``) when the dataset does not suit the method or the machine cannot fit
        the job (``force`` skips the memory check)."""
        from finetune.base_models import count_layers
        from finetune.data import get_dataset
        from finetune.jobs import JobError
        from finetune.specs import missing_layers, spec_from_dict, to_dict

        parsed = spec_from_dict(method, spec)
        if method == "reft":
            n_layers = count_layers(base_model, self._paths.data_dir / "hf-models")
            problem = missing_layers(parsed.layers, n_layers) if n_layers else ""
            if problem:
                raise JobError(problem)
        dataset = get_dataset(self._datasets.root, dataset_id)
        wanted = {"lora": ("chat",), "reft": ("chat",), "dpo": ("preference",),
                  "cpt": ("text", "chat"), "full": ("chat",)}[method]
        if dataset.shape not in wanted:
            raise JobError(f"Method {method} needs a {' or '.join(wanted)} dataset; "
                           f"{dataset.id} is {dataset.shape}.")
        est = self.estimate(method, spec, base_model, dataset.id)
        if not est.fits and not force:
            raise JobError(f"Not started: {est.reason}")
        rag = self._rag_eval_prompts(dataset) if method != "dpo" and dataset.heldout else ""
        files = {RAG_PROMPTS: rag} if rag else {}
        return self.queue.submit(method, to_dict(parsed), base_model, dataset.id, name=name,
                                 data_dir=self._paths.data_dir,
                                 models_dir=self._paths.models_dir,
                                 kb=dataset.extra.get("kb", ""),
                                 estimate=est.__dict__, files=files)

    def jobs(self) -> list:
        return self.queue.list()

    def job(self, job_id: str):
        return self.queue.get(job_id)

    def metrics(self, job_id: str) -> list[dict]:
        """Every progress line of a job (step, total, loss, lr, elapsed, eta): the loss curve."""
        from finetune.jobs import metrics

        return metrics(self.queue.get(job_id).path)

    def cancel(self, job_id: str):
        return self.queue.cancel(job_id)

    def resume(self, job_id: str):
        return self.queue.resume(job_id)

    def log(self, job_id: str) -> str:
        return self.queue.log(job_id)

    def _rag_eval_prompts(self, dataset) -> str:
        """JSONL, one line per held-out question the job evaluates: the chat prompt with
        the sources the knowledge base finds for it now (the worker cannot open the
        knowledge base while this process holds it). Empty when the dataset does not come
        from a knowledge base that still exists."""
        from finetune.data import read_split
        from finetune.evaluate import MAX_EXAMPLES

        kb = dataset.extra.get("kb", "")
        if not kb or kb not in self._bases.library.names():
            return ""
        profile = self._bases.profile(kb)
        lines = []
        for example in read_split(dataset, "heldout")[:MAX_EXAMPLES]:
            if not example.messages:
                return ""
            hits = self._bases.library.get(kb).search(example.question, self._top_k)
            sources = [source_from_hit(i, h) for i, h in enumerate(hits, start=1)]
            messages = answer_messages(example.question, sources, profile.system_prompt,
                                       question_language(example.question))
            lines.append(json.dumps({"kb": kb, "messages": messages}, ensure_ascii=False))
        return "\n".join(lines) + "\n" if lines else ""
