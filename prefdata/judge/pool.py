"""A small process pool with a hard per-item timeout.

`concurrent.futures.ProcessPoolExecutor` cannot stop one stuck task: a future's
timeout only stops the *waiting*, the worker keeps burning a core and the pool
never gets it back. Rule verification runs sympy on untrusted model output, and
some inputs (``9**9**9**9``, huge nested fractions) make it run for minutes. So
this pool runs each worker in its own process, sends it chunks of items, gets a
result back per item, and kills + respawns a worker whose current item passes
the deadline. That item's status is ``"timeout"``; the rest of its chunk is
re-queued to a fresh worker.

Workers are started with the ``spawn`` method: the parent may hold threads
(Polars, torch), and forking a threaded process can deadlock.

>>> with TimeoutPool(_echo, workers=1, timeout_s=5) as pool:  # doctest: +SKIP
...     pool.map([(1,), (2,)])
[('ok', (1,)), ('ok', (2,))]
"""

from __future__ import annotations

import multiprocessing as mp
import time
from collections import deque
from multiprocessing.connection import wait
from typing import Any, Callable, Sequence

from prefdata.errors import PrefdataError

OK, TIMEOUT, ERROR = "ok", "timeout", "error"


def _worker_main(conn, fn: Callable, initializer: Callable | None) -> None:
    # Runs in the child. Initialise before saying "ready" so slow imports
    # (math_verify + sympy take ~2 s) never count against an item's deadline.
    if initializer is not None:
        try:
            initializer()
        except BaseException as err:  # noqa: BLE001 - told to the parent, which gives up after a few
            conn.send(("start_error", None, f"{type(err).__name__}: {err}"))
            return
    conn.send(("ready", None, None))
    while True:
        try:
            job = conn.recv()
        except EOFError:
            return
        if job is None:
            return
        for index, args in job:
            try:
                conn.send((OK, index, fn(*args)))
            except Exception as err:  # noqa: BLE001 - reported per item, the worker lives on
                conn.send((ERROR, index, f"{type(err).__name__}: {err}"))


class _Worker:
    def __init__(self, ctx, fn, initializer):
        self.conn, child = ctx.Pipe(duplex=True)
        self.proc = ctx.Process(target=_worker_main, args=(child, fn, initializer), daemon=True)
        self.proc.start()
        child.close()
        self.ready = False
        self.pending: deque[tuple[int, tuple]] = deque()  # sent, no result yet; [0] is running
        self.since = time.monotonic()  # when the running item started (or spawn time)

    def kill(self) -> None:
        if self.proc.is_alive():
            self.proc.kill()
        self.proc.join(timeout=5)
        self.conn.close()


class TimeoutPool:
    """Run ``fn(*args)`` for many ``args`` in worker processes with a per-item timeout.

    ``map`` returns one ``(status, value)`` per input, in input order: ``("ok", result)``,
    ``("timeout", None)`` or ``("error", message)``. ``start_timeout_s`` bounds a worker's
    start-up (imports). A worker that dies, fails or times out before it is ready is replaced,
    but after ``max_start_failures`` such starts in a row (no worker ready in between) the pool
    gives up with a one-line `PrefdataError` saying why the last one failed: a broken
    environment would otherwise respawn workers forever.
    """

    def __init__(self, fn: Callable, workers: int = 2, timeout_s: float = 5.0,
                 chunk_size: int = 32, initializer: Callable | None = None,
                 start_timeout_s: float = 120.0, max_start_failures: int = 3, name: str = "worker pool"):
        if workers < 1 or timeout_s <= 0 or chunk_size < 1:
            raise ValueError("workers, timeout_s and chunk_size must be positive")
        self.fn, self.initializer = fn, initializer
        self.n_workers, self.timeout_s, self.chunk_size = workers, timeout_s, chunk_size
        self.start_timeout_s = start_timeout_s
        self.max_start_failures, self.name = max_start_failures, name
        self.start_failures = 0  # failed starts since a worker was last ready
        self._ctx = mp.get_context("spawn")
        self._workers: list[_Worker] = []
        self.timeouts = 0  # items killed for running past the deadline, over the pool's life

    def __enter__(self) -> "TimeoutPool":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        for worker in self._workers:
            try:
                worker.conn.send(None)
            except (OSError, BrokenPipeError):
                pass
        for worker in self._workers:
            worker.proc.join(timeout=2)
            worker.kill()
        self._workers = []

    def _spawn(self) -> _Worker:
        return _Worker(self._ctx, self.fn, self.initializer)

    def map(self, arg_list: Sequence[tuple]) -> list[tuple[str, Any]]:
        results: list[tuple[str, Any] | None] = [None] * len(arg_list)
        queue: deque[tuple[int, tuple]] = deque(enumerate(arg_list))
        while len(self._workers) < min(self.n_workers, max(1, len(arg_list))):
            self._workers.append(self._spawn())
        remaining = len(arg_list)
        while remaining:
            now = time.monotonic()
            for worker in self._workers:  # hand out work to idle, ready workers
                if worker.ready and not worker.pending and queue:
                    chunk = [queue.popleft() for _ in range(min(self.chunk_size, len(queue)))]
                    worker.pending.extend(chunk)
                    worker.conn.send(chunk)
                    worker.since = now
            busy = [w for w in self._workers if w.pending or not w.ready]
            if not busy:  # nothing in flight and nothing queued cannot happen while remaining > 0
                raise RuntimeError("TimeoutPool lost track of its items")
            deadlines = [w.since + (self.timeout_s if w.ready else self.start_timeout_s) for w in busy]
            ready_conns = wait([w.conn for w in busy], timeout=max(0.0, min(deadlines) - now))
            now = time.monotonic()
            for i, worker in enumerate(list(self._workers)):
                if worker.conn in ready_conns:
                    try:
                        while worker.conn.poll():
                            status, index, value = worker.conn.recv()
                            if status == "ready":
                                worker.ready, worker.since = True, now
                                self.start_failures = 0
                                continue
                            if status == "start_error":
                                self._start_failed(i, value)
                                break
                            worker.pending.popleft()
                            results[index] = (status, value)
                            remaining -= 1
                            worker.since = now  # the next item in the chunk starts now
                    except (EOFError, OSError):  # the worker died (segfault, OOM kill)
                        if not worker.ready:
                            worker.proc.join(timeout=5)
                            self._start_failed(i, f"the process died at start (exit code {worker.proc.exitcode})")
                            continue
                        remaining -= self._replace(i, ERROR, "worker process died", results, queue)
                        continue
                    if self._workers[i] is not worker:  # replaced after a failed start
                        continue
                limit = self.timeout_s if worker.ready else self.start_timeout_s
                if (worker.pending or not worker.ready) and now - worker.since >= limit:
                    if worker.ready:
                        self.timeouts += 1
                        remaining -= self._replace(i, TIMEOUT, None, results, queue)
                    else:
                        self._start_failed(i, f"not ready within start_timeout_s={self.start_timeout_s}s")
        return results  # type: ignore[return-value]

    def _start_failed(self, i: int, why: str) -> None:
        """Worker i failed before it was ready: replace it, or give up after too many in a row."""
        self._workers[i].kill()
        self.start_failures += 1
        if self.start_failures >= self.max_start_failures:
            self._workers.pop(i)
            self.close()
            raise PrefdataError(f"the {self.name} could not start a worker process: {self.start_failures} "
                                f"failed starts in a row, the last: {why}",
                                "check that the judge's packages import in a fresh Python (e.g. python -c "
                                "\"import math_verify\") and that memory and process limits allow a new process")
        self._workers[i] = self._spawn()

    def _replace(self, i: int, status: str, value: Any, results: list, queue: deque) -> int:
        """Kill worker i, give its running item `status`, re-queue the rest of its chunk."""
        worker = self._workers[i]
        worker.kill()
        done = 0
        if worker.pending:
            index, _ = worker.pending.popleft()
            results[index] = (status, value)
            done = 1
        queue.extendleft(reversed(worker.pending))
        self._workers[i] = self._spawn()
        return done
