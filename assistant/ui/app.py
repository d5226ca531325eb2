"""Assemble the tabs into one Gradio app."""
from __future__ import annotations

import gradio as gr

from assistant.core import Assistant
from assistant.ui.accounts_panel import build_accounts_panel
from assistant.ui.chat_tab import build_chat_tab
from assistant.ui.downloads import Downloads
from assistant.ui.finetune_tab import build_finetune_tab
from assistant.ui.knowledge_tab import build_knowledge_tab


# Uploaded files are ingested (a PDF's copy kept with its knowledge base) when "Add" is
# clicked, so Gradio's copies are deleted after a day, checked hourly, and at shutdown.
CACHE_CLEANUP = (3600, 86400)


def build_ui(assistant: Assistant, admin: bool = True) -> gr.Blocks:
    """The page. ``admin``: with the Knowledge, Fine-tune and Accounts tabs (managing
    knowledge bases, folder sync, training, deletion, accounts); without them, the page of an account with
    the user role: ask, read sources, and its own conversations. The handlers of a tab
    that is not built do not exist, so they cannot be called."""
    downloads = Downloads()  # conversation exports and exam files offered for download
    with gr.Blocks(title="Docent", delete_cache=CACHE_CLEANUP) as demo:
        gr.Markdown("# Docent\nAnswers from your own documents, with the file and page "
                    "for every claim. Everything stays on this computer.")
        signed_in = gr.Markdown(elem_id="signed-in")
        kbs = assistant.documents.knowledge_bases()
        kb_choice = gr.Dropdown(
            label="Knowledge base", choices=kbs, value=assistant.settings.default_kb,
            elem_id="kb", interactive=True,
        )
        with gr.Tab("Chat", id="chat-tab"):
            model_choice = build_chat_tab(demo, assistant, kb_choice, downloads)
        if admin:
            with gr.Tab("Knowledge", id="knowledge-tab"):
                build_knowledge_tab(demo, assistant, kb_choice, downloads)
            with gr.Tab("Fine-tune", id="finetune-tab"):
                build_finetune_tab(demo, assistant, kb_choice, model_choice)
            with gr.Tab("Accounts", id="accounts-tab"):
                build_accounts_panel(demo, assistant)
        demo.load(lambda kb: gr.Dropdown(choices=assistant.documents.knowledge_bases(), value=kb),
                  [kb_choice], [kb_choice], api_name=False)

        def who(request: gr.Request) -> str:
            return signed_in_line(assistant, getattr(request, "username", None), admin)

        demo.load(who, None, [signed_in], api_name=False)
    return demo


def signed_in_line(assistant: Assistant, login: str | None, admin_page: bool) -> str:
    """Who the page is logged in as, with the way out and, for an admin on the users'
    page, the way to the administration page ("" when there is no login)."""
    account = assistant.access.owner(login)
    if not account:
        return ""
    links = ["[Log out](logout)"]
    if not admin_page and assistant.access.is_admin(account):
        links.insert(0, "[Administration](/admin/)")
    return f"Signed in as **{account}** · " + " · ".join(links)
