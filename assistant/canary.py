"""Prove that the llama.cpp build runs on this CPU, before the app starts.

A llama.cpp built with ``-march=native`` on a CPU that advertises Intel AMX crashes
(SIGSEGV at ``ldtilecfg``) on the first token when the VM gives no AMX state. The
Makefile builds with AMX turned off; this canary checks the result:

- no AMX instruction in the binding's ``libggml-cpu.so`` nor in ``llama-server``
  (counted in ``objdump -d``);
- each default GGUF evaluates a short prompt and generates 4 tokens through the Python
  binding and through ``llama-server``, each in a CHILD process, so a crash is a report
  (with the signal's name and what to do), never a crash of the caller.

    report = run_canary(canary_models(settings.paths.models_dir), server_binary())
    print(report.render()); sys.exit(0 if report.ok else 1)

Only the standard library is used here; ``llama_cpp`` is imported in the children only.
"""
from __future__ import annotations

import http.client
import importlib.util
import json
import os
import platform
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TextIO

from common.models import DEFAULT_MODELS

AMX_MNEMONICS = frozenset({
    "ldtilecfg", "sttilecfg", "tileloadd", "tileloaddt1", "tilestored", "tilerelease",
    "tilezero", "tdpbssd", "tdpbsud", "tdpbusd", "tdpbuud", "tdpbf16ps",
})
REBUILD = "make clean-llama setup"
CPU_FLAGS_CMD = "grep -o 'amx[a-z_0-9]*\\|avx512[a-z]*' /proc/cpuinfo | sort -u"
HEALTH_WAIT_S = 120.0
LOG_TAIL_LINES = 20

# Run by ``python -c CODE GGUF`` in a child: ~20 prompt tokens, 4 generated, one JSON line.
BINDING_CODE = r"""
import json, os, sys
import llama_cpp
llm = llama_cpp.Llama(model_path=sys.argv[1], n_ctx=512, n_threads=os.cpu_count(), verbose=False)
prompt = "The quick brown fox jumps over the lazy dog. Now count slowly from one to ten: one, two,"
out = llm.create_completion(prompt, max_tokens=4, temperature=0.0)
print("CANARY " + json.dumps({"usage": out["usage"], "text": out["choices"][0]["text"]}), flush=True)
"""
BINDING = "the Python binding"
SERVER = "llama-server"


@dataclass(frozen=True)
class CheckResult:
    name: str
    ok: bool
    detail: str


@dataclass(frozen=True)
class CanaryReport:
    checks: tuple[CheckResult, ...]

    @property
    def ok(self) -> bool:
        return bool(self.checks) and all(c.ok for c in self.checks)

    @property
    def failures(self) -> tuple[CheckResult, ...]:
        return tuple(c for c in self.checks if not c.ok)

    def render(self) -> str:
        """One line per check, then a verdict.

        >>> print(CanaryReport((CheckResult("a", True, "fine"), CheckResult("b", False, "broke"))).render())
          ok    a: fine
          FAIL  b: broke
        canary: 1 of 2 checks failed
        """
        lines = [f"  {'ok  ' if c.ok else 'FAIL'}  {c.name}: {c.detail}" for c in self.checks]
        if self.ok:
            lines.append(f"canary: all {len(self.checks)} checks passed")
        else:
            lines.append(f"canary: {len(self.failures)} of {len(self.checks)} checks failed")
        return "\n".join(lines)


# --- where things are ----------------------------------------------------------------
def server_binary(configured: str = "") -> Path | None:
    """The configured llama-server, else the one `make setup` installs in the venv, else PATH."""
    if configured:
        return Path(configured).expanduser()
    in_venv = Path(sys.executable).parent / "llama-server"
    if in_venv.exists():
        return in_venv
    found = shutil.which("llama-server")
    return Path(found) if found else None


def binding_libraries() -> list[Path]:
    """The installed binding's ``libggml-cpu*.so`` files, found without importing llama_cpp."""
    spec = importlib.util.find_spec("llama_cpp")
    if spec is None or not spec.origin:
        return []
    return sorted((Path(spec.origin).parent / "lib").glob("libggml-cpu*.so"))


def canary_models(models_dir: Path) -> list[tuple[str, Path]]:
    """The default GGUFs present in ``models_dir``, the smallest (fastest to fail) first."""
    found = [(m.size, m.name, models_dir / m.filename) for m in DEFAULT_MODELS.values()]
    return [(name, path) for _, name, path in sorted(found) if path.is_file()]


# --- AMX in the machine code ---------------------------------------------------------
def amx_instructions(lib: Path) -> int | None:
    """How many AMX instructions ``objdump -d`` finds in ``lib``; None when objdump is
    missing or cannot read the file. The listing is read as a stream (it can be large)."""
    objdump = shutil.which("objdump")
    if objdump is None:
        return None
    count = 0
    with subprocess.Popen([objdump, "-d", "--no-show-raw-insn", str(lib)], stdout=subprocess.PIPE,
                          stderr=subprocess.DEVNULL, text=True, errors="replace") as proc:
        for line in proc.stdout:
            if ("til" in line or "tdp" in line) and _mnemonic(line) in AMX_MNEMONICS:
                count += 1
    return count if proc.returncode == 0 else None


def _mnemonic(line: str) -> str:
    """The instruction of one ``objdump -d --no-show-raw-insn`` line.

    >>> _mnemonic("  4011a6:\\tldtilecfg (%rax)")
    'ldtilecfg'
    >>> _mnemonic("0000000000001000 <tile_fn>:")
    ''
    """
    parts = line.split("\t")
    if len(parts) < 2 or not parts[0].rstrip().endswith(":"):
        return ""
    words = parts[-1].split()
    return words[0] if words else ""


def check_amx(label: str, lib: Path) -> CheckResult:
    name = f"AMX instructions in {label}"
    n = amx_instructions(lib)
    build_id = lib.with_name(lib.name + ".build-id")
    built = f" (built with: {build_id.read_text().strip()})" if build_id.is_file() else ""
    if n is None:
        return CheckResult(name, True, f"not counted: objdump (binutils) is missing or cannot read {lib}")
    if n:
        return CheckResult(name, False, f"{lib} holds {n} AMX instructions although the build turns "
                           f"AMX off{built}: rebuild with `{REBUILD}`")
    return CheckResult(name, True, f"none in {lib}{built}")


# --- crashes and their advice --------------------------------------------------------
def signal_name(returncode: int) -> str:
    """The name of the signal behind a negative return code.

    >>> signal_name(-11)
    'SIGSEGV'
    """
    try:
        return signal.Signals(-returncode).name
    except ValueError:
        return f"signal {-returncode}"


def crash_message(sig: str, model: str, route: str) -> str:
    """What a child killed by ``sig`` means, and what to do."""
    head = f"llama.cpp crashed with {sig} evaluating {model} through {route}"
    if sig in ("SIGSEGV", "SIGILL", "SIGBUS"):
        return (f"{head}: the build uses an instruction this CPU cannot run (on Intel Xeon VMs "
                f"that advertise AMX, AMX; see README 'CPUs'). Rebuild with `{REBUILD}` and report "
                f"the output of `{CPU_FLAGS_CMD}`.")
    if sig == "SIGKILL":
        return (f"{head}: it was killed, most often by the kernel when memory runs out. Free "
                f"memory (the 1.5B model needs about 2 GB) and run `python -m assistant canary` again.")
    if sig == "SIGABRT":
        return (f"{head}: llama.cpp stopped on an internal check (the lines below say which). "
                f"Rebuild with `{REBUILD}`; if it persists, report those lines.")
    return f"{head}. Rebuild with `{REBUILD}`; if it persists, report this message."


def _tail(text: str, n: int = LOG_TAIL_LINES) -> str:
    lines = [ln for ln in text.strip().splitlines() if ln.strip()]
    return "\n".join("      | " + ln for ln in lines[-n:])


def _with_tail(message: str, text: str) -> str:
    tail = _tail(text)
    return f"{message}\n{tail}" if tail else message


# --- the binding, in a child process -------------------------------------------------
def check_binding(model: str, gguf: Path, timeout: float = 300,
                  command: Sequence[str] | None = None) -> CheckResult:
    """Evaluate ~20 tokens and generate 4 with ``gguf`` through llama_cpp in a child.
    ``command`` (default: this Python running BINDING_CODE) gets the GGUF path appended."""
    name = f"{model} through {BINDING}"
    argv = [*(command or (sys.executable, "-c", BINDING_CODE)), str(gguf)]
    start = time.monotonic()
    try:
        proc = subprocess.run(argv, capture_output=True, text=True, errors="replace", timeout=timeout)
    except subprocess.TimeoutExpired:
        return CheckResult(name, False, f"no answer within {timeout:.0f} s: the machine may be "
                           "overloaded; run `python -m assistant canary` again when it is idle.")
    took = time.monotonic() - start
    if proc.returncode < 0:
        return CheckResult(name, False, _with_tail(
            crash_message(signal_name(proc.returncode), model, BINDING), proc.stderr))
    result = _canary_line(proc.stdout)
    if proc.returncode != 0 or result is None:
        return CheckResult(name, False, _binding_error(proc))
    usage = result["usage"]
    return CheckResult(name, True, f"{usage['prompt_tokens']} prompt tokens evaluated, "
                       f"{usage['completion_tokens']} generated in {took:.1f} s (load included)")


def _canary_line(stdout: str) -> dict | None:
    for line in reversed(stdout.splitlines()):
        if line.startswith("CANARY "):
            try:
                return json.loads(line[len("CANARY "):])
            except ValueError:
                return None
    return None


def _binding_error(proc: subprocess.CompletedProcess) -> str:
    if "No module named 'llama_cpp'" in proc.stderr:
        return "the Python binding llama_cpp is not installed: run `make setup`."
    return _with_tail(f"the Python binding failed (exit code {proc.returncode}) without an answer. "
                      f"Rebuild with `{REBUILD}`; if it persists, report the lines below.", proc.stderr)


# --- llama-server, in a child process ------------------------------------------------
def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


_NO_PROXY = urllib.request.build_opener(urllib.request.ProxyHandler({}))


def _http(url: str, key: str, timeout: float, body: dict | None = None) -> tuple[int, bytes]:
    """(status, body) of a GET, or a POST of ``body`` as JSON; OSError when nothing answers."""
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(url, data=data, headers={
        "Authorization": f"Bearer {key}", "Content-Type": "application/json"})
    try:
        with _NO_PROXY.open(req, timeout=timeout) as resp:
            return resp.status, resp.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


def _wait_healthy(proc: subprocess.Popen, base: str, key: str, deadline: float) -> bool:
    while time.monotonic() < deadline and proc.poll() is None:
        try:
            if _http(base + "/health", key, timeout=5)[0] == 200:
                return True
        except (OSError, http.client.HTTPException):
            pass  # not listening yet
        time.sleep(0.25)
    return False


def _stop(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def check_server(model: str, gguf: Path, server: Path, timeout: float = 300) -> CheckResult:
    """Start ``server`` on ``gguf`` (127.0.0.1, a free port, a random key), wait for
    /health, ask one 4-token chat completion, stop it."""
    fd, log_name = tempfile.mkstemp(prefix="docent-canary-", suffix=".log")
    log = Path(log_name)
    try:
        with os.fdopen(fd, "w") as out:
            return _run_server(model, gguf, server, timeout, out, log)
    finally:
        log.unlink(missing_ok=True)


def _run_server(model: str, gguf: Path, server: Path, timeout: float, out: TextIO,
                log: Path) -> CheckResult:
    name = f"{model} through {SERVER}"
    port, key = _free_port(), secrets.token_urlsafe(16)
    argv = [str(server), "-m", str(gguf), "--host", "127.0.0.1", "--port", str(port), "-c", "512",
            "-np", "1", "-t", str(os.cpu_count() or 1), "--api-key", key]
    start = time.monotonic()
    try:
        proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT)
    except OSError as exc:
        return CheckResult(name, False, f"cannot start {server}: {exc}. Build it with `make setup`.")
    try:
        base = f"http://127.0.0.1:{port}"
        if not _wait_healthy(proc, base, key, start + min(HEALTH_WAIT_S, timeout)):
            return _server_failure(name, model, proc, log, f"did not become ready within "
                                   f"{min(HEALTH_WAIT_S, timeout):.0f} s", grace=0)
        body = {"messages": [{"role": "user", "content": "Say hi"}], "max_tokens": 4, "temperature": 0}
        left = max(5.0, timeout - (time.monotonic() - start))
        try:
            status, raw = _http(base + "/v1/chat/completions", key, left, body)
        except (OSError, http.client.HTTPException) as exc:  # a crash mid-answer lands here
            return _server_failure(name, model, proc, log, f"dropped the request ({exc!r})")
        message = _chat_message(raw) if status == 200 else None
        if message is None:
            return _server_failure(name, model, proc, log, f"answered HTTP {status} without a "
                                   f"message: {raw[:200].decode(errors='replace')}", grace=0)
        return CheckResult(name, True, f"answered {message!r} in {time.monotonic() - start:.1f} s "
                           "(start included)")
    finally:
        _stop(proc)


def _chat_message(raw: bytes) -> str | None:
    try:
        message = json.loads(raw)["choices"][0]["message"]
    except (ValueError, KeyError, IndexError, TypeError):
        return None
    return str(message.get("content") or "") if isinstance(message, dict) else None


def _server_failure(name: str, model: str, proc: subprocess.Popen, log: Path, what: str,
                    grace: float = 5) -> CheckResult:
    """Why the server failed: its signal or exit code when it died, then its log's tail.
    ``grace``: seconds to wait for it to exit (a crash mid-request drops the socket first)."""
    try:
        rc = proc.wait(timeout=grace)
    except subprocess.TimeoutExpired:
        rc = None
    text = log.read_text(errors="replace") if log.is_file() else ""
    if rc is not None and rc < 0:
        message = crash_message(signal_name(rc), model, SERVER)
    elif rc is not None:
        message = (f"llama-server exited with code {rc} before answering. Its log ends with the "
                   f"lines below; rebuild with `{REBUILD}` if they do not say what to fix.")
    else:
        message = f"llama-server {what}. Its log ends with the lines below."
    return CheckResult(name, False, _with_tail(message, text))


# --- all together --------------------------------------------------------------------
def run_canary(models: list[tuple[str, Path]], server: Path | None, timeout: float = 300,
               progress: Callable[[str], None] | None = None,
               binding_command: Sequence[str] | None = None) -> CanaryReport:
    """Every check, each model through the binding then the server; ``timeout`` bounds each
    run. ``progress`` hears a line as each check starts."""
    say = progress or (lambda line: None)
    checks: list[CheckResult] = []
    if platform.machine().lower() in ("x86_64", "amd64"):
        libs = binding_libraries() + ([server] if server and server.is_file() else [])
        for lib in libs:
            say(f"canary: counting AMX instructions in {lib.name}…")
            checks.append(check_amx(lib.name, lib))
    if not models:
        checks.append(CheckResult("chat models", False, "no default GGUF is assembled yet: run "
                                  "`make models` (or `python -m assistant models`)."))
    if server is None:
        checks.append(CheckResult(SERVER, False, "not found next to this Python nor on PATH: "
                                  "build it with `make setup`."))
    elif not server.is_file():
        checks.append(CheckResult(SERVER, False, f"{server} does not exist: build it with "
                                  "`make setup` or give the path of a built llama-server."))
        server = None
    for model, gguf in models:
        say(f"canary: {model} through {BINDING}…")
        checks.append(check_binding(model, gguf, timeout, binding_command))
        if server is not None:
            say(f"canary: {model} through {SERVER}…")
            checks.append(check_server(model, gguf, server, timeout))
    return CanaryReport(tuple(checks))
