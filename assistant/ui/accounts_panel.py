"""Accounts tab (the whole page only, so admins only once accounts exist): who may log
in, with which role; add, change a password, remove, make or revoke API tokens. The
same store as ``python -m assistant users``. The callbacks below the builder are plain
functions (tests call them)."""
from __future__ import annotations

import gradio as gr

from assistant.accounts import ROLES, add_account
from assistant.core import Assistant
from common.errors import DocentError

HEADERS = ["Account", "Role", "API tokens", "Since"]


def build_accounts_panel(demo: gr.Blocks, assistant: Assistant) -> None:
    gr.Markdown("Accounts for a server shared by several people. Admins manage knowledge "
                "bases, folder sync, training and deletion (this page, at /admin/); users "
                "ask, read sources and see only their own conversations. Once the first "
                "account exists, the page asks for a login after Docent is started again, "
                "and the API needs a token.")
    table = gr.Dataframe(headers=HEADERS, interactive=False, elem_id="accounts")
    with gr.Row():
        name = gr.Textbox(label="Account", max_lines=1, elem_id="account-name")
        password = gr.Textbox(label="Password (8 characters or more)", type="password",
                              max_lines=1, elem_id="account-password")
        role = gr.Radio(list(ROLES), value="user", label="Role", elem_id="account-role")
    with gr.Row():
        add = gr.Button("Add", variant="primary", elem_id="account-add")
        passwd = gr.Button("Set password", elem_id="account-passwd")
        token = gr.Button("New API token", elem_id="account-token")
        revoke = gr.Button("Revoke its tokens", elem_id="account-revoke")
        remove = gr.Button("Remove", variant="stop", elem_id="account-remove")
    status = gr.Markdown(elem_id="account-status")
    out = [table, status, password]
    demo.load(lambda: rows(assistant), None, [table], api_name=False)
    add.click(lambda n, p, r: act(assistant, "add", n, p, r), [name, password, role], out,
              api_name=False)
    passwd.click(lambda n, p: act(assistant, "passwd", n, p), [name, password], out,
                 api_name=False)
    token.click(lambda n: act(assistant, "token", n), [name], out, api_name=False)
    revoke.click(lambda n: act(assistant, "revoke", n), [name], out, api_name=False)
    remove.click(lambda n: act(assistant, "remove", n), [name], out, api_name=False)


def rows(assistant: Assistant) -> list[list]:
    return [[a.name, a.role, a.tokens, a.created_at[:10]]
            for a in assistant.access.accounts.list()]


def act(assistant: Assistant, action: str, name: str, password: str = "",
        role: str = "user") -> tuple:
    """Do ``action`` for account ``name``; (table, message, password box cleared)."""
    store, name = assistant.access.accounts, (name or "").strip()
    try:
        if action == "add":
            # the first account administers: otherwise nobody could log in here again
            user, adopted = add_account(store, assistant.paths.data_dir / "conversations.sqlite3",
                                        name, password or "", role if store.exists() else None)
            message = f"Account **{user.name}** made ({user.role})." + (
                f" It now owns the {adopted} conversation(s) made before accounts." if adopted
                else "")
        elif action == "passwd":
            store.set_password(name, password or "")
            message = f"Password of **{name}** changed."
        elif action == "token":
            message = (f"New API token of **{name}**, shown only now: `{store.new_token(name)}`"
                       " (send it as `Authorization: Bearer <token>`).")
        elif action == "revoke":
            message = f"{store.revoke_tokens(name)} token(s) of **{name}** revoked."
        else:
            store.remove(name)
            message = f"Account **{name}** removed; its conversations stay stored."
    except DocentError as exc:
        message = f"⚠️ {exc}"
    return rows(assistant), message, ""
