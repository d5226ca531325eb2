"""LoRA step time: Docent's trainer (finetune.train.train_lora: progress records,
checkpoint policy) against a plain peft + transformers Trainer loop on the same model,
the same tokenized examples and the same LoRA settings.

    python -m benchmarks.finetune_step --base DIR_OF_HF_WEIGHTS [--steps 8]

DIR: the dequantized default model (what `finetune.base_models.hf_base` writes into
<data_dir>/hf-models/qwen2.5-coder-0.5b) or any local HF folder. The first step of each
run is left out (warm-up).
"""
from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path


def examples(n: int):
    from finetune.data import Example

    facts = [("Who founded the Riverside Clinic?", "Dr. Mira Okafor founded it in 1987."),
             ("When is the clinic open?", "Monday to Friday from 8 am to 6 pm."),
             ("What is the adult amoxicillin dose?", "500 mg every 8 hours for 7 days."),
             ("When do adults get a tetanus booster?", "Every 10 years.")]
    return [Example(messages=(("user", f"{q} ({i})"), ("assistant", a)))
            for i, (q, a) in ((i, facts[i % len(facts)]) for i in range(n))]


def plain(base: Path, data, spec, steps: int, out: Path) -> list[float]:
    """Step durations of a plain peft + Trainer run."""
    from peft import get_peft_model
    from transformers import Trainer, TrainerCallback, TrainingArguments

    from finetune.train import PadCollator, load_base, lora_config, sft_features

    model, tok = load_base(base)
    features = sft_features(tok, data, spec.max_length)
    model = get_peft_model(model, lora_config(spec))
    marks: list[float] = []

    class Clock(TrainerCallback):
        def on_step_end(self, args, state, control, **kw):
            marks.append(time.perf_counter())

    args = TrainingArguments(output_dir=str(out), per_device_train_batch_size=spec.micro_batch_size,
                             gradient_accumulation_steps=spec.grad_accum, learning_rate=spec.lr,
                             max_steps=steps, save_strategy="no", report_to=[], use_cpu=True,
                             disable_tqdm=True, remove_unused_columns=False, logging_steps=1)
    trainer = Trainer(model=model, args=args, train_dataset=features,
                      data_collator=PadCollator(tok.pad_token_id), callbacks=[Clock()])
    trainer.train()
    return [b - a for a, b in zip(marks, marks[1:])]


def ours(base: Path, data, spec, job: Path) -> list[float]:
    from finetune.train import train_lora

    train_lora(spec, base, data, job)
    times = [json.loads(line)["time"] for line in (job / "metrics.jsonl").open()]
    return [b - a for a, b in zip(times, times[1:])]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--base", type=Path, required=True)
    ap.add_argument("--steps", type=int, default=8)
    ap.add_argument("--micro-batch-size", type=int, default=2)
    ap.add_argument("--max-length", type=int, default=128)
    args = ap.parse_args()
    from finetune.specs import LoraSpec

    spec = LoraSpec(max_steps=args.steps, micro_batch_size=args.micro_batch_size, grad_accum=1,
                    max_length=args.max_length, save_steps=1000, logging_steps=1)
    data = examples(args.steps * args.micro_batch_size + 4)
    with tempfile.TemporaryDirectory() as tmp:
        a = ours(args.base, data, spec, Path(tmp) / "job")
        b = plain(args.base, data, spec, args.steps, Path(tmp) / "plain")
    mine, base = statistics.median(a), statistics.median(b)
    print(f"LoRA r={spec.r} on {', '.join(spec.target_modules)}, micro-batch {spec.micro_batch_size}, "
          f"{len(data)} short chat examples, {args.steps} steps:")
    print(f"  Docent trainer: median {mine:.2f} s/step; plain peft + Trainer: {base:.2f} s/step; "
          f"ratio {mine / base:.2f}x")


if __name__ == "__main__":
    main()
