"""The Fine-tune tab: Data -> Train -> Jobs -> Adapters -> Real questions, one sub-tab
each.

Training runs as job records on disk worked by a subprocess (``finetune.jobs``); this
tab only starts, cancels and resumes jobs and reads their records, on a 2 s timer."""
from __future__ import annotations

import gradio as gr

from assistant.core import Assistant
from assistant.ui.adapters_panel import build_adapters_panel
from assistant.ui.evaluation_panel import build_evaluation_panel
from assistant.ui.finetune_data_panel import build_data_panel, build_dataset_picker
from assistant.ui.finetune_jobs_panel import build_jobs_panel
from assistant.ui.finetune_train_panel import build_train_panel

POLL_SECONDS = 2.0


def build_finetune_tab(demo: gr.Blocks, assistant: Assistant, kb_choice: gr.Dropdown,
                       model_choice: gr.Dropdown) -> None:
    """``model_choice``: the chat tab's model menu, refreshed when adapters come or go."""
    gr.Markdown("Teach the model your documents: import or generate a dataset, train an "
                "adapter (it runs in the background and survives a restart), compare it "
                "with the base model, then pick it in the Chat tab.")
    timer = gr.Timer(POLL_SECONDS)
    dataset = build_dataset_picker()
    with gr.Tabs():
        with gr.Tab("Data", id="ft-data-tab"):
            build_data_panel(demo, assistant, kb_choice, dataset)
        with gr.Tab("Train", id="ft-train-tab"):
            train = build_train_panel(assistant, dataset)
        with gr.Tab("Jobs", id="ft-jobs-tab") as jobs_tab:
            jobs = build_jobs_panel(demo, assistant, timer)
        with gr.Tab("Adapters", id="ft-adapters-tab"):
            build_adapters_panel(demo, assistant, timer, model_choice)
        with gr.Tab("Real questions", id="ft-eval-tab"):
            build_evaluation_panel(demo, assistant, kb_choice, timer)
    train.started.then(jobs.show, [train.job_id], jobs.outputs, api_name=False)
    jobs_tab.select(jobs.show, [jobs.selector], jobs.outputs, api_name=False,
                    show_progress="hidden")
