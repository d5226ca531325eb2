"""Start Docent: the web app on http://127.0.0.1:7860 (settings: server.host/port)."""
from __future__ import annotations

import argparse
import logging
import sys
import time

from assistant.offline import go_offline

go_offline()

from assistant.core import Assistant  # noqa: E402
from assistant.errors import AssistantError  # noqa: E402
from assistant.settings import load_settings  # noqa: E402
from knowledge.errors import KnowledgeError  # noqa: E402

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
    server = {k: v for k, v in (("host", args.host), ("port", args.port)) if v}
    if server:
        overrides["server"] = server
    try:
        settings = load_settings(args.config, **overrides)
        logging.basicConfig(level=settings.log_level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
        t0 = time.perf_counter()
        assistant = Assistant(settings)
        assistant.warm_up()
    except (AssistantError, KnowledgeError, ValueError, FileNotFoundError) as exc:
        print(f"Docent cannot start: {exc}\nRun `python -m assistant doctor` for details.", file=sys.stderr)
        return 2
    from assistant.ui import build_ui

    demo = build_ui(assistant)
    host, port = settings.server.host, settings.server.port
    if host not in ("127.0.0.1", "localhost", "::1"):
        log.warning("Binding to %s: the app is reachable from other machines.", host)
    demo.queue(default_concurrency_limit=4)
    demo.launch(server_name=host, server_port=port, prevent_thread_lock=True, show_error=True,
                quiet=True)
    print(f"Docent is ready at http://{host}:{port}  (started in {time.perf_counter() - t0:.1f} s)",
          flush=True)
    try:
        demo.block_thread()
    except KeyboardInterrupt:
        pass
    finally:
        assistant.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
