"""The ground floor: what every layer needs and nothing above it.

``errors`` (the one error root), ``offline`` (no network), ``models`` (where models
live, the packaged chat models), ``hashing`` (file digests) and ``text`` (scripts,
sentences, token counts, the citation marker, language codes). Nothing here imports
from ``knowledge``, ``ingest``, ``finetune`` or ``assistant``.
"""
