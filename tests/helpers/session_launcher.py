"""A launcher for the job system's tests, shaped like torchrun where it matters:
``python -m tests.helpers.session_launcher -m WORKER --job DIR`` starts the worker in a
session of its own (so a signal to the launcher's process group misses it), writes the
worker's pid to ``DIR/child.pid``, and dies on SIGTERM without passing it on."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path


def main(argv: list[str]) -> int:
    job_dir = Path(argv[argv.index("--job") + 1])
    child = subprocess.Popen([sys.executable, *argv], start_new_session=True)
    (job_dir / "child.pid").write_text(str(child.pid), encoding="utf-8")
    return child.wait()


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
