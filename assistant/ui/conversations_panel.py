"""Stored conversations beside the chat: list (title, date), new, reopen, rename, delete
and export as Markdown."""
from __future__ import annotations

import logging
from dataclasses import dataclass

import gradio as gr

from common.errors import DocentError
from assistant.core import Assistant
from assistant.ui.citations_panel import CitationsPanel, show_turn
from assistant.ui.downloads import Downloads
from assistant.ui.format import conversation_choices, turn_messages

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ChatWidgets:
    """What the conversation controls update in the chat column."""

    chatbot: gr.Chatbot
    inspector: gr.Dataframe
    cid: gr.State  # id of the open conversation, None before the first question
    cites: gr.State  # for each answer of the open conversation, its citations
    citations: CitationsPanel
    kb_choice: gr.Dropdown


@dataclass(frozen=True)
class ConversationsPanel:
    listing: gr.Radio
    new: gr.Button
    title: gr.Textbox
    rename: gr.Button
    delete: gr.Button
    export: gr.Button
    file: gr.File
    status: gr.Markdown


def build_conversations_panel() -> ConversationsPanel:
    """The controls (left column); wire them with ``connect_conversations``."""
    gr.Markdown("### Conversations")
    new = gr.Button("New conversation", size="sm", elem_id="new-conversation")
    listing = gr.Radio(label="Stored conversations (click one to reopen it)", choices=[],
                       elem_id="conversations", interactive=True)
    title = gr.Textbox(label="Title", max_lines=1, elem_id="conversation-title")
    with gr.Row():
        rename = gr.Button("Rename", size="sm", elem_id="rename-conversation")
        delete = gr.Button("Delete", size="sm", variant="stop", elem_id="delete-conversation")
    export = gr.Button("Export Markdown", size="sm", elem_id="export-conversation")
    file = gr.File(label="Markdown export", visible=False, interactive=False,
                   elem_id="export-file")
    status = gr.Markdown(elem_id="conversation-status")
    return ConversationsPanel(listing, new, title, rename, delete, export, file, status)


def connect_conversations(demo: gr.Blocks, assistant: Assistant, panel: ConversationsPanel,
                          chat: ChatWidgets, downloads: Downloads) -> None:
    def listing(owner: str, cid: str | None = None):
        try:
            choices = conversation_choices(assistant.conversations.list(owner))
        except DocentError as exc:
            log.warning("Could not list conversations: %s", exc)
            choices = []
        return gr.Radio(choices=choices, value=cid)

    def cleared(owner: str, message: str = ""):
        """An empty chat: the next question starts a new conversation."""
        return ([], [], None, [], *show_turn([]), listing(owner, None), "", message,
                gr.File(value=None, visible=False), gr.skip())

    unchanged = (gr.skip(),) * 12  # one for each of ``full`` below

    def reopen(cid: str | None, request: gr.Request):
        owner = owner_of(assistant, request)
        if not cid:
            return cleared(owner)
        try:
            info = assistant.conversations.get(cid, owner)
            turns = assistant.conversations.turns(cid, owner)
        except DocentError:
            return cleared(owner, "⚠️ That conversation no longer exists.")
        cites = [t.citations for t in turns]
        kb = (gr.Dropdown(value=info.kb) if info.kb in assistant.documents.knowledge_bases()
              else gr.skip())
        return (turn_messages(turns), [], cid, cites, *show_turn(cites), gr.skip(), info.title,
                f"Reopened: {len(turns)} questions, knowledge base **{info.kb}**.",
                gr.File(value=None, visible=False), kb)

    def rename(cid: str | None, title: str, request: gr.Request):
        if not cid:
            return gr.skip(), "Open or start a conversation first."
        owner = owner_of(assistant, request)
        try:
            info = assistant.conversations.rename(cid, title or "", owner)
        except (DocentError, ValueError) as exc:
            return gr.skip(), f"⚠️ {exc}"
        return listing(owner, cid), f"Renamed to **{info.title}**."

    def delete(cid: str | None, request: gr.Request):
        if not cid:
            return unchanged[:9] + ("Open a conversation to delete it.",) + unchanged[10:]
        try:
            assistant.conversations.delete(cid, owner_of(assistant, request))
        except DocentError as exc:
            return unchanged[:9] + (f"⚠️ {exc}",) + unchanged[10:]
        return cleared(owner_of(assistant, request), "Conversation deleted.")

    def export(cid: str | None, request: gr.Request):
        if not cid:
            return gr.File(visible=False), "Open or start a conversation to export it."
        try:
            text = assistant.conversations.export(cid, owner_of(assistant, request))
            info = assistant.conversations.get(cid, owner_of(assistant, request))
        except DocentError as exc:
            return gr.File(visible=False), f"⚠️ Could not export: {exc}"
        path = downloads.write(f"{info.title or 'conversation'}-{cid}.md", text)
        return gr.File(value=str(path), visible=True), "Exported as Markdown."

    def kb_changed(kb: str, cid: str | None, request: gr.Request):
        """Picking another knowledge base starts a new conversation over it."""
        if cid is None:
            return unchanged
        owner = owner_of(assistant, request)
        try:
            info = assistant.conversations.get(cid, owner)
        except DocentError:
            return cleared(owner)
        return cleared(owner) if info.kb != kb else unchanged

    def new(request: gr.Request):
        return cleared(owner_of(assistant, request))

    def shown(request: gr.Request):
        return listing(owner_of(assistant, request), None)

    chat_out = [chat.chatbot, chat.inspector, chat.cid, chat.cites, *chat.citations.outputs]
    full = chat_out + [panel.listing, panel.title, panel.status, panel.file, chat.kb_choice]
    panel.listing.input(reopen, [panel.listing], full, api_name=False)
    panel.new.click(new, None, full, api_name=False)
    chat.chatbot.clear(new, None, full, api_name=False)  # its trash button
    panel.rename.click(rename, [chat.cid, panel.title], [panel.listing, panel.status],
                       api_name=False)
    panel.delete.click(delete, [chat.cid], full, api_name=False)
    panel.export.click(export, [chat.cid], [panel.file, panel.status], api_name=False)
    chat.kb_choice.input(kb_changed, [chat.kb_choice, chat.cid], full, api_name=False)
    demo.load(shown, None, [panel.listing], api_name=False)


def owner_of(assistant: Assistant, request: gr.Request | None) -> str:
    """Whose conversations the page shows: the account it is logged in as; "" with no
    account (one person on loopback, or the server's token as password)."""
    return assistant.access.owner(getattr(request, "username", None))


def after_answer(assistant: Assistant, cid: str | None, owner: str) -> tuple:
    """Updates of the conversation list and title once an answer is stored."""
    try:
        infos = assistant.conversations.list(owner)
    except DocentError:
        return gr.skip(), gr.skip()
    title = next((c.title for c in infos if c.conversation_id == cid), "")
    return gr.Radio(choices=conversation_choices(infos), value=cid), title
