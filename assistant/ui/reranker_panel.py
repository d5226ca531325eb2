"""Knowledge base status and the "Train reranker" button, with progress while it runs."""
from __future__ import annotations

import logging

import gradio as gr

from assistant.core import Assistant
from assistant.services.index_jobs import TRAIN_RERANKER
from assistant.status_text import knowledge_base_status

log = logging.getLogger(__name__)
POLL_SECONDS = 2.0


def build_reranker_panel(demo: gr.Blocks, assistant: Assistant, kb_choice: gr.Dropdown) -> tuple:
    """Build the panel; returns ``(fn, inputs, outputs)`` that refresh it (for ``.then``)."""
    gr.Markdown("### Search quality")
    status = gr.Markdown(elem_id="kb-status")
    with gr.Row():
        train = gr.Button("Train reranker", elem_id="train-reranker", scale=1)
        gr.Markdown("The local model writes questions for passages of this knowledge base, "
                    "and a small cross-encoder learns to rank their passages first. It runs in "
                    "the background (minutes); chat keeps working meanwhile.", scale=4)
    timer = gr.Timer(POLL_SECONDS, active=False)

    def show(kb: str):
        try:
            facts = assistant.documents.status(kb or None)
        except Exception as exc:  # the edge: say what is wrong, keep the page up
            return f"⚠️ {exc}", gr.Timer(active=False)
        training = any(job.active for job in facts.jobs if job.kind == TRAIN_RERANKER)
        return knowledge_base_status(facts), gr.Timer(active=training)

    def start(kb: str):
        try:
            assistant.index_jobs.train_reranker(kb or None)
        except Exception as exc:
            log.warning("Could not start reranker training: %s", exc)
            return f"⚠️ Could not start training: {exc}", gr.Timer(active=False)
        return show(kb)

    train.click(start, [kb_choice], [status, timer], api_name="train_reranker")
    timer.tick(show, [kb_choice], [status, timer], api_name=False)
    kb_choice.change(show, [kb_choice], [status, timer], api_name=False)
    demo.load(show, [kb_choice], [status, timer], api_name=False)
    return show, [kb_choice], [status, timer]
