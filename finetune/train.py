"""Trainers: LoRA (chat SFT, loss on the reply only), continued pretraining (LoRA, causal
LM on raw-text blocks), DPO (trl, LoRA) and full-parameter SFT (every weight, no peft; the
result is a whole model folder) on a Hugging Face base folder.

Only this module (and finetune.reft) imports peft/trl. Progress lines (step/total, loss,
lr, elapsed, ETA) are appended to ``metrics.jsonl`` by ``ProgressCallback``; checkpoints
(safetensors weights; optimizer/scheduler/RNG state as written by the Trainer) go to
``<job>/checkpoints`` every ``save_steps`` steps, two kept. The same code runs in one
process or under ``torchrun`` / ``accelerate launch`` (the Trainer sets up DDP from the
environment; gloo on CPU).
"""
from __future__ import annotations

import json
import logging
import math
import os
import shutil
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from finetune.data import Example
from finetune.specs import DpoSpec, FullSpec, LoraAdapterSpec, LoraSpec, PretrainSpec

log = logging.getLogger(__name__)

IGNORE = -100


@dataclass(frozen=True)
class TrainResult:
    adapter_dir: Path
    steps: int
    train_loss: float
    seconds: float
    trainable_params: int
    total_params: int
    seconds_per_step: float


def is_main_process() -> bool:
    return int(os.environ.get("RANK", "0")) == 0


# --- tokenization --------------------------------------------------------------------
def _chat(messages) -> list[dict]:
    return [{"role": r, "content": c} for r, c in messages]


def sft_features(tokenizer, examples: Sequence[Example], max_length: int) -> list[dict]:
    """input_ids/labels per chat example; labels are IGNORE on the prompt (all turns but
    the last assistant reply), so the loss is on the reply only. An example whose prompt
    alone fills ``max_length`` is left out (it would teach nothing) and one whose reply
    runs past it is cut; both are counted in a warning, since a RAFT sample (the chat's
    own prompt with its sources) is several times longer than a closed-book pair."""
    out, left_out, cut = [], 0, 0
    for ex in examples:
        prompt = tokenizer.apply_chat_template(_chat(ex.messages[:-1]), tokenize=False,
                                               add_generation_prompt=True)
        full = tokenizer.apply_chat_template(_chat(ex.messages), tokenize=False)
        if not full.startswith(prompt):  # templates that rewrite earlier turns
            raise ValueError("The chat template does not extend the prompt; cannot mask it.")
        p_ids = tokenizer(prompt, add_special_tokens=False)["input_ids"]
        r_ids = tokenizer(full[len(prompt):], add_special_tokens=False)["input_ids"]
        fitted = fit_reply(p_ids, r_ids, max_length)
        if fitted is None:
            left_out += 1
            continue
        ids, labels, was_cut = fitted
        cut += was_cut
        out.append({"input_ids": ids, "labels": labels, "attention_mask": [1] * len(ids)})
    warn_long(len(examples), left_out, cut, max_length)
    if not out:
        raise ValueError(f"Every example's prompt is longer than max_length={max_length} "
                         "tokens; raise max_length.")
    return out


def fit_reply(p_ids: list[int], r_ids: list[int], max_length: int
              ) -> tuple[list[int], list[int], bool] | None:
    """input_ids and labels (IGNORE on the prompt) within ``max_length`` tokens, and
    whether the reply was cut; None when the prompt alone fills it."""
    if len(p_ids) >= max_length:
        return None
    ids = (p_ids + r_ids)[:max_length]
    labels = ([IGNORE] * len(p_ids) + r_ids)[:max_length]
    return ids, labels, len(p_ids) + len(r_ids) > max_length


def warn_long(total: int, left_out: int, cut: int, max_length: int) -> None:
    """Log how many training examples did not fit ``max_length`` tokens."""
    if left_out or cut:
        log.warning("%d of %d examples have a prompt longer than max_length=%d tokens and "
                    "are left out; %d more have their reply cut. Raise max_length to keep "
                    "them whole.", left_out, total, max_length, cut)


def text_blocks(tokenizer, examples: Sequence[Example], block_size: int) -> list[dict]:
    """Raw text (or whole chats, rendered) joined with EOS and cut into blocks."""
    ids: list[int] = []
    eos = tokenizer.eos_token_id
    for ex in examples:
        text = ex.text or tokenizer.apply_chat_template(_chat(ex.messages), tokenize=False)
        ids.extend(tokenizer(text, add_special_tokens=False)["input_ids"] + [eos])
    n = max(1, len(ids) // block_size)
    blocks = [ids[i * block_size:(i + 1) * block_size] for i in range(n)]
    return [{"input_ids": b, "labels": list(b), "attention_mask": [1] * len(b)} for b in blocks]


class PadCollator:
    """Right-pads input_ids (pad id), attention_mask (0) and labels (IGNORE)."""

    def __init__(self, pad_id: int):
        self.pad_id = pad_id

    def __call__(self, features: list[dict]):
        import torch

        width = max(len(f["input_ids"]) for f in features)
        pads = {"input_ids": self.pad_id, "attention_mask": 0, "labels": IGNORE}
        return {k: torch.tensor([f[k] + [v] * (width - len(f[k])) for f in features])
                for k, v in pads.items()}


# --- progress --------------------------------------------------------------------------
def _trainer_callback_base():
    from transformers import TrainerCallback

    return TrainerCallback


class ProgressCallback(_trainer_callback_base()):
    """Appends one JSON line per logged step: step, total, loss, lr, elapsed, eta."""

    def __init__(self, metrics_path: Path, on_step: Callable[[dict], None] | None = None,
                 elapsed_before: float = 0.0):
        self.path = metrics_path
        self.on_step = on_step
        self.elapsed_before = elapsed_before
        self.t0 = time.time()
        self.first_step: int | None = None

    def on_step_begin(self, args, state, control, **kw):
        if self.first_step is None:
            self.first_step = state.global_step
            self.t0 = time.time()

    def on_log(self, args, state, control, logs=None, **kw):
        if not state.is_world_process_zero or not logs or "loss" not in logs:
            return
        done = state.global_step - (self.first_step or 0)
        run = time.time() - self.t0
        per_step = run / done if done else 0.0
        row = {"step": state.global_step, "total": state.max_steps,
               "loss": round(float(logs["loss"]), 5),
               "lr": float(logs.get("learning_rate", 0.0)), "epoch": round(state.epoch or 0, 3),
               "elapsed": round(self.elapsed_before + run, 2),
               "eta": round(per_step * (state.max_steps - state.global_step), 1),
               "seconds_per_step": round(per_step, 3), "time": time.time()}
        with self.path.open("a", encoding="utf-8") as f:
            f.write(json.dumps(row) + "\n")
        if self.on_step:
            self.on_step(row)


def last_elapsed(metrics_path: Path) -> float:
    """Elapsed seconds recorded by earlier runs of a job (so a resumed job keeps counting)."""
    if not metrics_path.is_file():
        return 0.0
    lines = [x for x in metrics_path.read_text().splitlines() if x.strip()]
    return float(json.loads(lines[-1]).get("elapsed", 0.0)) if lines else 0.0


# --- model and arguments ---------------------------------------------------------------
def load_base(base_dir: Path, dtype=None, **config):
    """Model (bf16 on a bf16 GPU, else fp32, unless ``dtype`` says) and tokenizer;
    ``config``: overrides of the model's config (e.g. attention_dropout)."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(str(base_dir))
    if tok.model_max_length > 1_000_000:
        tok.model_max_length = 4096
    if tok.pad_token_id is None:
        tok.pad_token = tok.eos_token
    if dtype is None:
        dtype = torch.bfloat16 if torch.cuda.is_available() and torch.cuda.is_bf16_supported() \
            else torch.float32
    model = AutoModelForCausalLM.from_pretrained(str(base_dir), dtype=dtype, use_safetensors=True,
                                                 trust_remote_code=False, **config)
    model.config.use_cache = False
    return model, tok


def lora_config(spec: LoraAdapterSpec):
    from peft import LoraConfig

    return LoraConfig(r=spec.r, lora_alpha=spec.alpha, lora_dropout=spec.dropout,
                      target_modules=list(spec.target_modules), task_type="CAUSAL_LM")


def training_kwargs(spec, out_dir: Path) -> dict:
    import torch

    cuda = torch.cuda.is_available()
    return dict(
        output_dir=str(out_dir), per_device_train_batch_size=spec.micro_batch_size,
        gradient_accumulation_steps=spec.grad_accum, learning_rate=spec.lr,
        num_train_epochs=spec.epochs, max_steps=spec.max_steps or -1,
        warmup_steps=spec.warmup_ratio, logging_steps=spec.logging_steps,
        save_strategy="steps", save_steps=spec.save_steps, save_total_limit=2,
        report_to=[], disable_tqdm=True, seed=spec.seed, data_seed=spec.seed,
        remove_unused_columns=False, dataloader_num_workers=0, use_cpu=not cuda,
        bf16=cuda and torch.cuda.is_bf16_supported(),
        ddp_backend=None if cuda or int(os.environ.get("WORLD_SIZE", "1")) < 2 else "gloo",
        ddp_find_unused_parameters=False,
    )


def last_checkpoint(out_dir: Path) -> str | None:
    """The newest complete checkpoint (a kill while saving leaves a partial one behind)."""
    if not out_dir.is_dir():
        return None
    done = [p for p in out_dir.glob("checkpoint-*") if p.name.split("-")[-1].isdigit()
            and (p / "trainer_state.json").is_file()
            and list(p.glob("*.safetensors"))]
    if not done:
        return None
    return str(max(done, key=lambda p: int(p.name.split("-")[-1])))


# --- trainers ----------------------------------------------------------------------------
def train_lora(spec: LoraSpec | PretrainSpec, base_dir: Path, examples: Sequence[Example],
               job_dir: Path, resume: bool = False, on_step: Callable[[dict], None] | None = None
               ) -> TrainResult:
    """LoRA SFT (``LoraSpec``) or continued pretraining (``PretrainSpec``)."""
    from peft import get_peft_model
    from transformers import Trainer, TrainingArguments

    model, tok = load_base(base_dir)
    if isinstance(spec, PretrainSpec):
        features = text_blocks(tok, examples, spec.block_size)
    else:
        features = sft_features(tok, examples, spec.max_length)
    model = get_peft_model(model, lora_config(spec))
    args = TrainingArguments(**training_kwargs(spec, job_dir / "checkpoints"))
    trainer = Trainer(model=model, args=args, train_dataset=features,
                      data_collator=PadCollator(tok.pad_token_id))
    return _run(trainer, model, job_dir, resume, on_step)


def train_full(spec: FullSpec, base_dir: Path, examples: Sequence[Example], job_dir: Path,
               resume: bool = False, on_step: Callable[[dict], None] | None = None
               ) -> TrainResult:
    """Every weight trains (supervised, loss on the reply only, as ``train_lora``), fp32
    weights (bf16 autocast on a GPU). The result's folder is a whole model (16-bit
    safetensors, config, tokenizer): ``<job>/model``."""
    import torch
    from transformers import Trainer, TrainingArguments

    model, tok = load_base(base_dir, dtype=torch.float32, attention_dropout=spec.dropout)
    features = sft_features(tok, examples, spec.max_length)
    kwargs = training_kwargs(spec, job_dir / "checkpoints")
    kwargs.update(weight_decay=spec.weight_decay, optim="adamw_torch_fused", save_total_limit=1,
                  activation_checkpointing=spec.gradient_checkpointing)
    trainer = Trainer(model=model, args=TrainingArguments(**kwargs), train_dataset=features,
                      data_collator=PadCollator(tok.pad_token_id))
    return _run(trainer, model, job_dir, resume, on_step,
                save=lambda out: save_full_model(model, tok, out), out_name="model")


def save_full_model(model, tok, out_dir: Path) -> Path:
    """A trained model as a plain Hugging Face folder: 16-bit safetensors (half the fp32
    size; float16, whose finer steps keep small updates that bfloat16 would round away,
    unless a weight is out of its range; the model is cast in place, so call it last),
    config.json with ``architectures``, the tokenizer; written to a temp folder, then
    renamed."""
    out_dir = Path(out_dir)
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=out_dir.parent, prefix=f".{out_dir.name}-"))
    try:
        model.config.use_cache = True
        model.config.architectures = [type(model).__name__]
        model.to(_save_dtype(model)).save_pretrained(str(tmp), safe_serialization=True)
        tok.save_pretrained(str(tmp))
        shutil.rmtree(out_dir, ignore_errors=True)
        tmp.rename(out_dir)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return out_dir


def _save_dtype(model):
    """float16, or bfloat16 when a weight is beyond float16's range (65504)."""
    import torch

    peak = max(float(p.detach().abs().max()) for p in model.parameters())
    return torch.float16 if peak < 6.0e4 else torch.bfloat16


def train_dpo(spec: DpoSpec, base_dir: Path, examples: Sequence[Example], job_dir: Path,
              resume: bool = False, on_step: Callable[[dict], None] | None = None
              ) -> TrainResult:
    """DPO with trl on prompt/chosen/rejected pairs (conversational format, so the chat
    template frames them); LoRA on the policy, the frozen base is the reference."""
    from datasets import Dataset
    from trl import DPOConfig, DPOTrainer

    model, tok = load_base(base_dir)
    rows = [{"prompt": [{"role": "user", "content": e.prompt}],
             "chosen": [{"role": "assistant", "content": e.chosen}],
             "rejected": [{"role": "assistant", "content": e.rejected}]} for e in examples]
    args = DPOConfig(**training_kwargs(spec, job_dir / "checkpoints"), beta=spec.beta,
                     max_length=spec.max_length)
    trainer = DPOTrainer(model=model, args=args, train_dataset=Dataset.from_list(rows),
                         processing_class=tok, peft_config=lora_config(spec))
    return _run(trainer, trainer.model, job_dir, resume, on_step)


def _run(trainer, model, job_dir: Path, resume: bool, on_step, save=None,
         out_name: str = "adapter") -> TrainResult:
    metrics = job_dir / "metrics.jsonl"
    trainer.add_callback(ProgressCallback(metrics, on_step, last_elapsed(metrics) if resume else 0.0))
    ckpt = last_checkpoint(job_dir / "checkpoints") if resume else None
    if ckpt:
        log.info("Resuming from %s", ckpt)
    trainable, total = _param_counts(model)
    t0 = time.perf_counter()
    output = trainer.train(resume_from_checkpoint=ckpt)
    seconds = time.perf_counter() - t0
    adapter_dir = job_dir / out_name
    if trainer.is_world_process_zero():
        if save:
            save(adapter_dir)
        else:
            model.save_pretrained(str(adapter_dir), safe_serialization=True)
    start = int(Path(ckpt).name.split("-")[-1]) if ckpt else 0
    steps = trainer.state.global_step
    loss = float(output.training_loss) if output.training_loss is not None else math.nan
    return TrainResult(adapter_dir, steps, loss, seconds, int(trainable), int(total),
                       seconds / max(1, steps - start))


def _param_counts(model) -> tuple[int, int]:
    """(trainable, total) parameters: peft's count, or every parameter of a plain model."""
    if hasattr(model, "get_nb_trainable_parameters"):
        return model.get_nb_trainable_parameters()
    params = list(model.parameters())
    return (sum(p.numel() for p in params if p.requires_grad), sum(p.numel() for p in params))
