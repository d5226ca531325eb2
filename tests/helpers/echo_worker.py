"""A worker for the job system's tests: ``python -m tests.helpers.echo_worker --job DIR``.

``params``: ``steps`` progress lines, ``sleep`` seconds between them, ``fail`` to end
failed, ``die`` to exit without writing an end (as a crash would). A resumed job starts
after the last step it wrote."""
from __future__ import annotations

import os
import sys
import time
from pathlib import Path

from common.jobs import append_metrics, finish, last_metrics, read_record, start, worker_main


def run(job_dir: Path) -> int:
    record = read_record(job_dir)
    if not start(job_dir):
        return 0
    p = record.params
    first = last_metrics(job_dir).get("done", 0) + 1 if record.resume else 1
    for step in range(first, p.get("steps", 3) + 1):
        append_metrics(job_dir, {"stage": "echo", "done": step, "total": p.get("steps", 3)})
        time.sleep(p.get("sleep", 0.0))
        if p.get("die") == step and not record.resume:
            os._exit(3)
    if p.get("fail"):
        finish(job_dir, status="failed", error="asked to fail")
        return 1
    finish(job_dir, status="succeeded", result={"first": first, "target": record.target})
    return 0


if __name__ == "__main__":
    sys.exit(worker_main(run, "echo_worker"))
