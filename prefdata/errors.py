"""Errors a user can act on, and the exit codes the CLI gives them.

Every user-facing failure is a `PrefdataError` whose message is one line that
says what is wrong and how to fix it. The CLI prints it and exits with the
error's code; nothing else is printed (no traceback) unless PREFDATA_DEBUG=1.

Exit codes (documented in README.md):
    0  success
    1  an internal bug (a traceback is printed)
    2  bad input: a file, option, model or config the user can correct
    3  the workspace is locked by another running writer
    4  training diverged (NaN or infinite loss); last good checkpoint kept
    5  a model engine process died under the command (prefdata.procs.ProcessDied)
"""

from __future__ import annotations

EXIT_BUG = 1
EXIT_BAD_INPUT = 2
EXIT_LOCKED = 3
EXIT_DIVERGED = 4


class PrefdataError(Exception):
    """A problem the user can fix. `str(err)` is the one-line message."""

    exit_code = EXIT_BAD_INPUT

    def __init__(self, problem: str, fix: str | None = None):
        self.problem = problem.rstrip(".")
        self.fix = fix
        text = self.problem if not fix else f"{self.problem}; {fix}"
        super().__init__(" ".join(text.split()))


class WorkspaceLocked(PrefdataError):
    exit_code = EXIT_LOCKED


class TrainingDiverged(PrefdataError):
    exit_code = EXIT_DIVERGED


class BackendFailed(PrefdataError):
    """A model backend (vLLM, transformers, an endpoint) failed in a way the input did not cause:
    one line, exit 1, the traceback kept for PREFDATA_DEBUG=1."""

    exit_code = EXIT_BUG
