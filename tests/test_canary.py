"""The llama.cpp canary: crashes in its children become reports that name the cause and
what to do; AMX instructions are counted in the machine code; the real build passes."""
import platform
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from assistant.__main__ import main as cli_main
from assistant.canary import (
    CanaryReport, CheckResult, amx_instructions, binding_libraries, canary_models, check_amx,
    check_binding, check_server, run_canary, server_binary,
)
from tests.conftest import shared_models_dir

X86 = platform.machine().lower() in ("x86_64", "amd64")
SEGFAULT = [sys.executable, "-c", "import os, signal; os.kill(os.getpid(), signal.SIGSEGV)"]
SMALL = "qwen2.5-coder-0.5b-instruct-q4_k_m.gguf"


def _script(path: Path, body: str) -> Path:
    path.write_text("#!/bin/sh\n" + body + "\n")
    path.chmod(0o755)
    return path


def _object(tmp_path: Path, name: str, asm: str) -> Path:
    src, obj = tmp_path / f"{name}.s", tmp_path / f"{name}.o"
    src.write_text(f".text\n.globl f\nf:\n{asm}\n    ret\n")
    subprocess.run(["as", "-o", str(obj), str(src)], check=True, capture_output=True)
    return obj


needs_binutils = pytest.mark.skipif(not (X86 and shutil.which("as") and shutil.which("objdump")),
                                    reason="needs x86-64 with binutils (as, objdump)")


# --- fast: fakes ---------------------------------------------------------------------
def test_a_segfault_in_the_binding_child_is_reported_with_its_cause_and_remedy(tmp_path):
    check = check_binding("qwen2.5-coder-0.5b", tmp_path / "m.gguf", timeout=60, command=SEGFAULT)
    assert not check.ok
    assert "crashed with SIGSEGV evaluating qwen2.5-coder-0.5b through the Python binding" in check.detail
    assert "instruction this CPU cannot run" in check.detail and "AMX" in check.detail
    assert "make clean-llama setup" in check.detail and "/proc/cpuinfo" in check.detail
    report = run_canary([("qwen2.5-coder-0.5b", tmp_path / "m.gguf")], server=None,
                        binding_command=SEGFAULT)
    assert not report.ok and "FAIL" in report.render() and "SIGSEGV" in report.render()


def test_a_binding_child_that_answers_passes_and_one_that_fails_shows_its_error(tmp_path):
    fake = ('import json; print("CANARY " + json.dumps({"usage": {"prompt_tokens": 21, '
            '"completion_tokens": 4}, "text": " three"}))')
    ok = check_binding("m", tmp_path / "m.gguf", timeout=60, command=[sys.executable, "-c", fake])
    assert ok.ok and "21 prompt tokens evaluated, 4 generated" in ok.detail
    bad = check_binding("m", tmp_path / "m.gguf", timeout=60,
                        command=[sys.executable, "-c", "raise SystemExit('cannot load the model file')"])
    assert not bad.ok and "exit code 1" in bad.detail and "cannot load the model file" in bad.detail


def test_a_binding_child_that_hangs_is_stopped_at_the_timeout(tmp_path):
    check = check_binding("m", tmp_path / "m.gguf", timeout=1,
                          command=[sys.executable, "-c", "import time; time.sleep(30)"])
    assert not check.ok and "no answer within 1 s" in check.detail


def test_a_server_that_exits_at_once_is_reported_with_its_exit_code_and_log(tmp_path):
    server = _script(tmp_path / "llama-server", "echo 'error: unknown argument: --bogus' >&2\nexit 3")
    check = check_server("qwen2.5-coder-0.5b", tmp_path / "m.gguf", server, timeout=30)
    assert not check.ok
    assert "exited with code 3" in check.detail and "unknown argument: --bogus" in check.detail


def test_a_server_that_segfaults_is_reported_with_the_signal(tmp_path):
    server = _script(tmp_path / "llama-server", "echo 'load_tensors: AMX model buffer'\nkill -SEGV $$")
    check = check_server("qwen2.5-coder-0.5b", tmp_path / "m.gguf", server, timeout=30)
    assert not check.ok
    assert "crashed with SIGSEGV evaluating qwen2.5-coder-0.5b through llama-server" in check.detail
    assert "make clean-llama setup" in check.detail and "AMX model buffer" in check.detail


FAKE_SERVER = """
import json, os, signal, sys
from http.server import BaseHTTPRequestHandler, HTTPServer
args = sys.argv[1:]
port, key = int(args[args.index("--port") + 1]), args[args.index("--api-key") + 1]
class Handler(BaseHTTPRequestHandler):
    def do_GET(self):
        self.send_response(200 if self.path == "/health" else 404); self.end_headers()
    def do_POST(self):
        if os.environ.get("FAKE_CRASH"):
            print("ggml_backend_amx_mul_mat: evaluating", flush=True)
            os.kill(os.getpid(), signal.SIGSEGV)
        ok = self.headers.get("Authorization") == "Bearer " + key
        body = json.dumps({"choices": [{"message": {"role": "assistant", "content": "Hi!"}}]})
        self.send_response(200 if ok else 401); self.end_headers()
        self.wfile.write(body.encode())
HTTPServer(("127.0.0.1", port), Handler).serve_forever()
"""


def _fake_server(tmp_path: Path) -> Path:
    code = tmp_path / "fake_server.py"
    code.write_text(FAKE_SERVER)
    return _script(tmp_path / "llama-server", f'exec "{sys.executable}" "{code}" "$@"')


def test_a_server_that_answers_with_the_key_passes(tmp_path):
    check = check_server("m", tmp_path / "m.gguf", _fake_server(tmp_path), timeout=30)
    assert check.ok, check.detail
    assert "answered 'Hi!'" in check.detail


def test_a_server_that_crashes_on_the_first_token_is_reported_with_the_signal(tmp_path, monkeypatch):
    monkeypatch.setenv("FAKE_CRASH", "1")
    check = check_server("qwen2.5-coder-1.5b", tmp_path / "m.gguf", _fake_server(tmp_path), timeout=30)
    assert not check.ok
    assert "crashed with SIGSEGV evaluating qwen2.5-coder-1.5b through llama-server" in check.detail
    assert "ggml_backend_amx_mul_mat" in check.detail  # the tail of its log


def test_no_models_and_no_server_are_failures_that_say_what_to_run(tmp_path):
    assert canary_models(tmp_path) == []
    report = run_canary([], server=None)
    assert not report.ok
    text = report.render()
    assert "make models" in text and "llama-server" in text and "make setup" in text


def test_server_binary_prefers_the_configured_path(tmp_path):
    assert server_binary(str(tmp_path / "my-server")) == tmp_path / "my-server"
    venv_server = Path(sys.executable).parent / "llama-server"
    if venv_server.exists():
        assert server_binary() == venv_server


def test_report_ok_needs_at_least_one_check_and_every_check_passed():
    assert not CanaryReport(()).ok
    assert CanaryReport((CheckResult("a", True, "fine"),)).ok
    assert not CanaryReport((CheckResult("a", True, ""), CheckResult("b", False, "x"))).ok


@needs_binutils
def test_amx_instructions_are_counted_in_machine_code(tmp_path):
    amx = _object(tmp_path, "amx", "    ldtilecfg (%rax)\n    tilezero %tmm0\n    tilerelease")
    assert amx_instructions(amx) == 3
    check = check_amx("amx.o", amx)
    assert not check.ok and "holds 3 AMX instructions" in check.detail
    assert "make clean-llama setup" in check.detail
    plain = _object(tmp_path, "plain", "    vpaddd %ymm0, %ymm1, %ymm2\n    call tile_helper")
    assert amx_instructions(plain) == 0 and check_amx("plain.o", plain).ok


def test_amx_count_is_none_when_the_file_is_not_machine_code(tmp_path):
    if not shutil.which("objdump"):
        pytest.skip("objdump is not installed")
    junk = tmp_path / "junk.so"
    junk.write_bytes(b"not an ELF file")
    assert amx_instructions(junk) is None


def test_cli_canary_exits_1_with_the_report_when_nothing_can_run(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("DOCENT_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setenv("DOCENT_MODELS_DIR", str(tmp_path / "no-models"))
    monkeypatch.setattr("assistant.canary.binding_libraries", lambda: [])  # fast: no objdump
    rc = cli_main(["canary", "--server", str(tmp_path / "missing-server")])
    out = capsys.readouterr().out
    assert rc == 1 and "FAIL" in out and "make models" in out
    assert f"{tmp_path / 'missing-server'} does not exist" in out


# --- slow: the real build ------------------------------------------------------------
@pytest.mark.slow
def test_the_real_build_runs_the_small_model_and_holds_no_amx():
    gguf = shared_models_dir() / SMALL
    if not gguf.is_file():
        pytest.skip(f"{gguf} is not assembled: run `make models`")
    server = server_binary()
    if server is None or not server.is_file():
        pytest.skip("llama-server is not built (`make setup` installs it in the venv's bin)")
    libs = binding_libraries()
    assert libs, "the llama_cpp binding has no libggml-cpu*.so"
    report = run_canary([("qwen2.5-coder-0.5b", gguf)], server, timeout=300)
    assert report.ok, report.render()
    names = [c.name for c in report.checks]
    assert "qwen2.5-coder-0.5b through the Python binding" in names
    assert "qwen2.5-coder-0.5b through llama-server" in names
    if X86 and shutil.which("objdump"):
        assert [amx_instructions(lib) for lib in [*libs, server]] == [0] * (len(libs) + 1)
