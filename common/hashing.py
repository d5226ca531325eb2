"""File digests, read in blocks (no heavy imports)."""
from __future__ import annotations

import hashlib
from pathlib import Path


def file_sha256(path: Path, block: int = 8 << 20) -> str:
    """Hex sha256 of a file, read in blocks."""
    h = hashlib.sha256()
    with path.open("rb") as f:
        for data in iter(lambda: f.read(block), b""):
            h.update(data)
    return h.hexdigest()
