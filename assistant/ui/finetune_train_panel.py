"""Fine-tune tab, Train: the method and its spec fields, the base model, a memory and
time estimate before start (shown at once, with its parts, when full fine-tuning is
chosen), and Start (the refusal's reason shown when it does not fit).

The callbacks below the builder are plain functions of the facade (tests call them)."""
from __future__ import annotations

import logging
from dataclasses import dataclass

import gradio as gr

from assistant.core import Assistant
from assistant.ui.finetune_data_panel import EXPECTED
from assistant.ui.finetune_format import METHOD_LABELS, duration
from finetune.specs import LORA_TARGETS, SPECS, planned_steps, qlora_unavailable_reason

log = logging.getLogger(__name__)
COMMON = ("lr", "epochs", "max_steps", "micro_batch_size", "grad_accum", "max_length", "dropout")
PER_METHOD = {"lora": ("target_modules", "r", "alpha", "qlora"),
              "cpt": ("target_modules", "r", "alpha", "qlora", "block_size"),
              "dpo": ("target_modules", "r", "alpha", "qlora", "beta"),
              "reft": ("layers", "rank", "positions"),
              "full": ("weight_decay", "gradient_checkpointing")}
INTS = {"max_steps", "micro_batch_size", "grad_accum", "max_length", "r", "alpha",
        "block_size", "rank"}
FIELDS = (*COMMON, "target_modules", "r", "alpha", "qlora", "block_size", "beta", "layers",
          "rank", "positions", "weight_decay", "gradient_checkpointing")


@dataclass(frozen=True)
class TrainPanel:
    start: gr.Button
    started: object  # the start click's event, for ``.then``
    job_id: gr.State  # the job just started (None when refused)


def build_train_panel(assistant: Assistant, dataset: gr.Dropdown) -> TrainPanel:
    lora, reft, full = SPECS["lora"](), SPECS["reft"](), SPECS["full"]()
    with gr.Row():
        method = gr.Radio([(label, m) for m, label in METHOD_LABELS.items()], value="lora",
                          label="Method", elem_id="ft-method", scale=2)
        models = assistant.training.base_models()
        base = gr.Dropdown(models, value=models[0], allow_custom_value=True,
                           label="Base model", elem_id="ft-base", scale=2,
                           info="A default model, or the path of a local Hugging Face folder.")
        name = gr.Textbox(label="Adapter name (optional)", max_lines=1, scale=1,
                          elem_id="ft-name")
    w: dict[str, gr.components.Component] = {}
    with gr.Row():
        w["lr"] = gr.Number(value=lora.lr, label="Learning rate", minimum=1e-7, maximum=1.0,
                            step=1e-5, elem_id="ft-lr")
        w["epochs"] = gr.Number(value=lora.epochs, label="Epochs", minimum=0.01, maximum=1000,
                                elem_id="ft-epochs")
        w["max_steps"] = gr.Number(value=0, precision=0, minimum=0, label="Max steps",
                                   info="> 0 overrides epochs")
        w["micro_batch_size"] = gr.Number(value=lora.micro_batch_size, precision=0, minimum=1,
                                          maximum=1024, label="Micro-batch")
        w["grad_accum"] = gr.Number(value=lora.grad_accum, precision=0, minimum=1,
                                    maximum=1024, label="Gradient accumulation",
                                    elem_id="ft-grad-accum")
        w["max_length"] = gr.Number(value=lora.max_length, precision=0, minimum=16,
                                    maximum=32768, label="Max length (tokens)")
        w["dropout"] = gr.Number(value=lora.dropout, minimum=0, maximum=0.9, step=0.01,
                                 label="Dropout")
    with gr.Group(visible=True) as lora_box:
        w["target_modules"] = gr.CheckboxGroup(list(LORA_TARGETS), value=list(lora.target_modules),
                                               label="LoRA target modules")
        with gr.Row():
            w["r"] = gr.Number(value=lora.r, precision=0, minimum=1, maximum=512, label="Rank r")
            w["alpha"] = gr.Number(value=0, precision=0, minimum=0, maximum=4096,
                                   label="Alpha", info="0: twice r")
            w["block_size"] = gr.Number(value=256, precision=0, minimum=16, maximum=32768,
                                        label="Block size (tokens)", visible=False)
            w["beta"] = gr.Number(value=0.1, minimum=0.001, maximum=10, label="DPO beta",
                                  visible=False)
            reason = qlora_unavailable_reason()
            w["qlora"] = gr.Checkbox(value=False, label="QLoRA (4-bit base)",
                                     interactive=not reason, info=reason or
                                     "Quantize the frozen base to 4 bits (CUDA).",
                                     elem_id="ft-qlora")
    with gr.Row(visible=False) as reft_box:
        w["layers"] = gr.Textbox(value=",".join(map(str, reft.layers)), label="ReFT layers",
                                 info="Comma-separated, from 0")
        w["rank"] = gr.Number(value=reft.rank, precision=0, minimum=1, maximum=256,
                              label="ReFT rank")
        w["positions"] = gr.Textbox(value=reft.positions, label="Positions",
                                    info="f1 = first prompt token, l1 = last; e.g. f1+l1")
    with gr.Row(visible=False) as full_box:
        w["weight_decay"] = gr.Number(value=full.weight_decay, minimum=0, maximum=1.0,
                                      step=0.01, label="Weight decay (AdamW)")
        w["gradient_checkpointing"] = gr.Checkbox(
            value=full.gradient_checkpointing, label="Gradient checkpointing",
            info="Every weight trains (about 16 bytes per parameter in memory); this "
                 "recomputes activations to keep fewer of them", elem_id="ft-grad-ckpt")
    force = gr.Checkbox(value=False, label="Start even when the memory estimate says it "
                                           "does not fit")
    with gr.Row():
        estimate_btn = gr.Button("Estimate", elem_id="ft-estimate")
        start_btn = gr.Button("Start training", variant="primary", elem_id="ft-start")
    estimate = gr.Markdown(elem_id="ft-estimate-result")
    status = gr.Markdown(elem_id="ft-train-status")
    job_id = gr.State(None)
    fields = [w[f] for f in FIELDS]

    def on_method(m: str):
        spec = SPECS[m]()  # each method's own defaults for the shared fields
        return (gr.Group(visible=m not in ("reft", "full")), gr.Row(visible=m == "reft"),
                gr.Row(visible=m == "full"), gr.Number(value=spec.lr),
                gr.Number(value=spec.epochs), gr.Number(value=spec.grad_accum),
                gr.Number(value=spec.dropout), gr.Number(visible=m == "cpt"),
                gr.Number(visible=m == "dpo"), "")

    def do_estimate(m: str, base_model: str, ds_id: str | None, *values):
        return estimate_text(assistant, m, spec_values(m, dict(zip(FIELDS, values))),
                             base_model, ds_id)

    def do_start(m: str, base_model: str, ds_id: str | None, label: str, skip: bool, *values):
        message, new_id = start_job(assistant, m, spec_values(m, dict(zip(FIELDS, values))),
                                    base_model, ds_id, label, skip)
        return message, new_id

    def estimate_if_full(m: str, base_model: str, ds_id: str | None, *values):
        return do_estimate(m, base_model, ds_id, *values) if m == "full" else ""

    method.change(on_method, [method], [lora_box, reft_box, full_box, w["lr"], w["epochs"],
                                        w["grad_accum"], w["dropout"], w["block_size"],
                                        w["beta"], estimate], api_name=False
                  ).then(estimate_if_full, [method, base, dataset, *fields], [estimate],
                         api_name=False)
    estimate_btn.click(do_estimate, [method, base, dataset, *fields], [estimate], api_name=False)
    started = start_btn.click(do_start, [method, base, dataset, name, force, *fields],
                              [status, job_id], api_name=False)
    return TrainPanel(start_btn, started, job_id)


# --- callbacks (plain functions of the facade) ------------------------------------------
def spec_values(method: str, form: dict) -> dict:
    """The spec fields of ``method`` from the form (numbers from the UI are floats).

    >>> spec_values("reft", {"lr": 0.004, "epochs": 1, "rank": 4.0, "layers": "0, 2",
    ...                      "positions": "l1", "r": 8})
    {'lr': 0.004, 'epochs': 1, 'layers': '0, 2', 'rank': 4, 'positions': 'l1'}
    """
    out = {}
    for key in (*COMMON, *PER_METHOD.get(method, ())):
        value = form.get(key)
        if value is None or value == "":
            continue
        out[key] = int(value) if key in INTS else value
    return out


def estimate_text(assistant: Assistant, method: str, spec: dict, base: str,
                  ds_id: str | None) -> str:
    """Markdown: parameters, memory (needed and free), time per step and in all."""
    try:
        est = assistant.training.estimate(method, spec, (base or "").strip(), ds_id or None)
    except EXPECTED as exc:
        return f"⚠️ {exc}"
    verdict = "**Fits**" if est.fits else "**Does not fit**"
    parts = f" ({est.breakdown})" if est.breakdown else ""
    text = (f"{verdict}: ~{est.params / 1e6:.0f}M parameters; needs ~{est.memory_gb:.1f} GB"
            f"{parts} of {est.available_gb:.1f} GB free; ~{est.seconds_per_step:.1f} s per step")
    rows = next((r.train for r in assistant.datasets.list() if r.id == ds_id), 0) if ds_id else 0
    if rows and method != "cpt":
        steps = planned_steps({**SPECS[method]().__dict__, **spec}, rows)
        text += (f"; {steps} step{'s' if steps != 1 else ''} ≈ "
                 f"{duration(steps * est.seconds_per_step)} of training")
    text += "."
    return text + (f"\n\n{est.reason}" if est.reason else "")


def start_job(assistant: Assistant, method: str, spec: dict, base: str, ds_id: str | None,
              name: str = "", force: bool = False) -> tuple[str, str | None]:
    """Queue a job -> (message, job id), or (the refusal's reason, None)."""
    if not ds_id:
        return "Choose or import a dataset first.", None
    try:
        job = assistant.training.start(method, spec, (base or "").strip(), ds_id,
                                       name=(name or "").strip(), force=bool(force))
    except EXPECTED as exc:
        return f"⚠️ {exc}", None
    return (f"Started job **{job.id}** ({job.status}). Follow it under Jobs; it keeps "
            "running if you close this page."), job.id
