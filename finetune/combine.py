"""Two or more LoRA adapters of one base combined into one new adapter (peft's
``add_weighted_adapter``), registered like any adapter and converted to a GGUF LoRA.

    plan = plan_combination(registry, ["faq", "billing"], [0.7, 0.3])
    record = combine(plan, base_hf_dir, registry, name="faq+billing")
    record.method, record.spec["combined_from"], record.spec["combination_type"]
    -> ("lora", ["lora-3f2a9c1e00", "lora-9b1c7d2e44"], "cat")

Combination types (``delta W_i = s_i B_i A_i``, ``s_i = alpha_i / r_i``, weights ``w_i``):

* "cat" (default): exact. The A's (times ``w_i s_i``) and B's are stacked, so the new
  adapter's ``delta W = sum_i w_i delta W_i``; its rank is the sum of the ranks (8 + 8 ->
  16: still small). Ranks and target modules may differ.
* "linear": ``A = sum_i sqrt(w_i s_i) A_i`` and ``B = sum_i sqrt(w_i s_i) B_i`` at the
  common rank. ``B A`` then holds cross terms ``B_i A_j``: a rough approximation (peft's
  own words); all ranks must be equal.
* "svd": the exact weighted ``delta W`` truncated by SVD to the largest rank.

Weights default to equal shares (1/N each: the average of the adapters). Only the LoRA
weights matter, so the base model is built from its config.json alone, with empty
(uninitialised, untouched) weights: no checkpoint is read, and it takes seconds.
"""
from __future__ import annotations

import json
import logging
import math
import shutil
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from finetune.registry import LORA_METHODS, AdapterError, AdapterRecord, AdapterRegistry

log = logging.getLogger(__name__)

COMBINATIONS = ("cat", "linear", "svd")
_UNSUPPORTED = (("use_dora", "DoRA"), ("modules_to_save", "modules_to_save"),
                ("target_parameters", "target_parameters"))


@dataclass(frozen=True)
class CombinePlan:
    """What ``combine`` merges: validated records, their weights and the combination."""

    records: tuple[AdapterRecord, ...]
    weights: tuple[float, ...]
    combination: str = "cat"

    def __post_init__(self):
        if self.combination not in COMBINATIONS:
            raise AdapterError(f"Unknown combination {self.combination!r}; choose "
                               f"{', '.join(COMBINATIONS)}.")

    @property
    def base_model(self) -> str:
        return self.records[0].base_model

    def spec(self, rank: int, target_modules: list[str]) -> dict:
        return {"combined_from": [r.adapter_id for r in self.records],
                "weights": list(self.weights), "combination_type": self.combination,
                "r": rank, "target_modules": sorted(target_modules)}

    def describe(self) -> str:
        """E.g. "faq (0.7) + billing (0.3), peft cat"."""
        parts = [f"{r.name} ({w:g})" for r, w in zip(self.records, self.weights)]
        return " + ".join(parts) + f", peft {self.combination}"


# --- validation -----------------------------------------------------------------------
def plan_combination(registry: AdapterRegistry, refs: list[str],
                     weights: list[float] | None = None, combination: str = "cat",
                     name: str = "") -> CombinePlan:
    """The adapters ``refs`` (ids or names) checked for combining; ``AdapterError`` says
    why not: fewer than two, unknown, ReFT, different bases, bad weights, a taken name."""
    refs = [r.strip() for r in refs if r and r.strip()]
    if len(refs) < 2:
        raise AdapterError(f"Combining needs at least two LoRA adapters; got {len(refs)}.")
    records = tuple(registry.find(ref) for ref in refs)  # unknown: lists the known ids
    ids = [r.adapter_id for r in records]
    if len(set(ids)) < len(ids):
        raise AdapterError(f"The same adapter is named twice ({', '.join(ids)}); give its "
                           "weight once instead.")
    for record in records:
        _check_lora(record)
    bases = sorted({r.base_model for r in records})
    if len(bases) > 1:
        raise AdapterError("Only adapters of the same base model can be combined; these are "
                           "on " + ", ".join(f"{r.adapter_id}: {r.base_model}"
                                             for r in records) + ".")
    if name and any(r.name == name.strip() for r in registry.list()):
        raise AdapterError(f"An adapter named {name.strip()!r} exists; choose another name.")
    return CombinePlan(records, check_weights(weights, len(records)), combination)


def check_weights(weights: list[float] | None, n: int) -> tuple[float, ...]:
    """Equal shares when ``weights`` is empty; otherwise ``n`` finite numbers, not all 0.

    >>> check_weights(None, 4), check_weights([0.7, 0.3], 2)
    ((0.25, 0.25, 0.25, 0.25), (0.7, 0.3))
    """
    if not weights:
        return (1.0 / n,) * n
    if len(weights) != n:
        raise AdapterError(f"{len(weights)} weights for {n} adapters: give one weight per "
                           "adapter, in the same order (or none for equal shares).")
    try:
        values = tuple(float(w) for w in weights)
    except (TypeError, ValueError) as exc:
        raise AdapterError(f"Weights must be numbers: {exc}.") from exc
    if not all(math.isfinite(w) for w in values):
        raise AdapterError(f"Weights must be finite numbers; got {list(values)}.")
    if not any(values):
        raise AdapterError("At least one weight must be non-zero.")
    return values


def _check_lora(record: AdapterRecord) -> None:
    if not record.is_lora:
        raise AdapterError(f"{record.adapter_id} is a {record.method} adapter, not LoRA "
                           f"weights: only LoRA adapters ({', '.join(LORA_METHODS)}) can be "
                           "combined.")
    config = adapter_config(record)
    if config.get("peft_type", "LORA") != "LORA":
        raise AdapterError(f"{record.adapter_id} is a {config['peft_type']} adapter, not a "
                           "LoRA; only LoRA adapters can be combined.")
    for key, label in _UNSUPPORTED:
        if config.get(key):
            raise AdapterError(f"{record.adapter_id} uses {label}, which peft cannot "
                               "combine with other adapters.")


def adapter_config(record: AdapterRecord) -> dict:
    try:
        return json.loads((record.path / "adapter_config.json").read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise AdapterError(f"Cannot read the adapter_config.json of {record.adapter_id}: "
                           f"{exc}") from exc


# --- the merge ------------------------------------------------------------------------
def combine(plan: CombinePlan, base_hf_dir: Path, registry: AdapterRegistry,
            name: str = "") -> AdapterRecord:
    """Merge ``plan`` on the base whose config.json is in ``base_hf_dir``, register the
    result (method "lora", ``spec["combined_from"]``) and convert it to a GGUF LoRA (a
    failed conversion is recorded in the manifest, as for a trained adapter)."""
    registry.root.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(dir=registry.root, prefix=".combine-"))
    try:
        t0 = time.perf_counter()
        rank, targets = merge_into(plan, Path(base_hf_dir), work)
        log.info("Combined %s in %.1f s", plan.describe(), time.perf_counter() - t0)
        record = registry.register(
            work, method="lora", base_model=plan.base_model,
            dataset_hash="+".join(r.dataset_hash for r in plan.records if r.dataset_hash),
            spec=plan.spec(rank, targets), metrics={"eval_note": (
                f"combined from {plan.describe()}; not evaluated")},
            name=name.strip() or " + ".join(r.name for r in plan.records))
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return _with_gguf(record, base_hf_dir, registry)


def merge_into(plan: CombinePlan, base_hf_dir: Path, out_dir: Path) -> tuple[int, list[str]]:
    """Write the combined peft adapter (adapter_config.json + adapter_model.safetensors)
    into ``out_dir``; its rank and target modules."""
    from peft import PeftModel

    model = _empty_base(base_hf_dir)
    try:
        peft_model = PeftModel.from_pretrained(model, str(plan.records[0].path),
                                               adapter_name="src0")
        for i, record in enumerate(plan.records[1:], start=1):
            peft_model.load_adapter(str(record.path), adapter_name=f"src{i}")
        names = [f"src{i}" for i in range(len(plan.records))]
        peft_model.add_weighted_adapter(names, list(plan.weights), "default",
                                        combination_type=plan.combination)
    except (ValueError, TypeError, KeyError, RuntimeError) as exc:
        raise AdapterError(f"peft cannot combine {plan.describe()}: {exc}") from exc
    peft_model.save_pretrained(str(out_dir), selected_adapters=["default"],
                               safe_serialization=True)
    (Path(out_dir) / "README.md").unlink(missing_ok=True)  # peft's empty model card
    config = peft_model.peft_config["default"]
    targets = config.target_modules
    return config.r, [targets] if isinstance(targets, str) else sorted(targets)


def _empty_base(base_hf_dir: Path):
    """The base architecture with uninitialised float32 weights (only shapes matter)."""
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM

    if not (base_hf_dir / "config.json").is_file():
        raise AdapterError(f"{base_hf_dir} has no config.json: the adapters' base model "
                           "folder is needed to combine them.")
    config = AutoConfig.from_pretrained(str(base_hf_dir), trust_remote_code=False)
    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(config, dtype=torch.float32,
                                                 trust_remote_code=False)
    return model.to_empty(device="cpu")


def _with_gguf(record: AdapterRecord, base_hf_dir: Path, registry: AdapterRegistry
               ) -> AdapterRecord:
    from finetune.gguf import to_gguf_lora

    try:
        to_gguf_lora(record, base_hf_dir)
    except Exception as exc:  # noqa: BLE001 - recorded in the manifest by to_gguf_lora
        log.warning("GGUF conversion of %s failed: %s", record.adapter_id, exc)
    return registry.get(record.adapter_id)
