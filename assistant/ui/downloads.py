"""Files the page offers for download (a conversation as Markdown, an exam as JSON/CSV).

Gradio serves a returned file only from its cache, the working directory or the system
temp directory, so they are written to one temp folder per app (removed at exit); what
they contain stays stored in the data dir (conversations, documents).
"""
from __future__ import annotations

import atexit
import re
import shutil
import tempfile
from pathlib import Path


class Downloads:
    def __init__(self) -> None:
        self.folder = Path(tempfile.mkdtemp(prefix="docent-downloads-"))
        atexit.register(shutil.rmtree, self.folder, True)

    def write(self, name: str, text: str) -> Path:
        """Write ``text`` as ``name`` (made safe for a file name) and return its path.

        >>> d = Downloads(); d.write("Dose for adults? (v2).md", "x").name
        'Dose-for-adults-v2.md'
        """
        stem, dot, ext = name.rpartition(".")
        safe = re.sub(r"\W+", "-", stem if dot else name).strip("-")
        path = self.folder / (f"{safe[:80] or 'download'}{dot}{ext if dot else ''}")
        tmp = path.with_name(path.name + ".tmp")
        tmp.write_text(text, encoding="utf-8")
        tmp.replace(path)
        return path
