"""The worker processes of jobs: whether one lives, who launched it, and stopping it with
everything it started (a launcher such as torchrun starts its ranks in sessions of their
own, so signalling the launcher's process group alone would leave them running)."""
from __future__ import annotations

import os
import signal
import time
from collections.abc import Callable


def pid_alive(pid: int, worker: str = "") -> bool:
    """A live (not zombie) process whose command line runs ``worker``."""
    if pid <= 0:
        return False
    try:
        import psutil

        proc = psutil.Process(pid)
        return proc.status() != psutil.STATUS_ZOMBIE and worker in " ".join(proc.cmdline())
    except Exception:  # noqa: BLE001 - gone, or no access: not ours
        return False


def launched_me(pid: int) -> bool:
    """``pid`` is this process or one of its ancestors (the launcher that started it)."""
    if pid <= 0:
        return False
    if pid == os.getpid():
        return True
    try:
        import psutil

        return pid in {p.pid for p in psutil.Process().parents()}
    except Exception:  # noqa: BLE001 - cannot tell: not proven
        return False


def descendants(pid: int) -> list:
    """The processes ``pid`` started, at any depth (``psutil.Process`` objects, which
    refuse to signal a pid reused meanwhile)."""
    try:
        import psutil

        return psutil.Process(pid).children(recursive=True)
    except Exception:  # noqa: BLE001 - gone already
        return []


def stop_tree(pid: int, ended: Callable[[], bool], term_wait: float = 10.0,
              kill_wait: float = 5.0) -> None:
    """SIGTERM to the process group led by ``pid`` and to every process it started, then,
    if ``ended()`` is still False after ``term_wait`` seconds, SIGKILL to the same."""
    children = descendants(pid)
    for sig, wait in ((signal.SIGTERM, term_wait), (signal.SIGKILL, kill_wait)):
        leader_gone = _signal_group(pid, sig)
        _signal_each(children, sig)
        if leader_gone and not any(_alive(c) for c in children):
            return
        deadline = time.time() + wait
        while time.time() < deadline:
            if ended() and not any(_alive(c) for c in children):
                return
            time.sleep(0.1)


def _signal_group(pid: int, sig: int) -> bool:
    """Signal the group; True when it no longer exists."""
    try:
        os.killpg(pid, sig)
    except (ProcessLookupError, PermissionError):
        return True
    return False


def _signal_each(procs: list, sig: int) -> None:
    for proc in procs:
        try:
            proc.send_signal(sig)
        except Exception:  # noqa: BLE001 - already gone (or its pid reused)
            continue


def _alive(proc) -> bool:
    try:
        import psutil

        return proc.is_running() and proc.status() != psutil.STATUS_ZOMBIE
    except Exception:  # noqa: BLE001 - gone
        return False
