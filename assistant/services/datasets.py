"""Fine-tuning datasets in <data_dir>/datasets: import, list, preview, edit, and
generate from a knowledge base with the chat model (finetune.data, finetune.generate)."""
from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path

from assistant.llm import LLM
from assistant.services.bases import KnowledgeBases
from knowledge.errors import KnowledgeError


class Datasets:
    def __init__(self, root: Path, bases: KnowledgeBases, llm: Callable[[], LLM]):
        self.root = root
        self._bases, self._llm = bases, llm

    def import_file(self, path: Path | str, name: str = "", kb: str = ""):
        """Validate and store a JSONL/CSV/parquet file -> ``finetune.data.DatasetRecord``;
        ``finetune.data.DatasetError`` names each bad row. ``kb``: the knowledge base the
        questions are about (jobs on it are then evaluated with RAG over it too)."""
        from finetune.data import import_dataset

        if kb:
            self._bases.library.manifest(kb)  # KnowledgeBaseNotFound names it
        return import_dataset(self.root, path, name, kb)

    def list(self) -> list:
        from finetune.data import list_datasets

        return list_datasets(self.root)

    def preview(self, ref: str, n: int = 5) -> list[dict]:
        """The first ``n`` normalized rows of a dataset id or a file."""
        from finetune.data import preview

        return preview(self.root, ref, n)

    def edit(self, dataset_id: str, rows: Sequence[dict]):
        """Store edited rows as a new dataset (the original stays) -> its record."""
        from finetune.data import replace_examples

        return replace_examples(self.root, dataset_id, rows)

    def generate(self, kb: str | None = None, n: int = 200, name: str = "", **options):
        """Question-answer pairs from ``kb``'s chunks written by the chat model: a generator
        of ``GenerationEvent``s returning the ``DatasetRecord``. ``options``: fields of
        ``finetune.generate.GenerateOptions`` (refusals, raft_fraction, seed, ...)."""
        from finetune.generate import GenerateOptions, generate_dataset

        base = self._bases.get(kb)
        chunks = [c for c, _ in base.catalog.ready_chunks_with_tokens()]
        if not chunks:
            raise KnowledgeError(f"Knowledge base {base.name!r} has no documents to generate from.")
        opts = GenerateOptions(n=n, **options)
        return generate_dataset(self._llm(), chunks, self.root, name or f"{base.name}-qa",
                                opts, kb=base.name, rag_prompt=self._rag_prompt(base.name))

    def _rag_prompt(self, kb: str):
        """How the chat asks ``kb``'s questions with sources (its profile's system prompt,
        numbered sources, the answer language): RAFT samples are written that way."""
        from assistant.language import question_language
        from assistant.prompts import answer_messages
        from assistant.types import Source

        system = self._bases.profile(kb).system_prompt

        def prompt(question: str, chunks) -> list[dict]:
            sources = [Source(i, c.chunk_id, kb, c.source, c.page, c.text, 0.0, {})
                       for i, c in enumerate(chunks, start=1)]
            return answer_messages(question, sources, system, question_language(question))
        return prompt
