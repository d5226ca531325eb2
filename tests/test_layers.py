"""Imports run one way: app.py, then the edges (web page, HTTP API, CLI), then the
services in ``assistant``, then ``ingest`` and ``finetune``, then ``knowledge``, then the
ground floor ``common``. A forbidden import anywhere in a module (lazy ones inside
functions included) fails here with the file and line."""
from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
EDGES = ("assistant.ui", "assistant.api", "assistant.__main__", "assistant.cli_")

# package -> the project packages it may not import
FORBIDDEN = {
    "common": {"knowledge", "ingest", "finetune", "assistant", "benchmarks", "app"},
    "knowledge": {"ingest", "finetune", "assistant", "benchmarks", "app"},
    "ingest": {"finetune", "assistant", "benchmarks", "app"},
    "finetune": {"assistant", "benchmarks", "app"},
    "assistant": {"benchmarks", "app"},
}


def imports(path: Path) -> list[tuple[int, str]]:
    """(line, dotted module) for every import in the file, at any depth."""
    out = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), str(path))):
        if isinstance(node, ast.Import):
            out.extend((node.lineno, alias.name) for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            out.append((node.lineno, node.module))
    return out


def violations(package: str) -> list[str]:
    found = []
    for path in sorted((ROOT / package).rglob("*.py")):
        module = ".".join(path.relative_to(ROOT).with_suffix("").parts)
        service = package == "assistant" and not module.startswith(EDGES)
        for line, name in imports(path):
            top = name.split(".")[0]
            if top in FORBIDDEN[package] or (service and name.startswith(EDGES)):
                found.append(f"{path.relative_to(ROOT)}:{line} imports {name}")
    return found


@pytest.mark.parametrize("package", sorted(FORBIDDEN))
def test_imports_run_one_way(package):
    assert violations(package) == []


def test_the_check_sees_lazy_and_dotted_imports(tmp_path):
    probe = tmp_path / "probe.py"
    probe.write_text("import os\n\ndef f():\n    from assistant.core import Assistant\n"
                     "    import finetune.jobs\n", encoding="utf-8")
    assert imports(probe) == [(1, "os"), (4, "assistant.core"), (5, "finetune.jobs")]
