"""The llama.cpp that set-up builds runs on every CPU it is built on: no AMX.

On a CPU that advertises AMX, ``-march=native`` means (for GCC) that CPU's own
``-march``, e.g. ``sapphirerapids``, which enables AMX; ggml then compiles its AMX
kernels, which fault on VMs without AMX state. These tests compile ggml's AMX kernel
file from the very sources set-up built, as such a CPU would, with and without the
Makefile's flags, and count AMX instructions in what set-up actually built."""
from __future__ import annotations

import platform
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from assistant.canary import amx_instructions, server_binary
from tests.conftest import ROOT

SRC = ROOT / ".venv" / "share" / "llama.cpp" / "src" / "vendor" / "llama.cpp" / "ggml"
x86_only = pytest.mark.skipif(platform.machine() not in ("x86_64", "AMD64"),
                              reason="AMX is an x86-64 extension")


def makefile_flags() -> list[str]:
    out = subprocess.run(["make", "-s", "print-llama-flags"], cwd=ROOT, check=True,
                         capture_output=True, text=True).stdout
    return out.split()


def amx_count_compiled(tmp_path: Path, flags: list[str]) -> int:
    obj = tmp_path / "mmq.o"
    src = SRC / "src"
    subprocess.run(["g++", "-std=c++17", "-O2", f"-I{SRC / 'include'}", f"-I{src}",
                    f"-I{src / 'ggml-cpu'}", *flags, "-march=sapphirerapids", "-c",
                    str(src / "ggml-cpu" / "amx" / "mmq.cpp"), "-o", str(obj)],
                   check=True, capture_output=True)
    count = amx_instructions(obj)
    assert count is not None, "objdump is missing"
    return count


@x86_only
def test_the_flags_keep_amx_out_even_where_native_means_an_amx_cpu(tmp_path):
    if not (SRC / "src" / "ggml-cpu" / "amx" / "mmq.cpp").is_file() or not shutil.which("g++"):
        pytest.skip("run make setup first (it unpacks the llama.cpp sources)")
    flags = makefile_flags()
    assert {"-mno-amx-tile", "-mno-amx-int8", "-mno-amx-bf16"} <= set(flags)
    assert amx_count_compiled(tmp_path, []) > 100  # what a plain native build gets
    assert amx_count_compiled(tmp_path, flags) == 0  # flags first, -march after: still off


@x86_only
def test_what_set_up_built_holds_no_amx_instruction():
    import importlib.util

    spec = importlib.util.find_spec("llama_cpp")
    libs = sorted(Path(spec.origin).parent.glob("lib/libggml-cpu*.so"))
    server = server_binary()
    assert libs and server is not None, "run make setup first"
    for built in [*libs, server]:
        assert amx_instructions(built) == 0, built
    recorded = Path(sys.executable).parent / "llama-server.build-id"
    assert "-mno-amx-tile" in recorded.read_text()  # the flags are the build's identity
