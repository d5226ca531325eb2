"""Start Docent: the web app and its OpenAI-compatible API (``/v1``, see
``assistant.api``) on one server, http://127.0.0.1:7860 (settings: server.host/port).

Bound beyond loopback, the API needs a token (``server.api_token``, e.g. the
``DOCENT_SERVER__API_TOKEN`` environment variable), which the web page then asks for
as its password; without one Docent refuses to start. Once accounts exist
(``python -m assistant users add NAME``), the page asks for an account's login and the
API for an account's token (``users token NAME``); admins get the whole page at /admin/.
"""
from __future__ import annotations

import argparse
import logging
import os
import sys
import threading
import time

from common.offline import go_offline

go_offline()

import uvicorn  # noqa: E402
from fastapi import FastAPI  # noqa: E402

from common.errors import DocentError  # noqa: E402
from assistant.accounts import AccountStore  # noqa: E402
from assistant.api import BodyLimit, build_api, build_health  # noqa: E402
from assistant.core import Assistant  # noqa: E402
from assistant.errors import BackendUnavailable  # noqa: E402
from assistant.llm import quiet_http_clients  # noqa: E402
from assistant.settings import load_settings  # noqa: E402

log = logging.getLogger("docent")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description="Start the Docent web app.")
    ap.add_argument("--config", help="settings file (TOML or JSON)")
    ap.add_argument("--host", help="bind address (default 127.0.0.1)")
    ap.add_argument("--port", type=int, help="port (default 7860)")
    ap.add_argument("--data-dir", help="data dir")
    args = ap.parse_args(argv)
    overrides: dict = {}
    if args.data_dir:
        overrides["data_dir"] = args.data_dir
    bind = {k: v for k, v in (("host", args.host), ("port", args.port)) if v}
    if bind:
        overrides["server"] = bind
    try:
        settings = load_settings(args.config, **overrides)
        accounts = AccountStore(settings.paths.data_dir / "accounts.sqlite3")
        problem = _token_problem(settings.server, accounts.exists())
        if problem:
            print(f"Docent cannot start: {problem}", file=sys.stderr)
            return 2
        logging.basicConfig(level=settings.log_level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
        quiet_http_clients()
        t0 = time.perf_counter()
        assistant = Assistant(settings)
        # the default knowledge base opens for search while the chat model loads (its
        # index takes seconds at a million chunks), so the first question waits for neither
        opening = threading.Thread(target=_open_for_search, args=(assistant,),
                                   name="docent-kb-open", daemon=True)
        opening.start()
        try:
            assistant.serving.warm_up()
        except BackendUnavailable as exc:
            if settings.llm.backend != "llama-server":
                raise  # a remote server that is wrong at start stays an error at start
            # the page still serves and says so; the supervisor keeps trying the model
            log.error("The chat model is not ready yet: %s", exc)
        opening.join()
    except (DocentError, ValueError, FileNotFoundError) as exc:
        print(f"Docent cannot start: {exc}\nRun `python -m assistant doctor` for details.", file=sys.stderr)
        return 2
    # Files the page receives (uploads, and what it serves back) go to the data dir, not
    # the shared system temp dir, unless GRADIO_TEMP_DIR says otherwise; the UI deletes
    # them once old and when the server stops. Set here, for this process only.
    os.environ.setdefault("GRADIO_TEMP_DIR", str(settings.paths.uploads_dir))
    removed = clear_uploads(settings.paths.uploads_dir)
    if removed:
        log.info("Removed %d upload(s) a previous run left behind", removed)
    host, port = settings.server.host, settings.server.port
    if not settings.server.loopback:
        log.warning("Binding to %s: the app is reachable from other machines.", host)
    url = f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"
    server = _ReadyServer(uvicorn.Config(build_app(assistant), host=host, port=port,
                                         log_level="warning", timeout_graceful_shutdown=5),
                          f"Docent is ready at {url}  (API: {url}/v1)", t0)
    try:
        server.run()
    finally:
        assistant.close()
    return 0


def _open_for_search(assistant: Assistant) -> None:
    """Open the default knowledge base's BM25 and vectors (``Library.warm``). A failure is
    logged, not fatal: the first search meets it again and reports it to the asker."""
    try:
        assistant.library.warm(assistant.settings.default_kb)
    except Exception as exc:  # noqa: BLE001 - the app serves regardless
        log.error("Could not open knowledge base %s for search: %s",
                  assistant.settings.default_kb, exc)


MIN_TOKEN = 16  # characters of an API token when the app is reachable from other machines


def _token_problem(server, accounts: bool = False) -> str:
    """Why ``server``'s token does not protect a bind beyond loopback ("" when it does, or
    when there is none and ``accounts`` protect the page and API instead)."""
    if server.loopback or len(server.api_token) >= MIN_TOKEN or (
            accounts and not server.api_token):
        return ""
    why = ("it needs an API token" if not server.api_token else
           f"its API token must be at least {MIN_TOKEN} characters (it has "
           f"{len(server.api_token)})")
    return (f"binding to {server.host} makes the app and its API reachable from other "
            f"machines, so {why}. Set server.api_token to a long random string, e.g.\n"
            "  export DOCENT_SERVER__API_TOKEN=$(python -c 'import secrets; "
            "print(secrets.token_urlsafe(32))')\nor make accounts (`python -m assistant "
            "users add NAME`) and leave the token empty, or bind to 127.0.0.1.")


def build_app(assistant: Assistant) -> FastAPI:
    """One server: the OpenAI-compatible API under /v1 and the Gradio page at /.

    Once an account exists (``python -m assistant users add``), "/" is the page of any
    account (ask, sources, its own conversations) and "/admin/" the whole page, for admin
    accounts only. Without accounts "/" is the whole page: no login on loopback, beyond
    it the server's API token as password."""
    app = FastAPI(title="Docent", docs_url=None, redoc_url=None, openapi_url=None)
    server = assistant.settings.server
    app.add_middleware(BodyLimit, limit=int(server.max_request_mb * 2**20), prefix="/v1")
    app.include_router(build_api(assistant))
    app.include_router(build_health(assistant))
    access = assistant.access
    if access.accounts.exists():
        _mount_page(app, assistant, "/admin", True, "Administration: an admin account.",
                    lambda name, password: access.by_password(name, password, admin=True))
        _mount_page(app, assistant, "/", False, "Your Docent account.", access.by_password)
    else:
        _mount_page(app, assistant, "/", True, "Password: the server's API token.",
                    None if server.loopback else access.by_password)
    return app


def _mount_page(app: FastAPI, assistant: Assistant, path: str, admin: bool, message: str,
                login) -> None:
    """Mount the page at ``path``; ``login(name, password)`` -> a user or None (None: no
    login). Mount "/" last: it matches every path."""
    import gradio as gr

    from assistant.ui import build_ui

    demo = build_ui(assistant, admin=admin)
    demo.queue(default_concurrency_limit=4)
    auth = None if login is None else (lambda name, password: login(name, password) is not None)
    server = assistant.settings.server
    gr.mount_gradio_app(app, demo, path=path, server_name=server.host,
                        server_port=server.port, show_error=True, auth=auth,
                        auth_message=message,
                        # an upload over the limit is refused while it arrives
                        max_file_size=int(assistant.settings.ingest.max_file_mb * 2**20))


def clear_uploads(folder) -> int:
    """Empty ``folder`` (the page's uploads): at start no page is open, so whatever is
    there was left by a run that crashed or was killed. Returns how many files went."""
    import shutil
    from pathlib import Path

    folder = Path(folder)
    if not folder.is_dir():
        return 0
    count = 0
    for entry in folder.iterdir():
        count += sum(1 for p in entry.rglob("*") if p.is_file()) if entry.is_dir() else 1
        if entry.is_dir() and not entry.is_symlink():
            shutil.rmtree(entry, ignore_errors=True)
        else:
            entry.unlink(missing_ok=True)
    return count


class _ReadyServer(uvicorn.Server):
    """Says once that the server is serving (scripts and tests wait for that line)."""

    def __init__(self, config: uvicorn.Config, message: str, t0: float):
        super().__init__(config)
        self.message, self.t0 = message, t0

    async def startup(self, sockets=None) -> None:
        await super().startup(sockets)
        if self.started:
            print(f"{self.message}  (started in {time.perf_counter() - self.t0:.1f} s)",
                  flush=True)


if __name__ == "__main__":
    sys.exit(main())
