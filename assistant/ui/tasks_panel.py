"""Document tasks (Knowledge tab): summarize documents, write exam questions, collect
advice; with a progress bar, the result cited by file and page, exams as JSON and CSV."""
from __future__ import annotations

import logging
import uuid

import gradio as gr

from common.errors import DocentError
from assistant import tasks
from assistant.core import Assistant
from assistant.ui.downloads import Downloads
from assistant.ui.format import document_choices
from assistant.ui.task_format import (
    advice_markdown, exam_markdown, progress_text, summary_markdown,
)

log = logging.getLogger(__name__)
SUMMARIZE, EXAM, ADVICE = "Summarize", "Exam questions", "Advice"


def build_tasks_panel(demo: gr.Blocks, assistant: Assistant, kb_choice: gr.Dropdown,
                      downloads: Downloads) -> tuple:
    """Build the panel; returns ``(fn, inputs, outputs)`` that refresh its document list
    (for ``.then`` after ingesting or deleting)."""
    gr.Markdown("### Document tasks")
    with gr.Row():
        docs = gr.Dropdown(label="Documents", choices=[], multiselect=True, scale=3,
                           elem_id="task-docs")
        kind = gr.Radio([SUMMARIZE, EXAM, ADVICE], value=SUMMARIZE, label="Task", scale=2,
                        elem_id="task-kind")
    with gr.Row():
        count = gr.Number(value=5, minimum=1, maximum=100, precision=0, scale=1,
                          label="How many questions", visible=False, elem_id="task-count")
        focus = gr.Textbox(label="Focus (optional)", scale=3, visible=False,
                           placeholder="e.g. an adult with a chest infection",
                           elem_id="task-focus")
        run = gr.Button("Run", variant="primary", scale=1, elem_id="run-task")
    status = gr.Markdown(elem_id="task-status")
    result = gr.Markdown(elem_id="task-result")
    files = gr.File(label="Exam downloads (JSON, CSV)", file_count="multiple", visible=False,
                    interactive=False, elem_id="task-files")

    def refresh(kb: str):
        try:
            records = assistant.documents.list(kb or None)
        except DocentError as exc:
            log.warning("Could not list documents: %s", exc)
            records = []
        return gr.Dropdown(choices=document_choices(records), value=[])

    def start(doc_ids: list[str] | None, task: str, n: float | None, why: str, kb: str,
              progress=gr.Progress()):
        hidden = gr.File(value=None, visible=False)
        if not doc_ids:
            return "Choose one or more documents first.", "", hidden
        progress(0.0, desc=f"{task}…")
        try:
            outcome = tasks.run_task(_task(assistant, doc_ids, task, n, why, kb),
                                     lambda ev: progress(ev.fraction, desc=progress_text(ev)))
        except (DocentError, ValueError) as exc:
            return f"⚠️ {exc}", "", hidden
        except Exception as exc:  # the edge: say what failed, keep the app up
            log.exception("Document task %s failed", task)
            return f"⚠️ The task failed: {exc}", "", hidden
        if task == EXAM:
            name = f"exam-{uuid.uuid4().hex[:8]}"  # one per run: sessions never share it
            paths = [str(downloads.write(f"{name}.json", tasks.exam_to_json(outcome))),
                     str(downloads.write(f"{name}.csv", tasks.exam_to_csv(outcome)))]
            shown = gr.File(value=paths if outcome else None, visible=bool(outcome))
            return f"Done: {len(outcome)} questions.", exam_markdown(outcome), shown
        text = summary_markdown(outcome) if task == SUMMARIZE else advice_markdown(outcome)
        return "Done.", text, hidden

    kind.change(lambda task: (gr.Number(visible=task == EXAM), gr.Textbox(visible=task == ADVICE)),
                [kind], [count, focus], api_name=False)
    run.click(start, [docs, kind, count, focus, kb_choice], [status, result, files],
              api_name=False)
    kb_choice.change(refresh, [kb_choice], [docs], api_name=False)
    demo.load(refresh, [kb_choice], [docs], api_name=False)
    return refresh, [kb_choice], [docs]


def _task(assistant: Assistant, doc_ids: list[str], task: str, n: float | None, focus: str,
          kb: str):
    """The facade's task generator for the chosen task (its input checked now)."""
    kb = kb or None
    if task == EXAM:
        return assistant.tasks.exam_questions(doc_ids, kb, int(n or 5))
    if task == ADVICE:
        return assistant.tasks.advice(doc_ids, kb, focus or "")
    return assistant.tasks.summarize(doc_ids, kb)
