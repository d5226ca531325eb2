"""The facade's fine-tuning jobs and adapters, as a mixin of ``Assistant`` (kept in its
own module so that assistant/core.py stays readable)."""
from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from assistant.language import question_language
from assistant.llm import LLM
from assistant.prompts import answer_messages, source_from_hit
from finetune.evaluate import RAG_PROMPTS
from finetune.registry import AdapterRecord, ModelChoice
from knowledge.errors import KnowledgeError


class TrainingMixin:
    # --- fine-tuning jobs -----------------------------------------------------------
    # Datasets live in <data_dir>/datasets, jobs in <data_dir>/finetune/jobs (records on
    # disk run one at a time by a worker subprocess; see finetune.jobs). Adapters that
    # jobs produce are registered in <data_dir>/adapters (the "adapters" block).
    @property
    def training(self):
        """The job queue (created on first use; marks stale running jobs interrupted)."""
        from finetune.jobs import JobQueue

        if getattr(self, "_training", None) is None:
            self._training = JobQueue(self.paths.data_dir / "finetune" / "jobs")
        return self._training

    def _datasets_dir(self) -> Path:
        return self.paths.data_dir / "datasets"

    def import_dataset(self, path: Path | str, name: str = "", kb: str = ""):
        """Validate and store a JSONL/CSV/parquet file -> ``finetune.data.DatasetRecord``;
        ``finetune.data.DatasetError`` names each bad row. ``kb``: the knowledge base the
        questions are about (jobs on it are then evaluated with RAG over it too)."""
        from finetune.data import import_dataset

        if kb:
            self.library.manifest(kb)  # KnowledgeBaseNotFound names it
        return import_dataset(self._datasets_dir(), path, name, kb)

    def datasets(self) -> list:
        from finetune.data import list_datasets

        return list_datasets(self._datasets_dir())

    def preview_dataset(self, ref: str, n: int = 5) -> list[dict]:
        """The first ``n`` normalized rows of a dataset id or a file."""
        from finetune.data import preview

        return preview(self._datasets_dir(), ref, n)

    def edit_dataset(self, dataset_id: str, rows: Sequence[dict]):
        """Store edited rows as a new dataset (the original stays) -> its record."""
        from finetune.data import replace_examples

        return replace_examples(self._datasets_dir(), dataset_id, rows)

    def generate_dataset(self, kb: str | None = None, n: int = 200, name: str = "", **options):
        """Question-answer pairs from ``kb``'s chunks written by the chat model: a generator
        of ``GenerationEvent``s returning the ``DatasetRecord``. ``options``: fields of
        ``finetune.generate.GenerateOptions`` (refusals, raft_fraction, seed, ...)."""
        from finetune.generate import GenerateOptions, generate_dataset

        base = self.library.get(kb or self.settings.default_kb)
        chunks = [c for c, _ in base.catalog.ready_chunks_with_tokens()]
        if not chunks:
            raise KnowledgeError(f"Knowledge base {base.name!r} has no documents to generate from.")
        opts = GenerateOptions(n=n, **options)
        return generate_dataset(self.llm, chunks, self._datasets_dir(), name or f"{base.name}-qa",
                                opts, kb=base.name)

    def training_estimate(self, method: str, spec: dict, base_model: str,
                          dataset_id: str | None = None):
        """Memory and time estimate (``finetune.base_models.Estimate``) before a start;
        with ``dataset_id`` the time per step follows its examples' length."""
        from finetune.base_models import estimate
        from finetune.data import get_dataset, mean_tokens, read_split
        from finetune.specs import spec_from_dict

        length = (mean_tokens(read_split(get_dataset(self._datasets_dir(), dataset_id), "train"))
                  if dataset_id else 0.0)
        return estimate(spec_from_dict(method, spec), base_model,
                        self.paths.data_dir / "hf-models", length)

    def start_training(self, method: str, spec: dict, base_model: str, dataset_id: str,
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
            n_layers = count_layers(base_model, self.paths.data_dir / "hf-models")
            problem = missing_layers(parsed.layers, n_layers) if n_layers else ""
            if problem:
                raise JobError(problem)
        dataset = get_dataset(self._datasets_dir(), dataset_id)
        wanted = {"lora": ("chat",), "reft": ("chat",), "dpo": ("preference",),
                  "cpt": ("text", "chat")}[method]
        if dataset.shape not in wanted:
            raise JobError(f"Method {method} needs a {' or '.join(wanted)} dataset; "
                           f"{dataset.id} is {dataset.shape}.")
        est = self.training_estimate(method, spec, base_model, dataset.id)
        if not est.fits and not force:
            raise JobError(f"Not started: {est.reason}")
        rag = self._rag_eval_prompts(dataset) if method != "dpo" and dataset.heldout else ""
        files = {RAG_PROMPTS: rag} if rag else {}
        return self.training.submit(method, to_dict(parsed), base_model, dataset.id, name=name,
                                    data_dir=self.paths.data_dir,
                                    models_dir=self.paths.models_dir,
                                    kb=dataset.extra.get("kb", ""),
                                    estimate=est.__dict__, files=files)

    def _rag_eval_prompts(self, dataset) -> str:
        """JSONL, one line per held-out question the job evaluates: the chat prompt with
        the sources the knowledge base finds for it now (the worker cannot open the
        knowledge base while this process holds it). Empty when the dataset does not come
        from a knowledge base that still exists."""
        import json

        from finetune.data import read_split
        from finetune.evaluate import MAX_EXAMPLES

        kb = dataset.extra.get("kb", "")
        if not kb or kb not in self.library.names():
            return ""
        top_k = self.settings.retrieval.top_k
        profile = self.kb_profile(kb)
        lines = []
        for example in read_split(dataset, "heldout")[:MAX_EXAMPLES]:
            if not example.messages:
                return ""
            hits = self.library.get(kb).search(example.question, top_k)
            sources = [source_from_hit(i, h) for i, h in enumerate(hits, start=1)]
            messages = answer_messages(example.question, sources, profile.system_prompt,
                                       question_language(example.question))
            lines.append(json.dumps({"kb": kb, "messages": messages}, ensure_ascii=False))
        return "\n".join(lines) + "\n" if lines else ""

    def training_jobs(self) -> list:
        return self.training.list()

    def training_job(self, job_id: str):
        return self.training.get(job_id)

    def training_metrics(self, job_id: str) -> list[dict]:
        """Every progress line of a job (step, total, loss, lr, elapsed, eta): the loss curve."""
        from finetune.jobs import metrics

        return metrics(self.training.get(job_id).path)

    def cancel_training(self, job_id: str):
        return self.training.cancel(job_id)

    def resume_training(self, job_id: str):
        return self.training.resume(job_id)

    def training_log(self, job_id: str) -> str:
        return self.training.log(job_id)
    # --- end fine-tuning jobs -------------------------------------------------------

    # --- adapters -------------------------------------------------------------------
    # Trained adapters (finetune.registry) as chat models: ``models()`` for the chat
    # menu, ``llm_for(id)`` for one reply (the lead's ``ask(..., model=...)``),
    # ``use_model(id)`` to change the default at run time, without restarting.
    def models(self) -> list[ModelChoice]:
        """The base chat model, then every registered adapter (id, label, method, metrics)."""
        base = self._base_model_id()
        return [ModelChoice(base, f"{base} (base)", "base", base)] + [
            ModelChoice.of(r) for r in self.adapters.list()]

    def llm_for(self, model_id: str | None = None) -> LLM:
        """The chat model for ``model_id``: None -> the one chosen with ``use_model``
        (default: the base); the base id -> ``self.llm``; an adapter id or name -> the
        base with that adapter (LoRA in llama.cpp, ReFT in transformers). Unknown id:
        ``AdapterError`` listing the known ones."""
        model_id = model_id or self._chat_model
        if not model_id or model_id == self._base_model_id():
            return self.llm
        return self._serving.llm(self.adapters.find(model_id))

    def use_model(self, model_id: str | None) -> ModelChoice:
        """Make ``model_id`` (None: the base) the chat model of later replies; it is
        loaded now, so a broken adapter is reported here."""
        base = self._base_model_id()
        self.llm_for(model_id or base)
        self._chat_model = (None if model_id in (None, "", base)
                            else self.adapters.find(model_id).adapter_id)
        return next(m for m in self.models() if m.model_id == self.chat_model())

    def chat_model(self) -> str:
        """The id of the model ``llm_for(None)`` answers with."""
        return self._chat_model or self._base_model_id()

    def adapter(self, adapter_id: str) -> AdapterRecord:
        return self.adapters.find(adapter_id)

    def delete_adapter(self, adapter_id: str) -> None:
        record = self.adapters.find(adapter_id)
        self._serving.forget(record.adapter_id)
        if self._chat_model in (record.adapter_id, record.name):
            self._chat_model = None
        self.adapters.delete(record.adapter_id)

    def export_adapter(self, adapter_id: str, kind: str = "gguf", quant: str = "Q4_K_M"
                       ) -> Path:
        """A LoRA adapter merged into its base: kind "merged-safetensors" (a folder with
        config.json + model.safetensors + tokenizer) or "gguf" (one file, quant Q4_K_M,
        Q5_K_M or Q8_0), under <data_dir>/exports/."""
        return self._serving.export(self.adapters.find(adapter_id), kind, quant)

    def _base_model_id(self) -> str:
        cfg = self.settings.llm
        return (cfg.remote_model or self.llm.name) if cfg.backend == "openai" else cfg.model
    # --- end adapters ---------------------------------------------------------------
