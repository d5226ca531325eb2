"""The Knowledge tab: upload files or sync a folder with progress, per-file results,
the document list, delete."""
from __future__ import annotations

import logging
from collections.abc import Generator

import gradio as gr

from assistant.core import Assistant
from assistant.ui.downloads import Downloads
from assistant.ui.format import (
    DOC_HEADERS, REPORT_HEADERS, document_choices, document_rows, report_rows,
)
from assistant.ui.kb_panel import build_kb_panel
from assistant.ui.profile_panel import build_profile_panel
from assistant.ui.reranker_panel import build_reranker_panel
from assistant.ui.tasks_panel import build_tasks_panel
from ingest.loaders import supported_extensions
from ingest.pipeline import drain
from ingest.types import IngestEvent, IngestReport

log = logging.getLogger(__name__)
WATCH_SECONDS = 15


def _run(events: Generator[IngestEvent, None, IngestReport], progress) -> IngestReport:
    """Drive an ingestion generator, showing each event on the progress bar."""
    progress(0.0, desc="Starting…")
    return drain(events, lambda ev: progress(
        ev.fraction, desc=f"{ev.index + 1}/{ev.total} {ev.source}: {ev.stage}"))


def _summary(report: IngestReport) -> str:
    return f"**{report.summary()}**." if report.results else "Nothing to do."


def build_knowledge_tab(demo: gr.Blocks, assistant: Assistant, kb_choice: gr.Dropdown,
                        downloads: Downloads) -> None:
    build_kb_panel(assistant, kb_choice)
    build_profile_panel(demo, assistant, kb_choice)
    refresh_status = build_reranker_panel(demo, assistant, kb_choice)
    files = gr.File(
        label=f"Drop files here ({', '.join(supported_extensions())})",
        file_count="multiple", file_types=supported_extensions(), elem_id="upload",
    )
    with gr.Row():
        password = gr.Textbox(label="Password for encrypted PDFs (optional)", type="password", scale=2)
        ingest_btn = gr.Button("Add to knowledge base", variant="primary", elem_id="ingest", scale=1)
    with gr.Accordion("Sync a folder on this computer", open=False):
        with gr.Row():
            folder = gr.Textbox(label="Folder", placeholder="/home/clinic/guidelines", scale=3)
            sync_btn = gr.Button("Sync now", scale=1)
        watch = gr.Checkbox(label=f"Keep watching (sync every {WATCH_SECONDS} s while this page is open)")
        timer = gr.Timer(WATCH_SECONDS, active=False)
    with gr.Row(equal_height=True):
        gr.Markdown("Documents read by an earlier Docent (PDFs from before section headings "
                    "were found) are read again from their kept originals.")
        reread_btn = gr.Button("Read old documents again", size="sm", scale=0, min_width=240,
                               elem_id="reread")
    summary = gr.Markdown(elem_id="ingest-summary")
    results = gr.Dataframe(headers=REPORT_HEADERS, label="Results", interactive=False,
                           elem_id="ingest-results")
    gr.Markdown("### Documents")
    docs = gr.Dataframe(headers=DOC_HEADERS, interactive=False, elem_id="documents")
    with gr.Row():
        doc_pick = gr.Dropdown(label="Document", choices=[], scale=4)
        delete_btn = gr.Button("Delete document", variant="stop", scale=1)
    refresh_tasks = build_tasks_panel(demo, assistant, kb_choice, downloads)

    def refresh(kb: str):
        records = assistant.documents.list(kb or None)
        return document_rows(records), gr.Dropdown(choices=document_choices(records), value=None)

    def ingest(paths: list | None, pw: str, kb: str, progress=gr.Progress()):
        if not paths:
            return "Choose or drop files first.", [], *refresh(kb)
        report = _run(assistant.documents.ingest_uploads(paths, kb or None, pw or None), progress)
        return _summary(report), report_rows(report), *refresh(kb)

    def sync(path: str, kb: str, progress=gr.Progress()):
        if not (path or "").strip():
            return "Enter a folder path first.", [], *refresh(kb)
        try:
            report = _run(assistant.documents.sync_folder(path.strip(), kb or None,
                                                          assistant.web_folders), progress)
        except Exception as exc:
            return f"⚠️ {exc}", [], *refresh(kb)
        return _summary(report), report_rows(report), *refresh(kb)

    def reread(kb: str, progress=gr.Progress()):
        report = _run(assistant.documents.reread(kb or None), progress)
        return _summary(report), report_rows(report), *refresh(kb)

    def delete(doc_id: str | None, kb: str):
        if not doc_id:
            return "Pick a document to delete.", *refresh(kb)
        assistant.documents.delete(doc_id, kb or None)
        return "Deleted.", *refresh(kb)

    outputs = [summary, results, docs, doc_pick]
    ingest_btn.click(ingest, [files, password, kb_choice], outputs, api_name="ingest").then(
        *refresh_status, api_name=False).then(*refresh_tasks, api_name=False)
    sync_btn.click(sync, [folder, kb_choice], outputs, api_name="sync_folder").then(
        *refresh_status, api_name=False).then(*refresh_tasks, api_name=False)
    reread_btn.click(reread, [kb_choice], outputs, api_name="reread_documents").then(
        *refresh_tasks, api_name=False)
    watch.change(lambda on: gr.Timer(active=on), [watch], [timer], api_name=False)
    timer.tick(sync, [folder, kb_choice], outputs, api_name=False, show_progress="hidden").then(
        *refresh_tasks, api_name=False)
    delete_btn.click(delete, [doc_pick, kb_choice], [summary, docs, doc_pick],
                     api_name="delete_document").then(*refresh_status, api_name=False).then(
        *refresh_tasks, api_name=False)
    kb_choice.change(refresh, [kb_choice], [docs, doc_pick], api_name=False)
    demo.load(refresh, [kb_choice], [docs, doc_pick], api_name=False)
