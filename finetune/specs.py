"""One typed, validated spec per training method (frozen; checked in ``__post_init__``).

>>> LoraSpec(r=8, target_modules=("q_proj", "v_proj")).alpha
16
>>> spec_from_dict("lora", {"r": 4, "lr": 1e-4}).r
4
>>> try:
...     spec_from_dict("lora", {"r": 0})
... except SpecError as e:
...     print(e)
LoRA rank r must be between 1 and 512 (got 0).
>>> to_dict(DpoSpec(beta=0.2))["beta"]
0.2
"""
from __future__ import annotations

import importlib.util
import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass, fields
from typing import Any

from finetune.errors import FinetuneError

METHODS = ("lora", "cpt", "dpo", "reft", "full")
LORA_TARGETS = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")


class SpecError(FinetuneError, ValueError):
    """A training spec with a wrong value; the message names the field and the bounds."""


def _check(cond: bool, message: str) -> None:
    if not cond:
        raise SpecError(message)


def _between(name: str, value: float, lo: float, hi: float) -> None:
    _check(lo <= value <= hi, f"{name} must be between {lo} and {hi} (got {value}).")


def qlora_unavailable_reason() -> str:
    """Why 4-bit QLoRA cannot run here ("" when it can: CUDA and bitsandbytes present)."""
    if importlib.util.find_spec("bitsandbytes") is None:
        return "QLoRA needs the bitsandbytes package, which is not installed."
    import torch

    if not torch.cuda.is_available():
        return "QLoRA needs a CUDA GPU (bitsandbytes 4-bit layers do not run on this CPU)."
    return ""


@dataclass(frozen=True)
class _Common:
    """Fields every trainer shares."""

    lr: float = 2e-4
    epochs: float = 1.0
    max_steps: int = 0  # > 0 overrides epochs
    micro_batch_size: int = 2
    grad_accum: int = 4
    # Tokens per example (longer prompts are left out, longer replies cut). A RAFT sample
    # is the chat's own prompt with three sources, ~800-1,000 tokens for the default
    # models; 512 left most of them out. Batches are padded to their longest example only.
    max_length: int = 2048
    warmup_ratio: float = 0.0
    save_steps: int = 50
    logging_steps: int = 1
    seed: int = 0

    def _check_common(self) -> None:
        _check(0 < self.lr <= 1.0, f"Learning rate lr must be in (0, 1] (got {self.lr}).")
        _between("epochs", self.epochs, 0.01, 1000)
        _between("max_steps", self.max_steps, 0, 1_000_000)
        _between("micro_batch_size", self.micro_batch_size, 1, 1024)
        _between("grad_accum", self.grad_accum, 1, 1024)
        _between("max_length", self.max_length, 16, 32768)
        _between("warmup_ratio", self.warmup_ratio, 0.0, 0.5)
        _between("save_steps", self.save_steps, 1, 1_000_000)
        _between("logging_steps", self.logging_steps, 1, 10_000)


@dataclass(frozen=True)
class LoraAdapterSpec(_Common):
    """The LoRA adapter's fields, shared by supervised LoRA, continued pretraining and DPO:
    r 16 on all seven linear projections (attention and MLP)."""

    target_modules: tuple[str, ...] = LORA_TARGETS
    r: int = 16
    alpha: int = 0  # 0: 2 * r
    dropout: float = 0.05
    qlora: bool = False

    def __post_init__(self) -> None:
        object.__setattr__(self, "target_modules", tuple(self.target_modules))
        if not self.alpha:
            object.__setattr__(self, "alpha", 2 * self.r)
        self._check_common()
        _check(1 <= self.r <= 512, f"LoRA rank r must be between 1 and 512 (got {self.r}).")
        _between("alpha", self.alpha, 1, 4096)
        _between("dropout", self.dropout, 0.0, 0.9)
        _check(bool(self.target_modules), "Choose at least one LoRA target module.")
        unknown = [m for m in self.target_modules if m not in LORA_TARGETS]
        _check(not unknown, f"Unknown LoRA target module(s) {', '.join(unknown)}; "
                            f"choose from {', '.join(LORA_TARGETS)}.")
        if self.qlora:
            reason = qlora_unavailable_reason()
            _check(not reason, f"QLoRA is unavailable: {reason} Turn qlora off to train "
                               "plain LoRA on the full-precision base.")


@dataclass(frozen=True)
class LoraSpec(LoraAdapterSpec):
    """Supervised LoRA with peft. The defaults are the ones that taught the 0.5B its
    documents on a 2-core CPU (see README, "Fine-tuning"): r 16 on all seven linear
    projections, lr 4e-4, three epochs of micro-batches of two with no accumulation.
    Attention-only r 8 at 2e-4 gained about half as much on the same held-out questions."""

    lr: float = 4e-4
    epochs: float = 3.0
    grad_accum: int = 1


@dataclass(frozen=True)
class PretrainSpec(LoraAdapterSpec):
    """Continued pretraining: causal-LM loss over raw text cut into blocks, with LoRA."""

    block_size: int = 256
    lr: float = 1e-4

    def __post_init__(self) -> None:
        super().__post_init__()
        _between("block_size", self.block_size, 16, 32768)


@dataclass(frozen=True)
class DpoSpec(LoraAdapterSpec):
    """DPO (trl) on prompt/chosen/rejected pairs, with LoRA (the frozen base is the reference)."""

    beta: float = 0.1
    lr: float = 5e-5

    def __post_init__(self) -> None:
        super().__post_init__()
        _check(0 < self.beta <= 10, f"DPO beta must be in (0, 10] (got {self.beta}).")


@dataclass(frozen=True)
class ReftSpec(_Common):
    """LoReFT (pyreft): low-rank interventions on the residual stream at some layers and
    positions; "f1+l1" = the first and last prompt token. The defaults (layers 8 and 16 of
    the default models' 24 and 28, two epochs without accumulation) gained +21 token-F1
    closed-book on two generated sets (see README); a smaller model needs other layers."""

    layers: tuple[int, ...] = (8, 16)
    rank: int = 4
    positions: str = "f1+l1"
    dropout: float = 0.05
    lr: float = 4e-3
    epochs: float = 2.0
    grad_accum: int = 1

    def __post_init__(self) -> None:
        object.__setattr__(self, "layers", tuple(int(x) for x in self.layers))
        self._check_common()
        _check(bool(self.layers), "Choose at least one ReFT layer.")
        _check(all(x >= 0 for x in self.layers), "ReFT layers are numbered from 0.")
        _between("rank", self.rank, 1, 256)
        _between("dropout", self.dropout, 0.0, 0.9)
        _check(_valid_positions(self.positions),
               f"ReFT positions must look like 'f1', 'l1' or 'f1+l1' (got {self.positions!r}).")


@dataclass(frozen=True)
class FullSpec(_Common):
    """Full-parameter fine-tuning: every weight trains (no peft), on chat examples with the
    loss on the reply only, as supervised LoRA. AdamW keeps two states per weight, so it
    needs about 16 bytes per parameter (fp32 weights on CPU; fp32 master weights with bf16
    autocast on a GPU): ~8 GB for the 0.5B before activations. A small learning rate and
    one epoch, since every weight moves. ``dropout`` is the model's attention dropout;
    ``gradient_checkpointing`` trades about a third more time for less activation memory."""

    lr: float = 1e-5
    epochs: float = 1.0
    grad_accum: int = 1
    dropout: float = 0.0
    weight_decay: float = 0.0
    gradient_checkpointing: bool = False

    def __post_init__(self) -> None:
        self._check_common()
        _between("dropout", self.dropout, 0.0, 0.9)
        _between("weight_decay", self.weight_decay, 0.0, 1.0)


def missing_layers(layers: Sequence[int], n_layers: int) -> str:
    """Why ``layers`` do not fit a model of ``n_layers`` blocks ("" when they do).

    >>> missing_layers((8, 30), 28)
    'ReFT layer(s) [30] do not exist: the model has layers 0..27. Choose layers in that range (for example 9,18).'
    """
    bad = [x for x in layers if not 0 <= x < n_layers]
    if not bad:
        return ""
    return (f"ReFT layer(s) {bad} do not exist: the model has layers 0..{n_layers - 1}. "
            f"Choose layers in that range (for example {n_layers // 3},{2 * n_layers // 3}).")


def _valid_positions(text: str) -> bool:
    parts = text.split("+")
    return all(len(p) >= 2 and p[0] in "fl" and p[1:].isdigit() and int(p[1:]) > 0
               for p in parts)


SPECS: dict[str, type] = {"lora": LoraSpec, "cpt": PretrainSpec, "dpo": DpoSpec, "reft": ReftSpec,
                         "full": FullSpec}


def spec_from_dict(method: str, values: dict[str, Any] | None = None):
    """The spec of ``method`` from plain values (JSON, form fields); unknown keys refused."""
    if method not in SPECS:
        raise SpecError(f"Unknown training method {method!r}; choose from {', '.join(METHODS)}.")
    cls = SPECS[method]
    values = dict(values or {})
    known = {f.name for f in fields(cls)}
    unknown = sorted(set(values) - known)
    if unknown:
        raise SpecError(f"Unknown field(s) for {method}: {', '.join(unknown)}.")
    for key in ("target_modules", "layers"):
        if isinstance(values.get(key), str):
            values[key] = tuple(x.strip() for x in values[key].split(",") if x.strip())
    try:
        return cls(**values)
    except TypeError as exc:
        raise SpecError(f"Bad {method} spec: {exc}") from exc


def to_dict(spec) -> dict[str, Any]:
    """Plain JSON-ready values (tuples become lists)."""
    return {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(spec).items()}


def method_of(spec) -> str:
    return next(m for m, cls in SPECS.items() if type(spec) is cls)


def planned_steps(spec: dict, train_rows: int) -> int:
    """Optimizer steps a run of ``spec`` (a spec's fields) takes over ``train_rows``
    examples on one process: ``max_steps`` wins over epochs.

    >>> planned_steps({"micro_batch_size": 2, "grad_accum": 4, "epochs": 1}, 180)
    23
    """
    if spec.get("max_steps"):
        return int(spec["max_steps"])
    batches = math.ceil(train_rows / max(1, spec.get("micro_batch_size", 2)))
    per_epoch = max(1, math.ceil(batches / max(1, spec.get("grad_accum", 4))))
    return max(1, math.ceil(per_epoch * float(spec.get("epochs", 1.0))))
