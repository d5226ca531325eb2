"""The inference log: one JSON line per answer in ``<data_dir>/logs/inference.jsonl``
(the account asking, question, knowledge bases, retrieved chunk ids, model or adapter, timings, tokens).
Switched off with ``answers.inference_log = false``. Appends are serialised by a lock
and written whole, so a crash loses at most the line being written."""
from __future__ import annotations

import json
import threading
from datetime import datetime, timezone
from pathlib import Path

from assistant.types import Answer

FORMAT = 1


class InferenceLog:
    def __init__(self, path: Path):
        self.path = path
        self._lock = threading.Lock()

    def record(self, answer: Answer, kbs: list[str], user: str = "") -> None:
        """``user``: the account that asked ("" without accounts)."""
        line = json.dumps({
            "format": FORMAT,
            "time": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            "user": user,
            "question": answer.question,
            "search_query": answer.search_query,
            "steps": list(answer.steps),
            "knowledge_bases": kbs,
            "language": answer.language,
            "refused": answer.refused,
            "support": answer.support,
            "chunk_ids": [s.chunk_id for s in answer.sources],
            "cited": [c.number for c in answer.citations],
            "model": answer.model,
            "timings": {k: round(v, 4) for k, v in answer.timings.items()},
            "prompt_tokens": answer.prompt_tokens,
            "completion_tokens": answer.tokens,
        }, ensure_ascii=False)
        with self._lock:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            with self.path.open("a", encoding="utf-8") as f:
                f.write(line + "\n")

    def entries(self) -> list[dict]:
        if not self.path.is_file():
            return []
        with self.path.open(encoding="utf-8") as f:
            return [json.loads(line) for line in f if line.strip()]
