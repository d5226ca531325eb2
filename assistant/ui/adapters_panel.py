"""Fine-tune tab, Adapters: every registered adapter (method, base, created, how chat
serves it), its before/after metrics side by side, Delete, Export, and Combine (two or
more LoRA adapters of one base merged into a new one). When adapters appear (a job
finished, a combination) or go, the chat tab's model menu is refreshed too.

The callbacks below the builder are plain functions of the facade (tests call them)."""
from __future__ import annotations

import json
import logging
from dataclasses import dataclass

import gradio as gr

from assistant.core import Assistant
from assistant.ui.finetune_data_panel import EXPECTED
from assistant.ui.finetune_format import (
    ADAPTER_HEADERS,
    adapter_row,
    metrics_markdown,
    model_menu,
)
from finetune.registry import LORA_METHODS

log = logging.getLogger(__name__)
EXPORTS = [("GGUF Q4_K_M", "gguf:Q4_K_M"), ("GGUF Q5_K_M", "gguf:Q5_K_M"),
           ("GGUF Q8_0", "gguf:Q8_0"), ("Merged model (safetensors)", "merged-safetensors:")]
COMBINATIONS = [("cat: exact, ranks add up", "cat"),
                ("linear: same ranks, approximate", "linear"),
                ("svd: exact sum cut to the largest rank", "svd")]


@dataclass(frozen=True)
class AdaptersPanel:
    pick: gr.Dropdown
    table: gr.Dataframe


def build_adapters_panel(demo: gr.Blocks, assistant: Assistant, timer: gr.Timer,
                         model_choice: gr.Dropdown) -> AdaptersPanel:
    table = gr.Dataframe(headers=ADAPTER_HEADERS, interactive=False, wrap=True,
                         elem_id="ft-adapters", label="Adapters (each chat picks one in the "
                                                      "Chat tab's model menu)")
    with gr.Row():
        pick = gr.Dropdown(label="Adapter", choices=[], elem_id="ft-adapter", scale=4)
        delete = gr.Button("Delete adapter", variant="stop", elem_id="ft-delete-adapter",
                           scale=1)
    metrics = gr.Markdown(elem_id="ft-adapter-metrics")
    with gr.Row():
        kind = gr.Dropdown(EXPORTS, value=EXPORTS[0][1], label="Export as", scale=3,
                           elem_id="ft-export-kind")
        export = gr.Button("Export", elem_id="ft-export", scale=1)
    exported = gr.Markdown(elem_id="ft-export-status")
    with gr.Accordion("Combine LoRA adapters", open=False):
        sources = gr.Dropdown(label="LoRA adapters of one base (two or more)", choices=[],
                              multiselect=True, elem_id="ft-combine-adapters")
        with gr.Row():
            weights = gr.Textbox(label="Weights, in the same order (empty: equal shares)",
                                 placeholder="0.7 0.3", elem_id="ft-combine-weights")
            new_name = gr.Textbox(label="Name of the new adapter", elem_id="ft-combine-name")
            how = gr.Dropdown(COMBINATIONS, value="cat", label="Combination",
                              elem_id="ft-combine-type")
        combine = gr.Button("Combine", elem_id="ft-combine")
        combined = gr.Markdown(elem_id="ft-combine-status")
    seen = gr.State(None)
    outputs = [table, pick, metrics, model_choice, sources, seen]

    def sync(selected: str | None, current: str | None, last):
        return refresh(assistant, selected, current, last)

    def do_delete(adapter_id: str | None, current: str | None):
        message = delete_adapter(assistant, adapter_id)
        return message, *refresh(assistant, None, current, None)

    def do_export(adapter_id: str | None, choice: str, progress=gr.Progress()):
        progress(0.0, desc="Exporting (merging and converting take minutes)…")
        return export_adapter(assistant, adapter_id, choice)

    def do_combine(ids, weights_text: str, name: str, combination: str, selected,
                   current: str | None, last, progress=gr.Progress()):
        progress(0.0, desc="Combining and converting to GGUF…")
        message = combine_adapters(assistant, ids, weights_text, name, combination)
        return message, *refresh(assistant, selected, current, last)  # kept when refused

    timer.tick(sync, [pick, model_choice, seen], outputs, api_name=False,
               show_progress="hidden")
    pick.input(lambda a: adapter_metrics(assistant, a), [pick], [metrics], api_name=False)
    delete.click(do_delete, [pick, model_choice], [exported, *outputs], api_name=False)
    export.click(do_export, [pick, kind], [exported], api_name=False)
    combine.click(do_combine, [sources, weights, new_name, how, pick, model_choice, seen],
                  [combined, *outputs], api_name=False)
    demo.load(lambda a, m: refresh(assistant, a, m, None), [pick, model_choice], outputs,
              api_name=False)
    return AdaptersPanel(pick, table)


def refresh(assistant: Assistant, selected: str | None, current_model: str | None,
            last) -> tuple:
    """Updates of (table, adapter picker, metrics, chat model menu, the combine panel's
    LoRA adapters, signature); all skipped when the adapters are what the page showed
    last."""
    choices = list_models(assistant)
    signature = [(c.model_id, c.label, json.dumps(c.metrics, sort_keys=True, default=str))
                 for c in choices]
    if last is not None and signature == last:
        return (gr.skip(),) * 6
    adapters = [c for c in choices if c.method != "base"]
    ids = [c.model_id for c in adapters]
    chosen = selected if selected in ids else (ids[-1] if ids else None)
    return (adapter_rows(assistant), gr.Dropdown(choices=[(c.label, c.model_id) for c in adapters],
                                                 value=chosen),
            adapter_metrics(assistant, chosen), model_update(assistant, current_model, choices),
            gr.Dropdown(choices=[(c.label, c.model_id) for c in adapters
                                 if c.method in LORA_METHODS], value=[], multiselect=True),
            signature)


def model_update(assistant: Assistant, current: str | None, choices=None) -> gr.Dropdown:
    """The chat model menu, keeping ``current`` when it still exists."""
    choices = list_models(assistant) if choices is None else choices
    ids = [c.model_id for c in choices]
    value = current if current in ids else (assistant.serving.chat_model() if ids else None)
    return gr.Dropdown(choices=model_menu(choices), value=value)


# --- callbacks (plain functions of the facade) ------------------------------------------
def list_models(assistant: Assistant) -> list:
    try:
        return assistant.serving.models()
    except EXPECTED as exc:
        log.warning("Could not list models: %s", exc)
        return []


def model_choices(assistant: Assistant) -> list[tuple[str, str]]:
    """(label, id) of the base model and every adapter: the chat model menu."""
    return model_menu(list_models(assistant))


def adapter_rows(assistant: Assistant) -> list[list[str]]:
    rows = []
    for choice in list_models(assistant):
        if choice.method == "base":
            continue
        try:
            rows.append(adapter_row(assistant.serving.adapter(choice.model_id)))
        except EXPECTED as exc:  # deleted meanwhile
            log.info("Adapter %s: %s", choice.model_id, exc)
    return rows


def adapter_metrics(assistant: Assistant, adapter_id: str | None) -> str:
    if not adapter_id:
        return "No adapters yet: a finished training job registers one here."
    try:
        return metrics_markdown(assistant.serving.adapter(adapter_id))
    except EXPECTED as exc:
        return f"⚠️ {exc}"


def delete_adapter(assistant: Assistant, adapter_id: str | None) -> str:
    if not adapter_id:
        return "Pick an adapter first."
    try:
        assistant.serving.delete_adapter(adapter_id)
    except EXPECTED as exc:
        return f"⚠️ {exc}"
    return f"Deleted adapter {adapter_id}."


def export_adapter(assistant: Assistant, adapter_id: str | None, choice: str) -> str:
    """``choice`` is "gguf:<quant>" or "merged-safetensors:" -> a message with the path."""
    if not adapter_id:
        return "Pick an adapter first."
    kind, _, quant = (choice or "gguf:Q4_K_M").partition(":")
    try:
        path = assistant.serving.export_adapter(adapter_id, kind, quant or "Q4_K_M")
    except EXPECTED as exc:
        return f"⚠️ Not exported: {exc}"
    except Exception as exc:  # the edge: conversion tools can fail in many ways
        log.exception("Export of %s failed", adapter_id)
        return f"⚠️ Export failed: {exc}"
    return f"Exported to `{path}`"


def parse_weights(text: str | None) -> list[float] | None:
    """"0.7 0.3" or "0.7, 0.3" -> [0.7, 0.3]; empty -> None (equal shares)."""
    parts = (text or "").replace(",", " ").split()
    return [float(p) for p in parts] if parts else None


def combine_adapters(assistant: Assistant, ids: list[str] | None, weights_text: str,
                     name: str, combination: str = "cat") -> str:
    """The combine panel's button -> a message naming the new adapter, or why not."""
    try:
        weights = parse_weights(weights_text)
    except ValueError:
        return f"⚠️ Not combined: weights must be numbers, e.g. `0.7 0.3`; got {weights_text!r}."
    try:
        record = assistant.serving.combine_adapters(list(ids or []), weights, name,
                                                    combination or "cat")
    except EXPECTED as exc:
        return f"⚠️ Not combined: {exc}"
    spec = record.spec
    parts = ", ".join(f"`{i}` × {w:g}" for i, w in zip(spec["combined_from"], spec["weights"]))
    served = ("llama.cpp serves it" if record.gguf else
              f"⚠️ its GGUF LoRA failed ({record.gguf_error}); chat tries again on first use")
    return (f"Combined {parts} ({spec['combination_type']}, rank {spec['r']}) into "
            f"**{record.name}** (`{record.adapter_id}`); {served}. Pick it in the Chat "
            "tab's model menu.")
