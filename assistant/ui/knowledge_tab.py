"""The Knowledge tab: upload files with progress, per-file results, documents, delete."""
from __future__ import annotations

import logging
from pathlib import Path

import gradio as gr

from assistant.core import Assistant
from assistant.ui.format import (
    DOC_HEADERS, REPORT_HEADERS, document_choices, document_rows, report_rows,
)
from ingest.loaders import supported_extensions
from ingest.types import IngestReport

log = logging.getLogger(__name__)


def build_knowledge_tab(demo: gr.Blocks, assistant: Assistant, kb_choice: gr.Dropdown) -> None:
    with gr.Row():
        new_kb = gr.Textbox(label="New knowledge base", placeholder="e.g. clinic-guidelines", scale=3)
        create = gr.Button("Create", scale=1)
    kb_status = gr.Markdown()
    files = gr.File(
        label=f"Drop files here ({', '.join(supported_extensions())})",
        file_count="multiple", file_types=supported_extensions(), elem_id="upload",
    )
    ingest_btn = gr.Button("Add to knowledge base", variant="primary", elem_id="ingest")
    summary = gr.Markdown(elem_id="ingest-summary")
    results = gr.Dataframe(headers=REPORT_HEADERS, label="Results", interactive=False,
                           elem_id="ingest-results")
    gr.Markdown("### Documents")
    docs = gr.Dataframe(headers=DOC_HEADERS, interactive=False, elem_id="documents")
    with gr.Row():
        doc_pick = gr.Dropdown(label="Document", choices=[], scale=4)
        delete_btn = gr.Button("Delete document", variant="stop", scale=1)

    def refresh(kb: str):
        records = assistant.documents(kb or None)
        return document_rows(records), gr.Dropdown(choices=document_choices(records), value=None)

    def ingest(paths: list | None, kb: str, progress=gr.Progress()):
        if not paths:
            return "Choose or drop files first.", [], *refresh(kb)
        items = [(Path(p), Path(p).name) for p in paths]
        events = assistant.ingest(items, kb or None)
        progress(0.0, desc="Starting…")
        while True:
            try:
                ev = next(events)
            except StopIteration as stop:
                report: IngestReport = stop.value
                break
            progress(ev.fraction, desc=f"{ev.source}: {ev.stage}")
        text = (f"**{len(report.succeeded)} added**, {len(report.unchanged)} unchanged, "
                f"**{len(report.failed)} failed**.")
        return text, report_rows(report), *refresh(kb)

    def delete(doc_id: str | None, kb: str):
        if not doc_id:
            return "Pick a document to delete.", *refresh(kb)
        assistant.delete_document(doc_id, kb or None)
        return "Deleted.", *refresh(kb)

    def create_kb(name: str):
        try:
            assistant.create_knowledge_base((name or "").strip())
        except Exception as exc:
            return f"⚠️ {exc}", gr.Dropdown()
        return f"Created **{name}**.", gr.Dropdown(choices=assistant.knowledge_bases(), value=name.strip())

    ingest_btn.click(ingest, [files, kb_choice], [summary, results, docs, doc_pick], api_name="ingest")
    delete_btn.click(delete, [doc_pick, kb_choice], [summary, docs, doc_pick], api_name="delete_document")
    create.click(create_kb, [new_kb], [kb_status, kb_choice], api_name=False)
    kb_choice.change(refresh, [kb_choice], [docs, doc_pick], api_name=False)
    demo.load(refresh, [kb_choice], [docs, doc_pick], api_name=False)
