"""The Chat tab: stored conversations on the left; on the right a streamed answer, its
clickable citations and the retrieval behind it."""
from __future__ import annotations

import logging
from collections.abc import Iterator

import gradio as gr

from common.errors import DocentError
from assistant.core import Assistant
from assistant.errors import ConversationNotFound
from assistant.types import Answer, AnswerDelta, Reading
from assistant.ui.adapters_panel import model_choices, model_update
from assistant.ui.citations_panel import build_citations_panel, show_turn
from assistant.ui.conversations_panel import (
    ChatWidgets, after_answer, build_conversations_panel, connect_conversations, owner_of,
)
from assistant.ui.downloads import Downloads
from assistant.ui.format import (
    RETRIEVAL_HEADERS, RETRIEVAL_TYPES, answer_view, draft_markdown, failed_markdown,
    reading_markdown,
    retrieval_rows, stopped_markdown,
)

log = logging.getLogger(__name__)


def build_chat_tab(demo: gr.Blocks, assistant: Assistant, kb_choice: gr.Dropdown,
                   downloads: Downloads) -> gr.Dropdown:
    """Build the tab; returns its model menu (the Fine-tune tab refreshes it)."""
    cid = gr.State(None)
    cites = gr.State([])
    with gr.Row():
        with gr.Column(scale=1, min_width=260):
            conversations = build_conversations_panel()
        with gr.Column(scale=3):
            model = build_model_menu(demo, assistant)
            chatbot = gr.Chatbot(label="Docent", height=480, elem_id="chat")
            with gr.Row():
                question = gr.Textbox(
                    placeholder="Ask about your documents (English, 中文, Tiếng Việt)…",
                    show_label=False, scale=8, elem_id="question",
                )
                send = gr.Button("Ask", variant="primary", scale=1, elem_id="ask")
                stop = gr.Button("Stop", variant="stop", scale=1, elem_id="stop")
                retry = gr.Button("Retry", scale=1, elem_id="retry")
            citations = build_citations_panel(assistant, cites, chatbot)
            with gr.Accordion("Show retrieval: the sources given to the model, and why",
                              open=False):
                inspector = gr.Dataframe(headers=RETRIEVAL_HEADERS, datatype=RETRIEVAL_TYPES,
                                         interactive=False, wrap=True, elem_id="retrieval")
    chat = ChatWidgets(chatbot, inspector, cid, cites, citations, kb_choice)
    connect_conversations(demo, assistant, conversations, chat, downloads)

    left: set[str] = set()  # conversations the page moved away from while they streamed

    def respond(message: str, history: list, kb: str, model_id: str | None,
                open_cid: str | None, answered: list, request: gr.Request):
        """One chat round in the open conversation (a new one on the first question):
        stream the answer, then show it with its sources and the retrieval behind it."""
        left.discard(open_cid)
        owner = owner_of(assistant, request)
        yield from _while_shown(_respond(assistant, owner, message, history, kb, open_cid,
                                         answered, model_id), left)

    def panels(open_cid: str | None, answered: list, request: gr.Request):
        owner = owner_of(assistant, request)
        return (*show_turn(answered), *after_answer(assistant, open_cid, owner), "")

    def again(history: list, kb: str, model_id: str | None, open_cid: str | None,
              answered: list, request: gr.Request):
        """Ask the open conversation's failed or stopped last question again."""
        left.discard(open_cid)
        owner = owner_of(assistant, request)
        yield from _while_shown(_retry(assistant, owner, history, kb, open_cid, answered,
                                       model_id), left)

    def stop_answer(open_cid: str | None, request: gr.Request):
        if open_cid:
            assistant.conversations.stop(open_cid, owner_of(assistant, request))

    def leave(open_cid: str | None, request: gr.Request):
        if open_cid:
            left.add(open_cid)
            assistant.conversations.stop(open_cid, owner_of(assistant, request))

    inputs = [question, chatbot, kb_choice, model, cid, cites]
    outputs = [chatbot, question, inspector, cid, cites]
    after = [*citations.outputs, conversations.listing, conversations.title,
             conversations.status]
    # "multiple": a question may be asked while a left conversation's answer winds down
    asking = [send.click(respond, inputs, outputs, api_name="chat", trigger_mode="multiple"),
              question.submit(respond, inputs, outputs, api_name=False,
                              trigger_mode="multiple"),
              retry.click(again, inputs[1:], outputs, api_name=False)]
    for event in asking:
        event.then(panels, [cid, cites], after, api_name=False)
    # Stop ends the answer (what streamed is kept, marked stopped; the model's slot is
    # freed). Leaving the conversation while it streams (New, reopen, delete, clear, another
    # knowledge base) stops it too, and its later updates are dropped, so they cannot
    # bring the old conversation back.
    stop.click(stop_answer, [cid], None, api_name=False)
    for trigger in (conversations.new.click, conversations.listing.input,
                    conversations.delete.click, chatbot.clear, kb_choice.input):
        trigger(leave, [cid], None, api_name=False)
    return model


# --- chat model menu: the base model and every adapter, chosen per turn ---------------
def build_model_menu(demo: gr.Blocks, assistant: Assistant) -> gr.Dropdown:
    """The "Model" dropdown; its choices are read again on every page load."""
    model = gr.Dropdown(label="Model", choices=model_choices(assistant),
                        value=assistant.serving.chat_model(), elem_id="chat-model",
                        interactive=True,
                        info="The base model or a fine-tuned adapter; switches at once.")
    demo.load(lambda current: model_update(assistant, current), [model], [model],
              api_name=False)
    return model


def _respond(assistant: Assistant, owner: str, message: str, history: list, kb: str,
             cid: str | None, answered: list, model: str | None = None) -> Iterator[tuple]:
    message = (message or "").strip()
    if not message:
        yield history, "", gr.skip(), cid, answered
        return
    history = list(history or []) if cid else []
    answered = list(answered or []) if cid else []
    history += [{"role": "user", "content": message}, {"role": "assistant", "content": "…"}]
    yield history, "", [], cid, answered
    yield from _stream(lambda: _open_chat(assistant, owner, cid, kb, message, model or None),
                       history, cid, answered, "")


def _retry(assistant: Assistant, owner: str, history: list, kb: str, cid: str | None,
           answered: list, model: str | None = None) -> Iterator[tuple]:
    history, answered = list(history or []), list(answered or [])
    if not cid or not history or history[-1].get("role") != "assistant":
        yield history, gr.skip(), gr.skip(), cid, answered
        return
    history[-1] = {"role": "assistant", "content": "…"}
    answered = answered[:-1]
    yield history, gr.skip(), [], cid, answered
    yield from _stream(lambda: (cid, assistant.conversations.retry(cid, model or None, owner)),
                       history, cid, answered, gr.skip())


def _while_shown(updates: Iterator[tuple], left: set[str]) -> Iterator[tuple]:
    """Pass the chat ``updates`` on until their conversation (the 4th output) is one the
    page left; then close them (the answer is stored as stopped) and send nothing more,
    so the conversation now shown stays."""
    for update in updates:
        if update[3] is not None and update[3] in left:
            updates.close()
            yield (gr.skip(),) * len(update)  # the last update is repeated at the end
            return
        yield update


def _stream(start, history: list, cid: str | None, answered: list, box) -> Iterator[tuple]:
    """Show the events of ``start()`` (-> ``(cid, events)``) in the last chat bubble;
    ``box``: what the question box shows meanwhile ("" or unchanged)."""
    text, done, lang = "", False, "en"
    try:
        cid, events = start()
        yield history, box, gr.skip(), cid, answered  # the conversation is known now
        for event in events:
            if isinstance(event, Reading):  # before the first delta
                lang = event.language or lang
                history[-1] = {"role": "assistant", "content": reading_markdown(event.sources)}
                yield history, box, gr.skip(), cid, answered
            elif isinstance(event, AnswerDelta):
                text += event.text  # a draft until the final answer replaces it
                history[-1] = {"role": "assistant", "content": draft_markdown(text, lang)}
                yield history, box, gr.skip(), cid, answered
            elif isinstance(event, Answer):
                history[-1] = {"role": "assistant", "content": answer_view(event)}
                answered.append(tuple(event.citations))
                done = True
                yield history, box, retrieval_rows(event), cid, answered
        if not done:  # stopped
            history[-1] = {"role": "assistant", "content": stopped_markdown(text)}
            answered.append(())
            yield history, box, [], cid, answered
    except Exception as exc:  # the edge: turn any failure into a message, keep the app up
        log.warning("Answering failed: %s", exc, exc_info=not isinstance(exc, DocentError))
        history[-1] = {"role": "assistant", "content": failed_markdown(str(exc), text)}
        if not done:
            answered.append(())  # keeps one entry per answer shown
        yield history, box, [], cid, answered


def _open_chat(assistant: Assistant, owner: str, cid: str | None, kb: str, question: str,
               model: str | None = None):
    """``(cid, events)`` of ``assistant.chat`` in conversation ``cid``, or in a new one over
    ``kb`` when none is open (or it was deleted meanwhile, e.g. in another tab).
    ``model``: the base model or an adapter id for this turn."""
    if cid:
        try:
            return cid, assistant.conversations.send(cid, question, model, owner)
        except ConversationNotFound:
            log.info("Conversation %s is gone; starting a new one", cid)
    cid = assistant.conversations.create(kb or None, owner=owner).conversation_id
    return cid, assistant.conversations.send(cid, question, model, owner)
