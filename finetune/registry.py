"""The adapter registry: every finished adapter in ``<data_dir>/adapters/<id>/``.

An adapter folder holds the weights (safetensors only) and ``manifest.json``::

    {"format_version": 1, "id": "lora-3f2a9c1e", "name": "clinic faq", "method": "lora",
     "base_model": "qwen2.5-coder-0.5b", "dataset_hash": "...", "spec": {...},
     "metrics": {...}, "created": "2025-01-01T12:00:00+00:00",
     "files": ["adapter_config.json", "adapter_model.safetensors"],
     "gguf": "adapter-f16.gguf", "gguf_error": ""}

>>> import tempfile, pathlib
>>> root = pathlib.Path(tempfile.mkdtemp())
>>> src = root / "out"; src.mkdir()
>>> _ = (src / "adapter_config.json").write_text("{}")
>>> _ = (src / "adapter_model.safetensors").write_bytes(b"x")
>>> reg = AdapterRegistry(root / "adapters")
>>> rec = reg.register(src, method="lora", base_model="qwen2.5-coder-0.5b",
...                    dataset_hash="abc", spec={"r": 8}, metrics={}, name="faq")
>>> [a.name for a in reg.list()], rec.method, rec.files
(['faq'], 'lora', ('adapter_config.json', 'adapter_model.safetensors'))
"""
from __future__ import annotations

import hashlib
import json
import logging
import re
import shutil
import tempfile
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from finetune.errors import FinetuneError

log = logging.getLogger(__name__)

FORMAT_VERSION = 1
MANIFEST = "manifest.json"
LORA_METHODS = ("lora", "cpt", "dpo")
FULL_METHOD = "full"  # a whole fine-tuned model (config.json + safetensors + tokenizer)
METHODS = (*LORA_METHODS, "reft", FULL_METHOD)
PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".pkl", ".pickle", ".ckpt")
_ID_RE = re.compile(r"^[a-z0-9][a-z0-9._-]{0,79}$")


class AdapterError(FinetuneError):
    """An adapter that cannot be registered, found or used; the message says why."""


@dataclass(frozen=True)
class AdapterRecord:
    """A registered adapter (what ``manifest.json`` says, plus where it lives)."""

    adapter_id: str
    name: str
    method: str
    base_model: str
    dataset_hash: str
    path: Path
    created: str
    spec: dict = field(default_factory=dict, compare=False, hash=False)
    metrics: dict = field(default_factory=dict, compare=False, hash=False)
    files: tuple[str, ...] = ()
    gguf: str = ""  # the GGUF LoRA (or full model) inside ``path`` ("" when not converted)
    gguf_error: str = ""  # why the GGUF conversion failed ("" when it did not)
    format_version: int = FORMAT_VERSION

    @property
    def is_lora(self) -> bool:
        return self.method in LORA_METHODS

    @property
    def is_full(self) -> bool:
        """A whole fine-tuned model, served as its own GGUF (no base underneath)."""
        return self.method == FULL_METHOD

    @property
    def gguf_path(self) -> Path | None:
        return self.path / self.gguf if self.gguf else None

    def to_json(self) -> dict:
        return {"format_version": self.format_version, "id": self.adapter_id,
                "name": self.name, "method": self.method, "base_model": self.base_model,
                "dataset_hash": self.dataset_hash, "spec": self.spec,
                "metrics": self.metrics, "created": self.created, "files": list(self.files),
                "gguf": self.gguf, "gguf_error": self.gguf_error}


@dataclass(frozen=True)
class ModelChoice:
    """One entry of the chat model menu and of GET /v1/models: the base or an adapter."""

    model_id: str
    label: str
    method: str  # "base", "lora", "cpt", "dpo", "reft" or "full"
    base_model: str
    metrics: dict = field(default_factory=dict, compare=False, hash=False)

    @classmethod
    def of(cls, record: AdapterRecord) -> ModelChoice:
        base = Path(record.base_model).name or record.base_model  # a folder: its name
        return cls(record.adapter_id, f"{record.name} ({record.method} on {base})",
                   record.method, record.base_model, dict(record.metrics))


class AdapterRegistry:
    """Adapters under ``root``; ids and names are unique, unknown ids are refused."""

    def __init__(self, root: Path):
        self.root = Path(root)

    # --- writing ---------------------------------------------------------------
    def register(self, folder: Path, *, method: str, base_model: str, dataset_hash: str,
                 spec: dict, metrics: dict, name: str = "", move: bool = False
                 ) -> AdapterRecord:
        """Copy (or ``move``) a trained adapter ``folder`` into the registry."""
        folder = Path(folder)
        files = _check_folder(folder, method)
        adapter_id = f"{method}-{_content_hash(folder, files)[:10]}"
        name = (name or adapter_id).strip()
        self._refuse_duplicates(adapter_id, name)
        self.root.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(dir=self.root, prefix=".new-"))
        try:
            for rel in files:
                (tmp / rel).parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(folder / rel, tmp / rel)
            record = AdapterRecord(adapter_id, name, method, base_model, dataset_hash,
                                   self.root / adapter_id, _now(), dict(spec), dict(metrics),
                                   files)
            _write_json(tmp / MANIFEST, record.to_json())
            tmp.rename(self.root / adapter_id)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
        if move:
            shutil.rmtree(folder, ignore_errors=True)
        log.info("Registered adapter %s (%s, %s)", adapter_id, method, base_model)
        return record

    def update_metrics(self, adapter_id: str, metrics: dict) -> AdapterRecord:
        """Merge ``metrics`` into the adapter's metrics (e.g. the before/after evaluation)."""
        record = self.get(adapter_id)
        return self._save(record, metrics={**record.metrics, **metrics})

    def set_gguf(self, adapter_id: str, gguf_file: Path | None, error: str = ""
                 ) -> AdapterRecord:
        """Record the GGUF LoRA converted into the adapter's folder, or why it failed."""
        record = self.get(adapter_id)
        name = ""
        if gguf_file is not None:
            gguf_file = Path(gguf_file)
            if gguf_file.parent.resolve() != record.path.resolve() or not gguf_file.is_file():
                raise AdapterError(f"{gguf_file} is not a file in {record.path}.")
            name = gguf_file.name
        return self._save(record, gguf=name, gguf_error=error)

    def delete(self, adapter_id: str) -> None:
        record = self.get(adapter_id)
        trash = self.root / f".del-{record.adapter_id}"
        record.path.rename(trash)
        shutil.rmtree(trash, ignore_errors=True)
        log.info("Deleted adapter %s", adapter_id)

    # --- reading ---------------------------------------------------------------
    def list(self) -> list[AdapterRecord]:
        """All adapters, oldest first; a folder with a broken manifest is skipped (logged)."""
        if not self.root.is_dir():
            return []
        out = []
        for folder in sorted(p for p in self.root.iterdir() if (p / MANIFEST).is_file()):
            try:
                out.append(_read(folder))
            except AdapterError as exc:
                log.warning("Skipping adapter folder %s: %s", folder, exc)
        return sorted(out, key=lambda r: (r.created, r.adapter_id))

    def get(self, adapter_id: str) -> AdapterRecord:
        if not _ID_RE.match(adapter_id or "") or not (self.root / adapter_id / MANIFEST).is_file():
            known = ", ".join(r.adapter_id for r in self.list()) or "none"
            raise AdapterError(f"No adapter {adapter_id!r}; registered adapters: {known}.")
        return _read(self.root / adapter_id)

    def find(self, ref: str) -> AdapterRecord:
        """An adapter by id or by name."""
        for record in self.list():
            if ref in (record.adapter_id, record.name):
                return record
        return self.get(ref)  # raises with the list of known ids

    # --- helpers ---------------------------------------------------------------
    def _refuse_duplicates(self, adapter_id: str, name: str) -> None:
        for record in self.list():
            if record.adapter_id == adapter_id:
                raise AdapterError(f"These weights are already registered as adapter "
                                   f"{adapter_id!r} ({record.name!r}).")
            if record.name == name:
                raise AdapterError(f"An adapter named {name!r} exists ({record.adapter_id}); "
                                   "choose another name or delete it first.")

    def _save(self, record: AdapterRecord, **changes) -> AdapterRecord:
        from dataclasses import replace

        new = replace(record, **changes)
        _write_json(record.path / MANIFEST, new.to_json())
        return new


def _check_folder(folder: Path, method: str) -> tuple[str, ...]:
    """The folder's files (relative), after checking it is a usable adapter of ``method``."""
    if method not in METHODS:
        raise AdapterError(f"Unknown adapter method {method!r}; expected one of "
                           f"{', '.join(METHODS)}.")
    if not folder.is_dir():
        raise AdapterError(f"Adapter folder {folder} does not exist.")
    files = tuple(sorted(str(p.relative_to(folder)) for p in folder.rglob("*")
                         if p.is_file() and p.name != MANIFEST))
    pickled = [f for f in files if f.lower().endswith(PICKLE_SUFFIXES)]
    if pickled:
        raise AdapterError(f"{folder} holds pickled files ({', '.join(pickled)}); adapters "
                           "must be safetensors only.")
    if not any(f.endswith(".safetensors") for f in files):
        raise AdapterError(f"{folder} has no .safetensors weights.")
    config = {**dict.fromkeys(LORA_METHODS, "adapter_config.json"), "reft": "reft_config.json",
              FULL_METHOD: "config.json"}[method]
    if config not in files:
        raise AdapterError(f"{folder} has no {config}: it is not a {method} adapter.")
    return files


def _content_hash(folder: Path, files: tuple[str, ...]) -> str:
    h = hashlib.sha256()
    for rel in files:
        h.update(rel.encode())
        with (folder / rel).open("rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                h.update(block)
    return h.hexdigest()


def _read(folder: Path) -> AdapterRecord:
    try:
        m = json.loads((folder / MANIFEST).read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise AdapterError(f"Cannot read {folder / MANIFEST}: {exc}") from exc
    version = m.get("format_version")
    if version != FORMAT_VERSION:
        raise AdapterError(f"{folder} has manifest format {version}; this Docent reads "
                           f"format {FORMAT_VERSION}. Retrain or re-register the adapter.")
    try:
        return AdapterRecord(m["id"], m["name"], m["method"], m["base_model"],
                             m["dataset_hash"], folder, m["created"], m.get("spec") or {},
                             m.get("metrics") or {}, tuple(m.get("files") or ()),
                             m.get("gguf", ""), m.get("gguf_error", ""), version)
    except KeyError as exc:
        raise AdapterError(f"{folder / MANIFEST} lacks the field {exc}.") from exc


def _write_json(path: Path, data: dict) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(data, indent=2, ensure_ascii=False), encoding="utf-8")
    tmp.replace(path)


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")
