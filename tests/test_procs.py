"""Process lifetimes (prefdata.procs): a dead helper process interrupts the wait on it, and
nothing a command started outlives it. The same guarantees through the real CLI and the real
vLLM engine are in tests/generate/test_gen_engine_lifetime.py."""

from __future__ import annotations

import os
import queue
import signal
import subprocess
import sys
import time

import psutil
import pytest

from prefdata.procs import ProcessDied, descendants, stop_descendants, stop_processes, watch_processes


def test_a_process_that_dies_interrupts_a_blocking_wait_in_the_watched_block():
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    watched = [psutil.Process(child.pid)]
    start = time.monotonic()
    with pytest.raises(ProcessDied, match=rf"^the test engine process {child.pid} died"):
        with watch_processes(watched, "the test engine", poll_s=0.1):
            os.kill(child.pid, signal.SIGKILL)
            queue.Queue().get()  # blocks forever unless interrupted
    assert time.monotonic() - start < 5
    child.wait()


def test_a_watched_block_that_ends_normally_leaves_no_handler_behind():
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        with watch_processes([psutil.Process(child.pid)], "x", poll_s=0.05):
            time.sleep(0.2)
        assert signal.getsignal(signal.SIGUSR1) == signal.SIG_DFL
    finally:
        child.kill()
        child.wait()
    # The child is dead now; leaving the block must not have armed anything that fires later.
    time.sleep(0.3)


def test_stop_processes_kills_what_ignores_sigterm():
    stubborn = subprocess.Popen([sys.executable, "-c",
                                 "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); "
                                 "print('ready', flush=True); time.sleep(60)"], stdout=subprocess.PIPE)
    assert stubborn.stdout.readline().strip() == b"ready"
    target = psutil.Process(stubborn.pid)
    start = time.monotonic()
    assert stop_processes([target], grace_s=0.5) == 1
    assert not target.is_running()
    assert target.returncode == -signal.SIGKILL  # SIGTERM was ignored, so only the kill ended it
    assert time.monotonic() - start < 5


def test_stop_descendants_reaches_grandchildren():
    script = ("import subprocess, sys, time; "
              "subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(60)']); time.sleep(60)")
    child = subprocess.Popen([sys.executable, "-c", script])
    deadline = time.monotonic() + 10
    while len(descendants()) < 2 and time.monotonic() < deadline:
        time.sleep(0.05)
    tree = descendants()
    assert len(tree) >= 2
    stop_descendants(grace_s=2)
    child.wait(timeout=5)
    assert not any(p.is_running() and p.status() != psutil.STATUS_ZOMBIE for p in tree)


def test_sigterm_unwinds_the_cli_and_ends_its_children(tmp_path):
    """`prefdata` turns SIGTERM into an unwinding exit (143) that ends every process it started."""
    script = ("import subprocess, sys, time\n"
              "import prefdata.cli as cli\n"
              "@cli.app.command('sleepy')\n"
              "def sleepy():\n"
              "    subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(120)'])\n"
              "    print('ready', flush=True)\n"
              "    time.sleep(120)\n"
              "cli.main()\n")
    proc = subprocess.Popen([sys.executable, "-c", script, "sleepy"], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "ready"
    children = psutil.Process(proc.pid).children(recursive=True)
    assert children
    start = time.monotonic()
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=10) == 143
    assert time.monotonic() - start < 10
    assert "terminated; re-run the same command to resume" in proc.stderr.read()
    time.sleep(0.2)
    assert not any(c.is_running() and c.status() != psutil.STATUS_ZOMBIE for c in children)
