"""Fine-tune tab, Jobs: the job table (step/total, loss, elapsed, ETA), a job's loss curve
and log, Cancel and Resume.

Everything shown is read from the job records on disk through the facade on every
timer tick, so it survives a page reload and an app restart; the page keeps only the
signature of what it last showed (to skip redrawing when nothing changed). The
callbacks below the builder are plain functions of the facade (tests call them)."""
from __future__ import annotations

import logging
import time
from dataclasses import dataclass

import gradio as gr
import pandas as pd

from assistant.core import Assistant
from assistant.ui.finetune_data_panel import EXPECTED
from assistant.ui.finetune_format import (
    JOB_HEADERS,
    job_details,
    job_label,
    job_row,
    loss_points,
)

log = logging.getLogger(__name__)
LOG_LINES = 60
ACTIVE = ("queued", "running")


@dataclass(frozen=True)
class JobsPanel:
    selector: gr.Dropdown
    show: object  # fn(job_id) -> outputs: select a job and redraw everything
    outputs: list


def build_jobs_panel(demo: gr.Blocks, assistant: Assistant, timer: gr.Timer) -> JobsPanel:
    table = gr.Dataframe(headers=JOB_HEADERS, interactive=False, elem_id="ft-jobs",
                         label="Training jobs (updated every 2 s)")
    with gr.Row():
        selector = gr.Dropdown(label="Job", choices=[], elem_id="ft-job", scale=4)
        cancel = gr.Button("Cancel", variant="stop", elem_id="ft-cancel", scale=1)
        resume = gr.Button("Resume", elem_id="ft-resume", scale=1)
    action = gr.Markdown(elem_id="ft-job-action")
    details = gr.Markdown(elem_id="ft-job-details")
    curve = gr.LinePlot(pd.DataFrame({"step": [], "loss": []}), x="step", y="loss",
                        title="Training loss", height=260, elem_id="ft-loss")
    log_box = gr.Textbox(label=f"Log (last {LOG_LINES} lines)", lines=12, max_lines=12,
                         interactive=False, autoscroll=True, elem_id="ft-log")
    seen = gr.State(None)
    outputs = [table, selector, details, curve, log_box, seen]

    def tick(selected: str | None, last):
        return poll(assistant, selected, last)

    def show(job_id: str | None):
        return poll(assistant, job_id, None)

    def view(job_id: str | None):
        return job_view(assistant, job_id)

    def act(fn, job_id: str | None):
        message = fn(assistant, job_id)
        return message, *poll(assistant, job_id, None)

    timer.tick(tick, [selector, seen], outputs, api_name=False, show_progress="hidden")
    selector.input(view, [selector], [details, curve, log_box], api_name=False)
    cancel.click(lambda j: act(cancel_job, j), [selector], [action, *outputs], api_name=False)
    resume.click(lambda j: act(resume_job, j), [selector], [action, *outputs], api_name=False)
    demo.load(show, [selector], outputs, api_name=False)
    return JobsPanel(selector, show, outputs)


def poll(assistant: Assistant, selected: str | None, last) -> tuple:
    """Updates of (table, selector, details, curve, log, signature); all skipped when no
    job is active and nothing changed since ``last``."""
    records = list_jobs(assistant)
    signature = [(r.id, r.status, r.progress.get("step"), r.error) for r in records]
    active = any(r.status in ACTIVE for r in records)
    if last is not None and signature == last and not active:
        return (gr.skip(),) * 6
    ids = [r.id for r in records]
    chosen = selected if selected in ids else (ids[0] if ids else None)
    labels_same = last is not None and [s[:2] for s in last] == [s[:2] for s in signature]
    selector = (gr.skip() if labels_same and chosen == selected else
                gr.Dropdown(choices=[(job_label(r), r.id) for r in records], value=chosen))
    now = time.time()
    return ([job_row(r, now) for r in records], selector, *job_view(assistant, chosen),
            signature)


# --- callbacks (plain functions of the facade) ------------------------------------------
def list_jobs(assistant: Assistant) -> list:
    try:
        return assistant.training.jobs()
    except EXPECTED as exc:
        log.warning("Could not list training jobs: %s", exc)
        return []


def job_rows(assistant: Assistant) -> list[list[str]]:
    now = time.time()
    return [job_row(r, now) for r in list_jobs(assistant)]


def loss_frame(assistant: Assistant, job_id: str | None) -> pd.DataFrame:
    """The job's loss curve: one (step, loss) row per logged step."""
    points = []
    if job_id:
        try:
            points = loss_points(assistant.training.metrics(job_id))
        except EXPECTED as exc:
            log.warning("Could not read metrics of %s: %s", job_id, exc)
    return pd.DataFrame(points, columns=["step", "loss"])


def log_tail(assistant: Assistant, job_id: str | None, lines: int = LOG_LINES) -> str:
    if not job_id:
        return ""
    try:
        text = assistant.training.log(job_id)
    except EXPECTED as exc:
        return f"(no log: {exc})"
    return "\n".join(text.splitlines()[-lines:])


def job_view(assistant: Assistant, job_id: str | None) -> tuple[str, pd.DataFrame, str]:
    """(details Markdown, loss curve, log tail) of one job."""
    if not job_id:
        return "No training jobs yet: start one under Train.", loss_frame(assistant, None), ""
    try:
        record = assistant.training.job(job_id)
    except EXPECTED as exc:
        return f"⚠️ {exc}", loss_frame(assistant, None), ""
    return job_details(record), loss_frame(assistant, job_id), log_tail(assistant, job_id)


def cancel_job(assistant: Assistant, job_id: str | None) -> str:
    return _job_action(assistant.training.cancel, job_id, "")


def resume_job(assistant: Assistant, job_id: str | None) -> str:
    return _job_action(assistant.training.resume, job_id, ": it continues from its last checkpoint")


def _job_action(action, job_id: str | None, suffix: str) -> str:
    if not job_id:
        return "Pick a job first."
    try:
        record = action(job_id)
    except EXPECTED as exc:
        return f"⚠️ {exc}"
    return f"Job {record.id} is {record.status}{suffix}."
