"""Lifetimes of the processes a command starts: none outlives it, and a dead one is noticed.

A build starts other processes: vLLM's engine core and its worker, the verifier's worker
pool, multiprocessing's helpers. Two failures follow from that unless we act:

* Python's default SIGTERM ends the process at once, without unwinding, so nothing closes
  the engine and its processes live on, holding gigabytes;
* when the engine's worker is killed from outside (the kernel's out-of-memory killer), the
  engine core waits for it forever and the build hangs holding the workspace lock.

So the CLI turns SIGTERM into an exception that unwinds like Ctrl-C (`handle_termination`),
sweeps up whatever is still alive on the way out (`stop_descendants`), and a backend that
runs a model in other processes watches them while it waits (`watch_processes`).
"""

from __future__ import annotations

import signal
import threading
from contextlib import contextmanager
from typing import Iterator

from prefdata.errors import PrefdataError

EXIT_TERMINATED = 143  # 128 + SIGTERM, what a shell reports for a process ended by it


class Terminated(BaseException):
    """Raised in the main thread on SIGTERM; a BaseException so that no `except Exception`
    swallows it on the way out."""


class ProcessDied(PrefdataError):
    """A process the command depends on (a model engine) died under it."""

    exit_code = 5

    def __init__(self, what: str, pid: int | None = None):
        who = f"process {pid}" if pid is not None else "process"
        super().__init__(f"{what} {who} died while it was working (killed from outside, for example "
                         "by the out-of-memory killer)",
                         "free memory or lower the load (max_model_len, shard size), then re-run the same "
                         "command to resume")


def _raise_terminated(signum, frame):
    raise Terminated()


def handle_termination() -> None:
    """From now on SIGTERM unwinds the main thread (closing models, releasing the lock)."""
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, _raise_terminated)


def _is_tracker(proc) -> bool:
    # multiprocessing's resource tracker exits by itself when we do, and cleans up shared
    # memory as it goes; ending it early is what makes "leaked shared_memory" warnings.
    try:
        return any("resource_tracker" in part for part in proc.cmdline())
    except Exception:
        return False


def descendants(include_trackers: bool = False) -> list:
    """Every live process below this one (children, grandchildren, ...)."""
    import psutil

    found = []
    for proc in psutil.Process().children(recursive=True):
        try:
            if proc.status() == psutil.STATUS_ZOMBIE:
                continue
        except psutil.Error:
            continue
        if include_trackers or not _is_tracker(proc):
            found.append(proc)
    return found


def stop_processes(procs: list, grace_s: float = 5.0) -> int:
    """SIGTERM `procs`, wait up to `grace_s`, SIGKILL what is left. Returns how many were alive."""
    import psutil

    alive = []
    for proc in procs:
        try:
            proc.terminate()
            alive.append(proc)
        except psutil.Error:
            pass
    _, stubborn = psutil.wait_procs(alive, timeout=grace_s)
    for proc in stubborn:
        try:
            proc.kill()
        except psutil.Error:
            pass
    psutil.wait_procs(stubborn, timeout=grace_s)
    return len(alive)


def stop_descendants(grace_s: float = 5.0) -> int:
    """End every process this one started that is still alive (the resource tracker aside)."""
    try:
        return stop_processes(descendants(), grace_s)
    except Exception:  # best effort on the way out: never mask the command's own outcome
        return 0


class _Died(BaseException):
    """Raised in the waiting thread by the watcher's signal; turned into ProcessDied."""


_watching = threading.Event()  # set while a watched block runs; a late signal is then ignored


def _raise_died(signum, frame):
    if _watching.is_set():
        raise _Died()


@contextmanager
def watch_processes(procs: list, what: str, poll_s: float = 0.5) -> Iterator[None]:
    """Within the block, if any of `procs` dies, the block is interrupted with `ProcessDied`.

    The watcher thread polls the processes and, on a death, signals the waiting thread
    (SIGUSR1), which interrupts a blocking wait (a queue, a socket) there. Only the main
    thread can take signal handlers, so elsewhere the block runs unwatched.
    """
    import psutil

    if not procs or threading.current_thread() is not threading.main_thread():
        yield
        return
    waiter = threading.get_ident()
    done = threading.Event()
    dead: list = []

    def watch() -> None:
        while not done.wait(poll_s):
            for proc in procs:
                try:
                    gone = not proc.is_running() or proc.status() == psutil.STATUS_ZOMBIE
                except psutil.Error:
                    gone = True
                if gone:
                    dead.append(proc)
                    if not done.is_set():
                        signal.pthread_kill(waiter, signal.SIGUSR1)
                    return

    previous = signal.signal(signal.SIGUSR1, _raise_died)
    watcher = threading.Thread(target=watch, name="prefdata-process-watch", daemon=True)
    _watching.set()
    watcher.start()
    try:
        yield
    except _Died:
        raise ProcessDied(what, dead[0].pid if dead else None) from None
    finally:
        _watching.clear()
        done.set()
        watcher.join(timeout=2 * poll_s + 1)  # no signal can come once the watcher has stopped
        signal.signal(signal.SIGUSR1, previous)
