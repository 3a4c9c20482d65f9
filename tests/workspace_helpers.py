"""Helpers shared by the workspace tests: run the CLI's entry point in-process, hash a tree."""

from __future__ import annotations

import contextlib
import hashlib
import io
import sys
from pathlib import Path

from prefdata.cli import main


def cli(*args: str) -> tuple[int, str, str]:
    """Run the CLI's entry point in this process: (exit code, stdout, stderr)."""
    out, err = io.StringIO(), io.StringIO()
    argv = sys.argv
    sys.argv = ["prefdata", *args]
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            main()
        code = 0
    except SystemExit as done:
        code = done.code if isinstance(done.code, int) else (0 if done.code is None else 1)
    finally:
        sys.argv = argv
    return code, out.getvalue(), err.getvalue()


def snapshot(root: Path) -> dict[str, str]:
    """Every file and folder under root (hidden ones too), with a hash of each file's bytes."""
    found = {}
    for path in sorted(root.rglob("*")):
        rel = str(path.relative_to(root))
        found[rel] = "dir" if path.is_dir() else hashlib.sha256(path.read_bytes()).hexdigest()
    return found
