"""Model-library output goes to WS/logs/; prefdata's own lines stay on the terminal.

Run in a child process whose stdout/stderr are pipes, as a terminal would be: C-level writes to
fd 1/2, a spawned child process, vLLM-style logging and Python warnings all land in the log file;
print() (prefdata's typer.echo) reaches the pipe.
"""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

CHILD = textwrap.dedent("""
    import logging, os, subprocess, sys, warnings
    from pathlib import Path
    from prefdata.logs import library_logs

    print("before")
    with library_logs(Path(sys.argv[1]), "build") as path:
        print("prefdata line")
        os.write(1, b"c-level stdout noise\\n")
        os.write(2, b"c-level stderr noise\\n")
        subprocess.run([sys.executable, "-c", "print('worker noise'); import os; "
                        "print(os.environ['VLLM_LOGGING_CONFIG_PATH'].endswith('.json'))"], check=True)
        logging.getLogger("ray").warning("ray noise")
        warnings.warn("library warning")
        print("log at", path.name, file=sys.stderr)
    print("after", flush=True)
    os.write(1, b"fd restored\\n")
""")


def test_library_output_goes_to_the_log_and_prefdata_lines_to_the_terminal(tmp_path):
    out = subprocess.run([sys.executable, "-c", CHILD, str(tmp_path / "logs")], capture_output=True, text=True,
                         env={"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin"}, check=True)
    assert out.stdout == "before\nprefdata line\nafter\nfd restored\n"
    assert out.stderr.startswith("log at build-") and out.stderr.count("\n") == 1
    logs = list((tmp_path / "logs").iterdir())
    assert len(logs) == 1  # the vLLM logging config beside it is removed afterwards
    text = logs[0].read_text()
    for noise in ("c-level stdout noise", "c-level stderr noise", "worker noise", "True", "ray noise",
                  "library warning"):
        assert noise in text


def test_verbose_leaves_the_terminal_alone(tmp_path):
    code = ("import os, sys; from pathlib import Path; from prefdata.logs import library_logs\n"
            "with library_logs(Path(sys.argv[1]), 'build', verbose=True) as p:\n"
            "    os.write(1, b'noise\\n'); print(p)\n")
    out = subprocess.run([sys.executable, "-c", code, str(tmp_path / "logs")], capture_output=True, text=True,
                         env={"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin"}, check=True)
    assert out.stdout == "noise\nNone\n" and not (tmp_path / "logs").exists()
