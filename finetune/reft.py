"""LoReFT with pyreft: train, save (safetensors + JSON, no pickles), reload, generate.

LoReFT learns a low-rank edit of the residual stream (``h + R^T(Wh + b - Rh)``) at some
layers' block outputs and some prompt positions ("f1+l1": the first and the last prompt
token); the base weights stay frozen. One intervention per layer, shared by the
positions. Interventions cannot be merged into weights or expressed in GGUF: they are
served through transformers (``assistant.reft_llm.ReftLLM``).

An adapter folder holds ``reft_config.json`` and ``interventions.safetensors``::

    result = train_reft(base_dir, examples, ReftSpec(layers=(0, 1)), out_dir)
    model = load_reft(out_dir, base_dir)
    generate(model, tokenizer, [{"role": "user", "content": "Hi"}])

pyreft 0.1.0 on transformers 5 needs three shims (see STACK.md): ``compute_loss`` with
the new signature, ``LoreftIntervention(dtype=torch.float32)``, and a finite
``model_max_length``. pyreft's own save (``save_intervention``) writes torch pickles;
it is replaced here, and its trainer checkpoints are turned off: a job's checkpoints are
the interventions saved the same way every ``save_steps`` (``train_reft(...,
checkpoint_dir=..., resume=True)`` continues from the last one).
"""
from __future__ import annotations

import json
import logging
import os
import shutil
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from finetune.errors import FinetuneError
from finetune.specs import missing_layers

log = logging.getLogger(__name__)

FORMAT_VERSION = 1
CONFIG = "reft_config.json"
WEIGHTS = "interventions.safetensors"
MAX_LENGTH = 2048  # the GGUF-derived tokenizer says 1e30

OnStep = Callable[[int, int, float, float], None]  # step, total, loss, lr


class ReftError(FinetuneError):
    """A ReFT adapter that cannot be trained, saved or loaded; the message says why."""


@dataclass(frozen=True)
class ReftResult:
    adapter_dir: Path
    trainable_params: int
    base_params: int
    steps: int
    loss: float
    seconds: float


# --- building -------------------------------------------------------------------------
def load_base(base_dir: Path):
    """The frozen HF causal LM (float32) and its tokenizer, with a finite max length."""
    import torch
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(str(base_dir), dtype=torch.float32,
                                                 trust_remote_code=False)
    return model, load_tokenizer(base_dir)


def load_tokenizer(base_dir: Path):
    """The base's tokenizer with a finite ``model_max_length`` and a pad token."""
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(str(base_dir), trust_remote_code=False)
    if not tok.model_max_length or tok.model_max_length > 1e6:
        tok.model_max_length = MAX_LENGTH
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    return tok


def build_reft(model, layers: Sequence[int], rank: int, dropout: float = 0.0):
    """``model`` wrapped with one fresh LoReFT intervention per layer (float32)."""
    import torch

    pyreft = _pyreft()
    problem = missing_layers(layers, model.config.num_hidden_layers)
    if problem:
        raise ReftError(problem)
    hidden = model.config.hidden_size
    reps = [{"layer": int(layer), "component": "block_output", "low_rank_dimension": rank,
             "intervention": pyreft.LoreftIntervention(
                 embed_dim=hidden, low_rank_dimension=rank, dropout=dropout,
                 dtype=torch.float32)} for layer in layers]
    reft = pyreft.get_reft_model(model, pyreft.ReftConfig(representations=reps))
    return reft


def trainable_parameters(reft) -> int:
    return sum(p.numel() for v in reft.interventions.values()
               for p in _module(v).parameters() if p.requires_grad)


def _module(value):
    return value[0] if isinstance(value, tuple) else value


def locations(n_prompt_tokens: int, positions: str, n_interventions: int) -> list[list[int]]:
    """Prompt positions each intervention edits ([intervention][position]).

    >>> locations(10, "f1+l1", 2)
    [[0, 9], [0, 9]]
    >>> locations(10, "l2", 1)
    [[8, 9]]
    """
    want = {p[0]: int(p[1:]) for p in positions.split("+")}
    first = min(n_prompt_tokens // 2, want.get("f", 0))
    last = min(n_prompt_tokens // 2, want.get("l", 0))
    pad = want.get("f", 0) - first + want.get("l", 0) - last  # short prompts: as pyreft
    row = [*range(first), *range(n_prompt_tokens - last, n_prompt_tokens), *[-1] * pad]
    return [list(row) for _ in range(n_interventions)]


def _pyreft():
    """``import pyreft`` without pyvene's start-up print about nnsight."""
    import contextlib
    import io

    with contextlib.redirect_stdout(io.StringIO()):
        import pyreft
    return pyreft


# --- data -----------------------------------------------------------------------------
def _as_dicts(messages) -> list[dict]:
    """Chat messages as {"role", "content"} dicts (``Example.messages`` are pairs)."""
    return [dict(m) if isinstance(m, dict) else {"role": m[0], "content": m[1]}
            for m in messages]


def _prompt_and_answer(messages) -> tuple[list[dict], str]:
    msgs = _as_dicts(messages)
    if len(msgs) < 2 or msgs[-1]["role"] != "assistant":
        raise ReftError("A ReFT training example must end with an assistant reply.")
    return msgs[:-1], msgs[-1]["content"]


def encode_example(tok, messages, positions: str, n_interventions: int, max_length: int
                   ) -> tuple[dict, bool] | None:
    """input_ids, labels (the reply only) and intervention locations for one chat, and
    whether its reply was cut to fit ``max_length``; None when the prompt alone fills it
    (cutting the prompt would move the last-token intervention off the question)."""
    from finetune.train import fit_reply

    prompt_msgs, answer = _prompt_and_answer(messages)
    prompt = tok.apply_chat_template(prompt_msgs, add_generation_prompt=True, tokenize=False)
    prompt_ids = tok(prompt, add_special_tokens=False)["input_ids"]
    answer_ids = tok(answer + (tok.eos_token or ""), add_special_tokens=False)["input_ids"]
    fitted = fit_reply(prompt_ids, answer_ids, max_length)
    if fitted is None:
        return None
    ids, labels, cut = fitted
    locs = locations(len(prompt_ids), positions, n_interventions)
    return {"input_ids": ids, "attention_mask": [1] * len(ids), "labels": labels,
            "intervention_locations": locs}, cut


def _dataset(tok, examples, positions: str, n_interventions: int, max_length: int):
    from datasets import Dataset

    from finetune.train import warn_long

    encoded = [encode_example(tok, getattr(e, "messages", e), positions, n_interventions,
                              max_length) for e in examples]
    fitting = [e for e in encoded if e is not None]
    warn_long(len(encoded), len(encoded) - len(fitting), sum(cut for _, cut in fitting),
              max_length)
    rows = [row for row, _ in fitting]
    if not rows:
        raise ReftError("The ReFT training set is empty (or every prompt is longer than "
                        f"max_length={max_length} tokens: raise max_length).")
    return Dataset.from_list(rows)


# --- training -------------------------------------------------------------------------
def _trainer_class():
    import transformers

    pyreft = _pyreft()

    class Trainer(pyreft.ReftTrainerForCausalLM):
        """pyreft's trainer with the transformers-5 ``compute_loss`` signature and no
        pickled checkpoints (the adapter is saved by ``save_reft`` at the end)."""

        def compute_loss(self, model, inputs, return_outputs=False,
                         num_items_in_batch=None, **kw):
            return super().compute_loss(model, inputs, return_outputs)

        def save_model(self, output_dir=None, _internal_call=False):
            return None

    class Progress(transformers.TrainerCallback):
        """Steps counted over the whole run (``done`` before a resume), a checkpoint every
        ``save_steps``."""

        def __init__(self, on_step: OnStep | None, should_stop: Callable[[], bool] | None,
                     done: int, total: int, save_steps: int, save: Callable[[int], None]):
            self.on_step, self.should_stop = on_step, should_stop
            self.done, self.total, self.save_steps, self.save = done, total, save_steps, save

        def on_log(self, args, state, control, logs=None, **kw):
            logs = logs or {}
            if self.on_step and "loss" in logs:
                self.on_step(self.done + state.global_step, self.total, float(logs["loss"]),
                             float(logs.get("learning_rate", 0.0)))

        def on_step_end(self, args, state, control, **kw):
            step = self.done + state.global_step
            if step % self.save_steps == 0:
                self.save(step)
            if self.should_stop and self.should_stop():
                control.should_training_stop = True

    return Trainer, Progress


def train_reft(base_dir: Path, examples: Sequence, spec, out_dir: Path, *,
               on_step: OnStep | None = None, should_stop: Callable[[], bool] | None = None,
               checkpoint_dir: Path | None = None, resume: bool = False) -> ReftResult:
    """Train LoReFT on chat ``examples`` (``Example``s or message lists) and save it to
    ``out_dir``. ``spec``: a ``finetune.specs.ReftSpec``. ``on_step(step, total, loss,
    lr)`` after each logged step; ``should_stop()`` True ends training early (saved).

    ``checkpoint_dir``: the interventions are saved there every ``spec.save_steps`` steps
    (safetensors, as an adapter). ``resume``: continue from that checkpoint: its weights
    are loaded and the remaining steps run, the learning rate picking up the linear decay
    where it stopped (the optimizer's moments start afresh; pyreft's own trainer
    checkpoints do not reload, see the module doc)."""
    import transformers

    from finetune.specs import planned_steps

    t0 = time.perf_counter()
    model, tok = load_base(Path(base_dir))
    reft = build_reft(model, spec.layers, spec.rank, spec.dropout)
    n = len(spec.layers)
    data = _dataset(tok, examples, spec.positions, n, spec.max_length)
    done, total = 0, planned_steps(spec.__dict__, len(data))
    latest = Path(checkpoint_dir) / "latest" if checkpoint_dir else None
    if resume and latest and (latest / CONFIG).is_file():
        config = read_config(latest)
        _load_weights(reft, latest)
        done, total = int(config["step"]), int(config["max_steps"])
        log.info("Resuming ReFT from step %d of %d (%s)", done, total, latest)
    Trainer, Progress = _trainer_class()
    pyreft = _pyreft()
    work = Path(tempfile.mkdtemp(prefix=".reft-run-", dir=_parent(Path(out_dir))))

    def save_checkpoint(step: int) -> None:
        if latest is not None and step < total and os.environ.get("RANK", "0") == "0":
            save_reft(reft, latest, base_dir=Path(base_dir), layers=spec.layers,
                      rank=spec.rank, positions=spec.positions,
                      extra={"step": step, "max_steps": total})

    try:
        args = transformers.TrainingArguments(
            output_dir=str(work), per_device_train_batch_size=spec.micro_batch_size,
            gradient_accumulation_steps=spec.grad_accum, max_steps=total - done,
            learning_rate=spec.lr * (total - done) / total if done else spec.lr,
            warmup_steps=0 if done else float(spec.warmup_ratio),
            logging_steps=spec.logging_steps, save_strategy="no", report_to=[],
            remove_unused_columns=False, seed=spec.seed + done, use_cpu=not _cuda(),
            disable_tqdm=True)
        trainer = Trainer(model=reft, processing_class=tok, args=args, train_dataset=data,
                          data_collator=pyreft.ReftDataCollator(_collator(tok, model)),
                          callbacks=[Progress(on_step, should_stop, done, total,
                                              spec.save_steps, save_checkpoint)])
        trainer.remove_callback(transformers.PrinterCallback)  # progress goes to on_step
        out = trainer.train()
    finally:
        shutil.rmtree(work, ignore_errors=True)
    save_reft(reft, out_dir, base_dir=Path(base_dir), layers=spec.layers, rank=spec.rank,
              positions=spec.positions)
    trainable = trainable_parameters(reft)
    steps = done + out.global_step
    log.info("ReFT: %d steps, %d trainable parameters, %.0f s", steps, trainable,
             time.perf_counter() - t0)
    return ReftResult(Path(out_dir), trainable, sum(p.numel() for p in model.parameters()),
                      steps, float(out.training_loss), time.perf_counter() - t0)


def _collator(tok, model):
    from transformers import DataCollatorForSeq2Seq

    return DataCollatorForSeq2Seq(tokenizer=tok, model=model, label_pad_token_id=-100,
                                  padding="longest")


def _cuda() -> bool:
    import torch

    return torch.cuda.is_available()


# --- save / load ----------------------------------------------------------------------
def save_reft(reft, out_dir: Path, *, base_dir: Path, layers: Sequence[int], rank: int,
              positions: str, extra: dict | None = None) -> Path:
    """The interventions' weights as safetensors plus ``reft_config.json`` (atomic;
    ``extra``: more config fields, e.g. a checkpoint's step)."""
    from safetensors.torch import save_file

    tensors = {}
    for i, value in enumerate(reft.interventions.values()):
        for key, tensor in _module(value).state_dict().items():
            tensors[f"{i}.{key}"] = tensor.detach().to("cpu").contiguous().clone()
    model_cfg = reft.model.config
    config = {"format_version": FORMAT_VERSION, "method": "loreft", "layers": list(layers),
              "rank": rank, "positions": positions, "component": "block_output",
              "share_weights": True, "embed_dim": model_cfg.hidden_size,
              "model_type": model_cfg.model_type, "base_model": str(base_dir), **(extra or {})}
    out_dir = Path(out_dir)
    tmp = Path(tempfile.mkdtemp(prefix=".reft-save-", dir=_parent(out_dir)))
    try:
        save_file(tensors, str(tmp / WEIGHTS), metadata={"format": "docent-loreft"})
        (tmp / CONFIG).write_text(json.dumps(config, indent=2), encoding="utf-8")
        shutil.rmtree(out_dir, ignore_errors=True)
        tmp.rename(out_dir)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return out_dir


def read_config(adapter_dir: Path) -> dict:
    path = Path(adapter_dir) / CONFIG
    try:
        config = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise ReftError(f"{adapter_dir} is not a ReFT adapter ({CONFIG}: {exc}).") from exc
    if config.get("format_version") != FORMAT_VERSION:
        raise ReftError(f"{path} has format {config.get('format_version')}; this Docent reads "
                        f"{FORMAT_VERSION}. Train the adapter again.")
    return config


def load_reft(adapter_dir: Path, base_dir: Path | None = None, model=None):
    """The ReFT model saved in ``adapter_dir``, on ``base_dir`` (default: the base it was
    trained on) or on an already loaded ``model``; in eval mode, config in
    ``.docent_config``."""
    config = read_config(adapter_dir)
    if model is None:
        base = Path(base_dir or config["base_model"])
        if not (base / "config.json").is_file():
            raise ReftError(f"The base model {base} of ReFT adapter {adapter_dir} is missing.")
        model, _ = load_base(base)
    if model.config.hidden_size != config["embed_dim"]:
        raise ReftError(f"ReFT adapter {adapter_dir} was trained on a model of width "
                        f"{config['embed_dim']}, not {model.config.hidden_size}.")
    reft = build_reft(model, config["layers"], config["rank"], 0.0)
    _load_weights(reft, adapter_dir)
    reft.eval()
    reft.docent_config = config
    return reft


def _load_weights(reft, adapter_dir: Path) -> None:
    from safetensors.torch import load_file

    tensors = load_file(str(Path(adapter_dir) / WEIGHTS))
    for i, value in enumerate(reft.interventions.values()):
        state = {k.split(".", 1)[1]: v for k, v in tensors.items() if k.startswith(f"{i}.")}
        if not state:
            raise ReftError(f"{adapter_dir} lacks the weights of intervention {i}.")
        _module(value).load_state_dict(state)


# --- generation -----------------------------------------------------------------------
def generate(reft, tok, messages: Sequence, max_new_tokens: int = 128,
             temperature: float = 0.0, streamer=None) -> str:
    """The reply to chat ``messages`` (dicts or (role, text) pairs) with the interventions
    applied at the prompt's positions, as in training. ``streamer``: e.g. a transformers
    TextIteratorStreamer."""
    import torch

    config = reft.docent_config
    prompt = tok.apply_chat_template(_as_dicts(messages), add_generation_prompt=True,
                                     tokenize=False)
    enc = tok(prompt, return_tensors="pt", add_special_tokens=False)
    n_prompt = enc["input_ids"].shape[-1]
    locs = locations(n_prompt, config["positions"], len(config["layers"]))
    sampling = {"do_sample": True, "temperature": temperature} if temperature > 0 else {
        "do_sample": False}
    with torch.no_grad():
        _, out = reft.generate(
            {"input_ids": enc["input_ids"], "attention_mask": enc["attention_mask"]},
            unit_locations={"sources->base": (None, [[loc] for loc in locs])},
            intervene_on_prompt=True, max_new_tokens=max_new_tokens,
            eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id,
            streamer=streamer, **sampling)
    return tok.decode(out[0][n_prompt:], skip_special_tokens=True)


def _parent(path: Path) -> Path:
    parent = Path(path).parent
    parent.mkdir(parents=True, exist_ok=True)
    return parent
