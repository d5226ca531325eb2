"""Shared bits for benchmark scripts: settings on a temp data dir, memory readings."""
from __future__ import annotations

import resource
from pathlib import Path

from common.offline import go_offline

go_offline()

from assistant.settings import Settings, load_settings  # noqa: E402

SHARED_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"


def bench_settings(data_dir: Path, **overrides) -> Settings:
    """Settings on ``data_dir`` that reuse the user's assembled models. A benchmark's
    knowledge base keeps its embedder: no background move to ``embedder.across`` when
    it is asked in another language (unless ``embedder`` is given)."""
    overrides.setdefault("embedder", {"across": ""})
    return Settings(data_dir=data_dir, models_dir=load_settings().paths.models_dir, **overrides)


def rss_mb() -> float:
    """Current resident memory of this process in MB (Linux)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
