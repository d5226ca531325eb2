"""A stand-in for ``llama-server`` for fast tests of the supervisor and the served model:
the same command line (``--port``, ``--api-key``), ``GET /health``, ``POST /tokenize``
and a streamed ``POST /v1/chat/completions`` that writes one word every 50 ms, so a
test can kill it in the middle of an answer. Standard library only."""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

WORDS = ("Wash your hands with soap and water for twenty seconds [1] then dry them "
         "with a clean towel and use hand rub when they are not dirty").split()


def main(argv: list[str]) -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--api-key", default="")
    ap.add_argument("-m", default="")
    args, _ = ap.parse_known_args(argv)
    if os.environ.get("FAKE_LLAMA_CRASH_AT_START"):
        return 3
    key = args.api_key

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *a):  # quiet
            pass

        def _json(self, code: int, body: dict) -> None:
            data = json.dumps(body).encode()
            self.send_response(code)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def _authorized(self) -> bool:
            if self.headers.get("Authorization", "") != f"Bearer {key}":
                self._json(401, {"error": {"message": "Invalid API Key", "code": 401}})
                return False
            return True

        def do_GET(self):
            if self.path == "/health":
                return self._json(200, {"status": "ok"})
            self._json(404, {"error": {"message": "not found"}})

        def do_POST(self):
            body = json.loads(self.rfile.read(int(self.headers.get("Content-Length", 0))) or b"{}")
            if not self._authorized():
                return
            if self.path == "/tokenize":
                return self._json(200, {"tokens": list(range(len(body["content"].split())))})
            if self.path != "/v1/chat/completions":
                return self._json(404, {"error": {"message": "not found"}})
            words = WORDS[:body.get("max_tokens", 512)]
            base = {"id": "c1", "object": "chat.completion.chunk", "created": 0, "model": "fake"}
            self.send_response(200)
            self.send_header("Content-Type", "text/event-stream")
            self.end_headers()
            try:
                for i, word in enumerate(words):
                    delta = {"content": ("" if i == 0 else " ") + word}
                    chunk = {**base, "choices": [{"index": 0, "delta": delta, "finish_reason": None}]}
                    self.wfile.write(f"data: {json.dumps(chunk)}\n\n".encode())
                    self.wfile.flush()
                    time.sleep(0.05)
                end = {**base, "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]}
                self.wfile.write(f"data: {json.dumps(end)}\n\ndata: [DONE]\n\n".encode())
                self.wfile.flush()
            except (BrokenPipeError, ConnectionResetError):
                pass
            self.close_connection = True

    ThreadingHTTPServer(("127.0.0.1", args.port), Handler).serve_forever()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
