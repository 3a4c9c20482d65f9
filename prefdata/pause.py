"""Named pause points, for crash tests that must kill a build at a known moment.

A build announces where it is: `enter_stage` at the start of each of its steps
(ingest, generate, judge, select, finish) and `point` at a few places inside
them (the store's atomic writers: `write:<what>` once the temp file is fsynced
and not yet renamed, `wrote:<what>` once it is in place; `<what>` is the table
of a part, or the file name: `manifest.json`, `README.md`). A point's full name
is `<stage>/<point>`, e.g. `judge/write:judgments` or `finish/wrote:manifest.json`.

With ``PREFDATA_TEST_PAUSE_AT=<stage>/<point>[:<n>]`` in the environment the
process stops itself (SIGSTOP) at its n-th arrival (default: the first) at that
point, so the test, waiting for the stop, can look at the workspace and SIGKILL
it exactly there. Without the variable (always, outside tests) a point costs
one environment lookup. POSIX only, like the store's locks.
"""

from __future__ import annotations

import os
import signal

ENV = "PREFDATA_TEST_PAUSE_AT"
_stage = "start"
_arrivals: dict[str, int] = {}


def enter_stage(name: str) -> None:
    """Mark the start of a build step; also a point of its own, `<name>/begin`."""
    global _stage
    _stage = name
    point("begin")


def point(what: str) -> None:
    spec = os.environ.get(ENV)
    if not spec:
        return
    target, _, nth = spec.rpartition(":")
    if not nth.isdigit():
        target, nth = spec, "1"
    name = f"{_stage}/{what}"
    if name != target:
        return
    _arrivals[name] = _arrivals.get(name, 0) + 1
    if _arrivals[name] == int(nth):
        os.kill(os.getpid(), signal.SIGSTOP)
