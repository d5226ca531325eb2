"""The Chat tab: a knowledge-base selector, a streamed answer, citations under it."""
from __future__ import annotations

import logging

import gradio as gr

from assistant.core import Assistant
from assistant.types import Answer, AnswerDelta
from assistant.ui.format import (
    RETRIEVAL_HEADERS, RETRIEVAL_TYPES, citations_markdown, past_turns, retrieval_rows,
)

log = logging.getLogger(__name__)


def build_chat_tab(assistant: Assistant, kb_choice: gr.Dropdown) -> None:
    chatbot = gr.Chatbot(label="Docent", height=480, elem_id="chat")
    with gr.Row():
        question = gr.Textbox(
            placeholder="Ask about your documents (English, 中文, Tiếng Việt)…",
            show_label=False, scale=8, elem_id="question",
        )
        send = gr.Button("Ask", variant="primary", scale=1, elem_id="ask")
    clear = gr.Button("New conversation", size="sm")
    with gr.Accordion("Show retrieval: the sources given to the model, and why", open=False):
        inspector = gr.Dataframe(headers=RETRIEVAL_HEADERS, datatype=RETRIEVAL_TYPES,
                                 interactive=False, wrap=True,
                                 elem_id="retrieval")

    def respond(message: str, history: list, kb: str):
        """One chat round: stream the answer, then list its citations under it and the
        retrieval behind it in the inspector."""
        history = list(history or [])
        message = (message or "").strip()
        if not message:
            yield history, "", gr.skip()
            return
        turns = past_turns(history)
        history.append({"role": "user", "content": message})
        history.append({"role": "assistant", "content": "…"})
        yield history, "", []
        text = ""
        try:
            for event in assistant.ask(message, kb or None, turns):
                if isinstance(event, AnswerDelta):
                    text += event.text
                    history[-1] = {"role": "assistant", "content": text}
                    yield history, "", gr.skip()
                elif isinstance(event, Answer):
                    history[-1] = {"role": "assistant",
                                   "content": event.text + citations_markdown(event)}
                    yield history, "", retrieval_rows(event)
        except Exception as exc:  # the edge: turn any failure into a message, keep the app up
            log.exception("Answering failed")
            history[-1] = {"role": "assistant", "content": f"⚠️ Could not answer: {exc}"}
            yield history, "", []

    outputs = [chatbot, question, inspector]
    send.click(respond, [question, chatbot, kb_choice], outputs, api_name="chat")
    question.submit(respond, [question, chatbot, kb_choice], outputs, api_name=False)
    clear.click(lambda: ([], []), None, [chatbot, inspector], api_name=False)
