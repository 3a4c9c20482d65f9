"""Keep the terminal for prefdata's own lines: model-library logging goes to `WS/logs/`.

vLLM, Ray, torch, Triton and transformers log from Python, from C++ and from
worker processes (vLLM starts its engine core with `spawn`), so a Python-level
handler alone misses most of it. `library_logs` therefore works at two levels:

* file descriptors 1 and 2 point at the log file, so C/C++ output and every
  child process started meanwhile (which inherits them) write there;
* `sys.stdout` / `sys.stderr` are re-opened on copies of the terminal's
  descriptors, so prefdata's own lines (typer.echo, progress bars, the final
  error line) still reach the terminal;
* vLLM's logging config (read from the environment by every vLLM process) names
  a file handler on the same log, and Python warnings and the root logger go
  there too.

Everything is restored when the block ends. Under a test runner whose
`sys.stdout` is not the process's descriptor 1, the streams are left alone.

>>> with library_logs(Path("ws/logs"), "build") as log_path:   # doctest: +SKIP
...     run_build(...)
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import sys
import time
from pathlib import Path
from typing import Callable, Iterator

LOGS_DIR = "logs"
_FORMAT = "%(asctime)s %(levelname)s %(processName)s %(name)s: %(message)s"


def log_path(log_dir: Path, command: str) -> Path:
    return Path(log_dir) / f"{command}-{time.strftime('%Y%m%d-%H%M%S')}-{os.getpid()}.log"


def _vllm_config(path: Path, config_path: Path) -> dict[str, str]:
    """Environment for vLLM (this process and its spawned workers): log to `path` at INFO."""
    config = {
        "version": 1, "disable_existing_loggers": False,
        "formatters": {"plain": {"format": _FORMAT}},
        "handlers": {"file": {"class": "logging.FileHandler", "filename": str(path), "mode": "a",
                              "formatter": "plain", "level": "INFO"}},
        "loggers": {"vllm": {"handlers": ["file"], "level": "INFO", "propagate": False}},
    }
    config_path.write_text(json.dumps(config))
    return {"VLLM_CONFIGURE_LOGGING": "1", "VLLM_LOGGING_CONFIG_PATH": str(config_path),
            "VLLM_LOGGING_LEVEL": "INFO", "RAY_LOG_TO_STDERR": "0",
            "HF_HUB_DISABLE_PROGRESS_BARS": "1"}  # the hub's download bars are not prefdata's


def _terminal(stream, fd: int, saved: int):
    """A text stream on a copy of the terminal descriptor when `stream` writes to `fd`."""
    try:
        if stream.fileno() != fd:
            return stream
    except (AttributeError, OSError, ValueError):  # a test runner's in-memory stream
        return stream
    return open(os.dup(saved), "w", buffering=1, encoding=getattr(stream, "encoding", None) or "utf-8",
                errors=getattr(stream, "errors", None) or "backslashreplace")


def _hide_transformers_bars():
    """transformers draws its weight-loading bar on sys.stderr (the terminal here): turn it off;
    returns the function that turns it back on (None when transformers is absent)."""
    try:
        from transformers.utils import logging as hf_logging
    except ImportError:
        return None
    if not hf_logging.is_progress_bar_enabled():
        return None
    hf_logging.disable_progress_bar()
    return hf_logging.enable_progress_bar


def _log_dir(workspace: Path) -> Path:
    """`workspace/logs`, or a folder in the system's temp directory when the workspace cannot
    take it (read-only, full): the command then reports its own storage error, not the log's."""
    log_dir = workspace / LOGS_DIR
    try:
        log_dir.mkdir(parents=True, exist_ok=True)
        if os.access(log_dir, os.W_OK):
            return log_dir
    except OSError:
        pass
    import tempfile

    return Path(tempfile.gettempdir()) / "prefdata-logs"


@contextlib.contextmanager
def library_logs(log_dir: Path, command: str, *, verbose: bool = False) -> Iterator[Path | None]:
    """Send model-library output to `log_dir/<command>-<time>-<pid>.log` for the block; yields
    that path. `verbose=True` leaves everything on the terminal (yields None)."""
    if verbose:
        yield None
        return
    log_dir = Path(log_dir)
    log_dir.mkdir(parents=True, exist_ok=True)
    path = log_path(log_dir, command)
    env = _vllm_config(path, path.with_suffix(".vllm-logging.json"))
    saved_env = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    for stream in (sys.stdout, sys.stderr):
        stream.flush()
    log_fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    saved = {fd: os.dup(fd) for fd in (1, 2)}
    streams = sys.stdout, sys.stderr
    root = logging.getLogger()
    handler = logging.FileHandler(path, mode="a")
    handler.setFormatter(logging.Formatter(_FORMAT))
    root_level = root.level
    bars = None
    try:
        sys.stdout = _terminal(sys.stdout, 1, saved[1])
        sys.stderr = _terminal(sys.stderr, 2, saved[2])
        for fd in (1, 2):
            os.dup2(log_fd, fd)
        bars = _hide_transformers_bars()
        root.addHandler(handler)
        root.setLevel(min(root_level or logging.WARNING, logging.INFO))
        logging.captureWarnings(True)
        yield path
    finally:
        if bars is not None:
            bars()
        logging.captureWarnings(False)
        root.removeHandler(handler)
        root.setLevel(root_level)
        handler.close()
        for stream in (sys.stdout, sys.stderr):
            with contextlib.suppress(OSError, ValueError):
                stream.flush()
        for fd in (1, 2):
            os.dup2(saved[fd], fd)
            os.close(saved[fd])
        os.close(log_fd)
        for mine, theirs in zip((sys.stdout, sys.stderr), streams):
            if mine is not theirs:
                mine.close()
        sys.stdout, sys.stderr = streams
        for key, value in saved_env.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
        path.with_suffix(".vllm-logging.json").unlink(missing_ok=True)
        if path.exists() and path.stat().st_size == 0:  # nothing was logged: no empty file left behind
            path.unlink()


@contextlib.contextmanager
def workspace_logs(workspace: Path, command: str, *, verbose: bool = False,
                   say: Callable[[str], None] | None = None) -> Iterator[None]:
    """`library_logs` into `workspace/logs/` for a command; `say` names the log file afterwards
    when anything was logged. The workspace's own checks run first (`Workspace.create`), so a
    bad path is refused before a logs/ folder is made."""
    from prefdata.store import Workspace

    Workspace.create(workspace)
    path = None
    try:
        with library_logs(_log_dir(Path(workspace)), command, verbose=verbose) as path:
            yield
    finally:
        if say is not None and path is not None and path.exists() and path.stat().st_size:
            say(f"model-library log: {path}")
