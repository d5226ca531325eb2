"""Fine-tune tab, Real questions: a question set with reference answers asked of the
base model and of adapters with RAG, side by side (a table and a chart), every reply
downloadable. The evaluation is a job (it asks this app's own API); the panel reads it
on the tab's timer. The callbacks below the builder are plain functions (tests call
them)."""
from __future__ import annotations

import logging

import gradio as gr
import pandas as pd

from assistant.core import Assistant
from assistant.evaluation import TABLE, comparison
from common.errors import DocentError

log = logging.getLogger(__name__)
CHARTED = ("cited_relevant", "f1", "rouge_l", "refused")  # 0-1 metrics, one chart


def build_evaluation_panel(demo: gr.Blocks, assistant: Assistant, kb_choice: gr.Dropdown,
                           timer: gr.Timer) -> None:
    gr.Markdown("Ask real questions (JSONL: `question`, `answers` or `answer`, optionally "
                "`relevant` documents) of the base model and your adapters, with the "
                "knowledge base chosen above, and compare: citations of judged-relevant "
                "documents, token-F1 and ROUGE-L against the reference answers, refusals.")
    with gr.Row():
        upload = gr.File(label="Question set (.jsonl)", file_types=[".jsonl"],
                         elem_id="ev-questions", scale=2)
        with gr.Column(scale=2):
            models = gr.Dropdown(label="Models", multiselect=True, elem_id="ev-models",
                                 choices=assistant.serving.model_ids())
            limit = gr.Number(label="Questions (0: all)", value=0, precision=0, minimum=0)
            start = gr.Button("Compare", variant="primary", elem_id="ev-start")
    status = gr.Markdown(elem_id="ev-status")
    job = gr.Dropdown(label="Evaluation", choices=[], elem_id="ev-job")
    table = gr.Dataframe(interactive=False, elem_id="ev-table", wrap=True)
    chart = gr.BarPlot(pd.DataFrame({"metric": [], "value": [], "model": []}), x="metric",
                       y="value", color="model", height=280, elem_id="ev-chart",
                       title="Base model against adapters (higher is better, but refusals)")
    replies = gr.File(label="Every reply (JSONL)", interactive=False, elem_id="ev-replies")

    demo.load(lambda: models_update(assistant), None, [models], api_name=False)
    start.click(lambda f, m, n, kb: submit(assistant, f, m, n, kb),
                [upload, models, limit, kb_choice], [status, job], api_name=False)
    outputs = [job, status, table, chart, replies]
    job.input(lambda j: show(assistant, j), [job], outputs, api_name=False)
    timer.tick(lambda j: show(assistant, j), [job], outputs, api_name=False,
               show_progress="hidden")


def models_update(assistant: Assistant):
    """The models offered: the base and every adapter; the base and the newest chosen."""
    ids = assistant.serving.model_ids()
    return gr.Dropdown(choices=ids, value=ids[:1] + ids[-1:] if len(ids) > 1 else ids)


def submit(assistant: Assistant, upload, models: list[str] | None, limit, kb: str | None):
    if not upload:
        return "⚠️ Upload a question set first.", gr.skip()
    try:
        record = assistant.evaluations.submit(_path(upload), models or [], kb,
                                              int(limit or 0))
    except (DocentError, ValueError) as exc:
        return f"⚠️ {exc}", gr.skip()
    return (f"Evaluation {record.id} queued: {record.params['questions']} questions × "
            f"{len(record.params['models'])} models.", record.id)


def show(assistant: Assistant, job_id: str | None):
    """The job menu and, for the chosen (or newest) evaluation, its state, table, chart
    and replies file."""
    jobs = assistant.evaluations.jobs()
    choices = [(f"{j.id} · {j.target} · {j.status}", j.id) for j in jobs]
    job_id = job_id if any(j.id == job_id for j in jobs) else (jobs[0].id if jobs else None)
    if job_id is None:
        return gr.Dropdown(choices=[], value=None), "No evaluation yet.", None, None, None
    try:
        results = assistant.evaluations.results(job_id)
    except DocentError as exc:
        return gr.Dropdown(choices=choices, value=job_id), f"⚠️ {exc}", None, None, None
    headers, rows = comparison(results.summary)
    return (gr.Dropdown(choices=choices, value=job_id), _state(results.job),
            pd.DataFrame(rows, columns=headers) if results.summary else None,
            chart_frame(results.summary),
            str(results.replies) if results.rows else None)


def chart_frame(summary: dict[str, dict]) -> pd.DataFrame:
    labels = {key: label for label, key, _ in TABLE}
    return pd.DataFrame([{"metric": labels[key].split(" against")[0], "model": model,
                          "value": values[key]}
                         for model, values in summary.items() for key in CHARTED
                         if values.get(key) is not None],
                        columns=["metric", "value", "model"])


def _state(job) -> str:
    progress = job.progress or {}
    done, total = progress.get("done"), progress.get("total")
    where = f" ({done}/{total} answers)" if total else ""
    error = f": {job.error}" if job.error else ""
    return f"**{job.status}**{where}{error}"


def _path(upload) -> str:
    return upload if isinstance(upload, str) else getattr(upload, "name", str(upload))
