"""llama.cpp's own ``llama-server`` as a supervised child process.

The chat model runs outside the web process: a native crash (a segfault, ``kill -9``,
the kernel's out-of-memory killer) ends the child, costs the answers it was writing, and
the supervisor starts it again, while the page, the API and ingestion stay up.

``ModelServer`` starts the binary on a free loopback port with an API key it generates,
waits for ``GET /health``, and restarts it with a growing pause whenever it exits
without being asked to. Its ``status()`` is what Docent's own ``/health`` reports:
``{"pid": int | None, "state": "starting" | "ready" | "down", ...}``.

LoRA adapters are loaded by the server at start (``--lora``, applied to no request
until one asks for it with ``"lora": [{"id", "scale"}]``), so switching adapters in
chat needs no reload; a new adapter restarts the server once with it added.
"""
from __future__ import annotations

import json
import logging
import os
import secrets
import socket
import subprocess
import threading
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field, replace
from pathlib import Path

from assistant.errors import BackendUnavailable

log = logging.getLogger(__name__)

STARTING, READY, DOWN = "starting", "ready", "down"
_BACKOFF_S = (1.0, 2.0, 5.0, 10.0, 30.0)  # pause before the 1st, 2nd, ... restart in a row
_STABLE_S = 60.0  # a server that ran this long resets the pause to the first one
_LOG_MAX_BYTES = 5 * 2**20


@dataclass(frozen=True)
class ServerConfig:
    """What ``llama-server`` is started with. ``n_ctx`` is each slot's context: the
    server gets ``n_ctx * parallel`` in all, so every conversation has the full window."""
    binary: Path
    model: Path
    n_ctx: int = 4096
    parallel: int = 2
    threads: int = 0  # 0: the server's own choice (all cores)
    n_gpu_layers: int = 0
    loras: tuple[Path, ...] = ()
    log_path: Path | None = None
    startup_timeout_s: float = 180.0
    extra_args: tuple[str, ...] = field(default_factory=tuple)

    def argv(self, port: int, api_key: str) -> list[str]:
        args = [str(self.binary), "-m", str(self.model), "--host", "127.0.0.1",
                "--port", str(port), "--api-key", api_key,
                "-c", str(self.n_ctx * self.parallel), "-np", str(self.parallel),
                "-ngl", str(self.n_gpu_layers), "--no-webui",
                # as llama-cpp-python runs it: flash attention was slower on 2 CPU cores,
                # and answers stay those measured in-process
                "-fa", "off"]
        if self.threads:
            args += ["-t", str(self.threads), "-tb", str(self.threads)]
        for lora in self.loras:
            args += ["--lora", str(lora)]
        if self.loras:
            args.append("--lora-init-without-apply")
        return args + list(self.extra_args)


class ModelServer:
    """Starts, watches and restarts one ``llama-server``; thread-safe."""

    def __init__(self, config: ServerConfig):
        if not config.binary.is_file():
            raise BackendUnavailable(
                f"llama-server is not built ({config.binary} is missing): run `make setup`, "
                "or set llm.backend = 'llama-cpp' to run the model inside Docent.")
        self.config = config
        self.api_key = secrets.token_hex(24)  # never starts with "-" (an option)
        self._cond = threading.Condition()
        self._proc: subprocess.Popen | None = None
        self._port: int | None = None
        self._state = DOWN
        self._stopping = False
        self._reload = False  # the next exit was asked for (new adapters): no pause
        self._thread: threading.Thread | None = None
        self.restarts = 0
        self.last_exit = ""

    # --- life cycle -----------------------------------------------------------------
    def start(self) -> None:
        """Start supervising (returns at once; ``wait_ready`` waits for the model)."""
        with self._cond:
            if self._thread is not None and self._thread.is_alive():
                return
            self._stopping = False
            self._thread = threading.Thread(target=self._supervise, name="llama-server",
                                            daemon=True)
            self._thread.start()

    def stop(self, timeout: float = 10.0) -> None:
        with self._cond:
            self._stopping = True
            proc = self._proc
            self._cond.notify_all()
        if proc is not None:
            _end(proc, timeout)
        if self._thread is not None:
            self._thread.join(timeout)
        with self._cond:
            self._state, self._proc = DOWN, None
            self._cond.notify_all()

    def wait_ready(self, timeout: float | None = None) -> str:
        """The server's base URL (``http://127.0.0.1:PORT``) once it answers; raises
        ``BackendUnavailable`` saying why after ``timeout`` seconds (default: the
        start-up timeout)."""
        self.start()
        limit = self.config.startup_timeout_s if timeout is None else timeout
        deadline = time.monotonic() + limit
        with self._cond:
            while not self._is_ready() and not self._stopping:
                left = deadline - time.monotonic()
                if left <= 0:
                    break
                self._cond.wait(min(left, 0.2))
            if self._is_ready():
                return f"http://127.0.0.1:{self._port}"
            why = f" (last exit: {self.last_exit})" if self.last_exit else ""
        raise BackendUnavailable(
            f"The model server is {self._state}{why}; it is restarted automatically: ask "
            "again in a moment. Its log: " + str(self.config.log_path or "not kept"))

    def _is_ready(self) -> bool:
        """Ready, and its process still alive (the supervisor may not have seen it die
        yet); the caller holds the lock."""
        if self._state == READY and self._proc is not None and not _alive(self._proc):
            self._state = DOWN
        return self._state == READY

    def status(self) -> dict:
        """``{"pid", "state", "restarts", "last_exit", "model"}``, for ``/health``."""
        with self._cond:
            self._is_ready()
            pid = self._proc.pid if self._proc is not None and _alive(self._proc) else None
            return {"pid": pid, "state": self._state, "restarts": self.restarts,
                    "last_exit": self.last_exit, "model": self.config.model.name}

    @property
    def pid(self) -> int | None:
        return self.status()["pid"]

    # --- adapters -------------------------------------------------------------------
    def lora_id(self, path: Path, timeout: float | None = None) -> int:
        """The server's id of the GGUF LoRA ``path``; an adapter it has not loaded yet is
        added and the server restarted once (answers being written are cut)."""
        path = Path(path).resolve()
        with self._cond:
            loras = [p.resolve() for p in self.config.loras]
            if path in loras:
                return loras.index(path)
            self.config = replace(self.config, loras=(*self.config.loras, path))
            self._reload = True
            proc = self._proc
        log.info("Restarting llama-server to load the LoRA %s", path.name)
        if proc is not None:
            _end(proc, 10.0)
        self.wait_ready(timeout)
        return len(self.config.loras) - 1

    # --- supervision ----------------------------------------------------------------
    def _supervise(self) -> None:
        failures = 0
        while True:
            with self._cond:
                if self._stopping:
                    return
                config = self.config
            started = time.monotonic()
            code = self._run_once(config)
            with self._cond:
                if self._stopping:
                    return
                asked, self._reload = self._reload, False
                self._state, self._proc = DOWN, None
                self._cond.notify_all()
            if asked:
                failures = 0
                continue
            self.last_exit = _describe_exit(code)
            self.restarts += 1
            failures = 0 if time.monotonic() - started > _STABLE_S else failures + 1
            pause = _BACKOFF_S[min(failures, len(_BACKOFF_S)) - 1] if failures else _BACKOFF_S[0]
            log.error("llama-server (%s) %s; restarting in %.0f s", config.model.name,
                      self.last_exit, pause)
            with self._cond:
                self._cond.wait_for(lambda: self._stopping, pause)

    def _run_once(self, config: ServerConfig) -> int:
        """Run the server until it exits; its exit code."""
        port = _free_port()
        out = _open_log(config.log_path)
        try:
            proc = subprocess.Popen(config.argv(port, self.api_key), stdin=subprocess.DEVNULL,
                                    stdout=out, stderr=subprocess.STDOUT,
                                    start_new_session=True, preexec_fn=_die_with_parent)
        except OSError as exc:
            self.last_exit = f"could not start: {exc}"
            return -1
        finally:
            if out is not subprocess.DEVNULL:
                out.close()
        with self._cond:
            self._proc, self._port, self._state = proc, port, STARTING
            self._cond.notify_all()
            if self._stopping:
                _end(proc, 5.0)
        log.info("llama-server pid %d on 127.0.0.1:%d (%s)", proc.pid, port, config.model.name)
        if self._await_health(proc, port, config.startup_timeout_s):
            with self._cond:
                if self._proc is proc:
                    self._state = READY
                    self._cond.notify_all()
            log.info("llama-server ready: %s", config.model.name)
        elif proc.poll() is None:
            log.error("llama-server did not answer /health within %.0f s: restarting it",
                      config.startup_timeout_s)
            _end(proc, 5.0)
        while True:  # short waits: Popen.poll() elsewhere sees nothing while one blocks
            try:
                return proc.wait(0.5)
            except subprocess.TimeoutExpired:
                continue

    def _await_health(self, proc: subprocess.Popen, port: int, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and proc.poll() is None and not self._stopping:
            if health(f"http://127.0.0.1:{port}", self.api_key):
                return True
            time.sleep(0.2)
        return False


def health(base_url: str, api_key: str = "", timeout: float = 2.0) -> bool:
    """Whether the llama-server at ``base_url`` has its model loaded (``/health`` 200)."""
    req = urllib.request.Request(base_url + "/health",
                                 headers={"Authorization": f"Bearer {api_key}"} if api_key else {})
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            body = json.loads(resp.read() or b"{}")
            return resp.status == 200 and body.get("status", "ok") == "ok"
    except (urllib.error.URLError, OSError, ValueError):
        return False


def _alive(proc: subprocess.Popen) -> bool:
    """Whether ``proc`` still runs; a killed child not yet reaped (a zombie) does not.
    ``Popen.poll`` cannot tell while another thread waits for the same child."""
    if proc.returncode is not None:
        return False
    if not os.path.isdir("/proc/self"):
        return proc.poll() is None
    try:
        with open(f"/proc/{proc.pid}/stat", encoding="ascii", errors="replace") as f:
            state = f.read().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, IndexError):
        return False
    return state not in ("Z", "X")


def _die_with_parent() -> None:
    """In the child, before exec: on Linux, have the kernel end it when Docent dies, even
    by ``kill -9``, so no orphaned server holds the model's memory."""
    import ctypes
    import signal
    import sys

    if sys.platform.startswith("linux"):
        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _open_log(path: Path | None):
    if path is None:
        return subprocess.DEVNULL
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.exists() and path.stat().st_size > _LOG_MAX_BYTES:
        path.replace(path.with_suffix(path.suffix + ".1"))
    out = path.open("ab")
    out.write(f"\n--- {time.strftime('%Y-%m-%d %H:%M:%S')} starting llama-server ---\n".encode())
    out.flush()
    return out


def _end(proc: subprocess.Popen, timeout: float) -> None:
    """Terminate ``proc``, then kill it if it does not exit within ``timeout``."""
    if proc.poll() is not None:
        return
    proc.terminate()
    try:
        proc.wait(timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(timeout)


def _describe_exit(code: int) -> str:
    """How a process ended, in words.

    >>> _describe_exit(-9)
    'was killed by signal SIGKILL'
    >>> _describe_exit(1)
    'exited with code 1'
    """
    import signal

    if code < 0:
        try:
            name = signal.Signals(-code).name
        except ValueError:
            name = str(-code)
        return f"was killed by signal {name}"
    return f"exited with code {code}"
