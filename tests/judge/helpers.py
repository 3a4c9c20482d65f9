"""Worker-side helpers for judge tests (importable by spawned worker processes)."""

from __future__ import annotations

import time

from prefdata.judge.verifier import check_with_math_verify


def slow_check(answer: str, reference: str):
    """Like the real check, but answers containing SLEEP hang: exercises the hard timeout."""
    if "SLEEP" in answer:
        time.sleep(60)
    if "CRASH" in answer:
        raise ValueError("boom")
    return check_with_math_verify(answer, reference)


def die_at_start() -> None:
    """A worker initializer that kills its own process before the worker is ready."""
    import os

    os._exit(3)


def fail_at_start() -> None:
    """A worker initializer that raises, as a missing package's import would."""
    raise ImportError("No module named 'math_verify_missing'")
