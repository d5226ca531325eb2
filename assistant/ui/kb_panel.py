"""Knowledge-base management: create, rename, delete (one accordion in the Knowledge tab)."""
from __future__ import annotations

import gradio as gr

from assistant.core import Assistant


def build_kb_panel(assistant: Assistant, kb_choice: gr.Dropdown) -> None:
    with gr.Accordion("Manage knowledge bases", open=False):
        with gr.Row():
            name = gr.Textbox(label="Name", placeholder="e.g. clinic-guidelines", scale=3)
            create = gr.Button("Create", scale=1)
            rename = gr.Button("Rename selected to this name", scale=1)
            delete = gr.Button("Delete selected", variant="stop", scale=1)
        confirm = gr.Checkbox(label="Yes, delete the selected knowledge base and its index")
        status = gr.Markdown()

    def _choices(value: str | None):
        return gr.Dropdown(choices=assistant.documents.knowledge_bases(), value=value)

    def do_create(new: str):
        try:
            assistant.documents.create_knowledge_base((new or "").strip())
        except Exception as exc:
            return f"⚠️ {exc}", gr.Dropdown()
        return f"Created **{new.strip()}**.", _choices(new.strip())

    def do_rename(current: str, new: str):
        try:
            assistant.documents.rename_knowledge_base(current, (new or "").strip())
        except Exception as exc:
            return f"⚠️ {exc}", gr.Dropdown()
        return f"Renamed **{current}** to **{new.strip()}**.", _choices(new.strip())

    def do_delete(current: str, sure: bool):
        if not sure:
            return "Tick the box to confirm the deletion.", gr.Dropdown(), False
        if current == assistant.settings.default_kb:
            return "The default knowledge base cannot be deleted.", gr.Dropdown(), False
        try:
            assistant.documents.delete_knowledge_base(current)
        except Exception as exc:
            return f"⚠️ {exc}", gr.Dropdown(), False
        return f"Deleted **{current}**.", _choices(assistant.settings.default_kb), False

    create.click(do_create, [name], [status, kb_choice], api_name=False)
    rename.click(do_rename, [kb_choice, name], [status, kb_choice], api_name=False)
    delete.click(do_delete, [kb_choice, confirm], [status, kb_choice, confirm], api_name=False)
