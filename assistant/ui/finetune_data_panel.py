"""Fine-tune tab, Data: import a JSONL/CSV/parquet file (bad rows named) or generate
question-answer pairs from a knowledge base, then preview, edit and save before training.

The callbacks below the builder are plain functions of the facade (tests call them)."""
from __future__ import annotations

import json
import logging
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import gradio as gr

from common.errors import DocentError
from common.progress import drain
from assistant.core import Assistant
from assistant.ui.finetune_format import dataset_label, dataset_table, table_rows

log = logging.getLogger(__name__)
PREVIEW_ROWS = 20
ALL_ROWS = 1_000_000
FILE_TYPES = [".jsonl", ".json", ".ndjson", ".csv", ".tsv", ".parquet"]
EXPECTED = (DocentError, ValueError, OSError)


@dataclass(frozen=True)
class DataPanel:
    dataset: gr.Dropdown  # the dataset training uses (shown above the sub-tabs)
    status: gr.Markdown
    preview: gr.Dataframe


def build_dataset_picker() -> gr.Dropdown:
    """The dataset dropdown (placed above the sub-tabs, so Train sees it too)."""
    return gr.Dropdown(label="Dataset", choices=[], elem_id="ft-dataset", interactive=True,
                       info="Imported or generated datasets; training uses the one chosen here.")


def build_data_panel(demo: gr.Blocks, assistant: Assistant, kb_choice: gr.Dropdown,
                     dataset: gr.Dropdown) -> DataPanel:
    with gr.Row():
        with gr.Column():
            gr.Markdown("**Import a file**: prompt/response, instruction/input/output "
                        "(Alpaca), chat `messages`, `text` (continued pretraining) or "
                        "prompt/chosen/rejected (DPO).")
            upload = gr.File(label="JSONL, CSV or parquet", file_types=FILE_TYPES,
                             elem_id="ft-upload")
            name = gr.Textbox(label="Name (optional)", max_lines=1, elem_id="ft-dataset-name")
            about = gr.Checkbox(value=False, label="The questions are about the knowledge base "
                                "chosen at the top (jobs then also evaluate with RAG over it)",
                                elem_id="ft-import-about-kb")
            import_btn = gr.Button("Import dataset", variant="primary", elem_id="ft-import")
        with gr.Column():
            gr.Markdown("**Or generate from the knowledge base** chosen at the top: the "
                        "local model writes question-answer pairs grounded in its passages "
                        "(repetitive, duplicate and unsupported pairs are dropped).")
            count = gr.Number(value=200, minimum=1, maximum=100_000, precision=0,
                              label="Pairs", elem_id="ft-gen-n")
            refusals = gr.Checkbox(value=True, label="Add refusal examples for "
                                                     "off-topic questions")
            raft = gr.Slider(0, 1, value=0.0, step=0.05, label="RAFT share (question asked "
                             "as the chat asks, its passage among distractors)",
                             elem_id="ft-gen-raft")
            per_passage = gr.Slider(1, 5, value=2, step=1, label="Questions per passage (with "
                                    "two or more, held-out questions ask about trained passages)",
                                    elem_id="ft-gen-per-passage")
            answers = gr.Radio([("Written by the model (one to three sentences)", "written"),
                                ("Quoted from the passage (its own sentences, cited)",
                                 "quoted")], value="written", label="Answers",
                               elem_id="ft-gen-answers")
            gr.Markdown("For better answers *with* the documents, choose RAFT share 1 and "
                        "quoted answers: on real questions this beat the base model "
                        "(README, \"Real questions with RAG\"), where the fast default "
                        "(plain pairs, written answers) did not; its training steps are about "
                        "6x slower, so ask for fewer pairs (64 requested: one epoch of LoRA "
                        "in 11 minutes on two cores).")
            gen_btn = gr.Button("Generate from knowledge base", elem_id="ft-generate")
    status = gr.Markdown(elem_id="ft-data-status")
    gr.Markdown(f"**Preview and edit** (first {PREVIEW_ROWS} training rows; clear every cell "
                "of a row to delete it; saving stores an edited copy, the original stays).")
    preview = gr.Dataframe(interactive=True, wrap=True, elem_id="ft-preview")
    save_btn = gr.Button("Save edits as a new dataset", elem_id="ft-save-edits")

    def do_import(path: str | None, label: str, about_kb: bool, kb: str | None):
        message, ds_id = import_file(assistant, path, label, kb if about_kb else "")
        return message, _picker(assistant, ds_id)

    def do_generate(kb: str, n: float | None, refuse: bool, share: float, per: float | None,
                    style: str | None, progress=gr.Progress()):
        progress(0.0, desc="Generating…")
        message, ds_id = generate(assistant, kb, int(n or 200), refuse, share,
                                  lambda ev: progress(ev.fraction, desc=_event_text(ev)),
                                  per_passage=int(per or 2), answers=style or "written")
        return message, _picker(assistant, ds_id)

    def do_save(ds_id: str | None, table):
        headers, cells = _table_cells(table)
        message, new_id = save_edits(assistant, ds_id, headers, cells)
        return message, _picker(assistant, new_id or ds_id)

    def show(ds_id: str | None):
        headers, cells = preview_table(assistant, ds_id)
        return gr.Dataframe(value=cells, headers=headers)

    import_btn.click(do_import, [upload, name, about, kb_choice], [status, dataset],
                     api_name=False)
    gen_btn.click(do_generate, [kb_choice, count, refusals, raft, per_passage, answers],
                  [status, dataset], api_name=False)
    save_btn.click(do_save, [dataset, preview], [status, dataset], api_name=False)
    dataset.change(show, [dataset], [preview], api_name=False)
    demo.load(lambda: _picker(assistant, None), None, [dataset], api_name=False)
    return DataPanel(dataset, status, preview)


def _picker(assistant: Assistant, selected: str | None) -> gr.Dropdown:
    choices = dataset_choices(assistant)
    ids = [i for _, i in choices]
    return gr.Dropdown(choices=choices, value=selected if selected in ids else
                       (ids[0] if ids else None))


def _table_cells(table) -> tuple[list[str], list[list]]:
    """Headers and rows of a Dataframe value (pandas, or a dict from the client)."""
    if hasattr(table, "columns"):
        return [str(c) for c in table.columns], table.values.tolist()
    if isinstance(table, dict):
        return list(table.get("headers") or []), list(table.get("data") or [])
    return [], []


def _event_text(ev) -> str:
    if ev.stage == "pairs":
        return f"{ev.index}/{ev.total} passages · {ev.kept} pairs kept"
    return ev.stage


# --- callbacks (plain functions of the facade) ------------------------------------------
def dataset_choices(assistant: Assistant) -> list[tuple[str, str]]:
    try:
        return [(dataset_label(r), r.id) for r in assistant.datasets.list()]
    except EXPECTED as exc:
        log.warning("Could not list datasets: %s", exc)
        return []


def import_file(assistant: Assistant, path: str | None, name: str = "", kb: str | None = ""
                ) -> tuple[str, str | None]:
    """(message, dataset id or None). A bad file's message lists each wrong row. ``kb``:
    the knowledge base the questions are about."""
    if not path:
        return "Choose a JSONL, CSV or parquet file first.", None
    try:
        record = assistant.datasets.import_file(path, (name or "").strip() or Path(path).stem,
                                          kb or "")
    except EXPECTED as exc:
        return f"⚠️ Not imported:\n\n```\n{exc}\n```", None
    return (f"Imported **{record.name}**: {record.train} training and {record.heldout} "
            f"held-out rows ({record.shape})."), record.id


def generate(assistant: Assistant, kb: str | None, n: int, refusals: bool, raft: float,
             on_event: Callable | None = None, per_passage: int = 2,
             answers: str = "written") -> tuple[str, str | None]:
    """Drive ``generate_dataset`` to the end -> (message, dataset id or None)."""
    try:
        events = assistant.datasets.generate(kb or None, n, refusals=bool(refusals),
                                            raft_fraction=float(raft or 0.0),
                                            questions_per_chunk=int(per_passage),
                                            answer_style=answers)
        seen: list = []

        def note(event) -> None:
            seen[:] = [event]
            if on_event:
                on_event(event)

        record = drain(events, note)
        last = seen[0] if seen else None
    except EXPECTED as exc:
        return f"⚠️ Not generated: {exc}", None
    except Exception as exc:  # the edge: say what failed, keep the app up
        log.exception("Dataset generation failed")
        return f"⚠️ Generation failed: {exc}", None
    dropped = ", ".join(f"{v} {k}" for k, v in (getattr(last, "dropped", {}) or {}).items())
    return (f"Generated **{record.name}**: {record.train} training and {record.heldout} "
            f"held-out pairs" + (f" (dropped: {dropped})" if dropped else "") + "."), record.id


def preview_table(assistant: Assistant, ds_id: str | None, n: int = PREVIEW_ROWS
                  ) -> tuple[list[str], list[list[str]]]:
    if not ds_id:
        return ["(no dataset)"], []
    try:
        shape = _record(assistant, ds_id).shape
        return dataset_table(shape, assistant.datasets.preview(ds_id, n))
    except EXPECTED as exc:
        return ["error"], [[str(exc)]]


def _record(assistant: Assistant, ds_id: str):
    for record in assistant.datasets.list():
        if record.id == ds_id:
            return record
    raise ValueError(f"No dataset {ds_id!r}.")


def save_edits(assistant: Assistant, ds_id: str | None, headers: list[str],
               cells: list[list]) -> tuple[str, str | None]:
    """Store the edited preview rows, followed by the dataset's other training rows and
    its held-out rows, as a new dataset -> (message, new id or None)."""
    if not ds_id:
        return "Choose a dataset first.", None
    try:
        record = _record(assistant, ds_id)
        edited = table_rows(headers, cells)
        train = assistant.datasets.preview(ds_id, ALL_ROWS)
        if [_parsed(r) for r in edited] == train[:PREVIEW_ROWS]:
            return "No changes to save.", ds_id
        rest = train[PREVIEW_ROWS:]
        heldout = (assistant.datasets.preview(str(record.path / "heldout.jsonl"), ALL_ROWS)
                   if record.heldout else [])
        new = assistant.datasets.edit(ds_id, edited + rest + heldout)
    except EXPECTED as exc:
        return f"⚠️ Not saved:\n\n```\n{exc}\n```", None
    return f"Saved **{new.id}**: {new.train} training and {new.heldout} held-out rows.", new.id


def _parsed(row: dict) -> dict:
    """``row`` with a messages JSON string (the table's JSON column) parsed, to compare."""
    if isinstance(row.get("messages"), str):
        try:
            return {**row, "messages": json.loads(row["messages"])}
        except ValueError:
            return row
    return row
