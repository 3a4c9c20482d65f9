"""Every command in README.md and the docs runs as written, from a directory laid out like a fresh
clone (its `pipelines/`, and `../shared/data/gsm8k` beside it), on small limits where it is long.

Commands are read from the ```bash blocks, so a command added to the docs is run here too.
Left out, each for a stated reason: the install and test-suite lines (this test runs inside
them), a line that needs a model a fresh clone does not have, and the toy-weight retraining
(minutes; tests/toy covers the script). The GSM8K command runs once more on each of the other
backends (transformers, and an OpenAI-compatible `vllm serve` of the toy policy).
"""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DOCS = [ROOT / "README.md", ROOT / "docs" / "study.md", ROOT / "docs" / "toy_world.md"]
GSM8K = Path(os.environ.get("PREFDATA_GSM8K_DIR") or ROOT.parent / "shared" / "data" / "gsm8k")
NOT_RUN = {  # pattern in the command -> why it is not run here
    "scripts/install.sh": "the installation this test runs in",
    "pytest": "the test suite this test is part of",
    ".venv/bin/python": "the test suite this test is part of",
    "~/models/": "needs a model downloaded by the user",
    "prefdata.toy train": "retrains the shipped toy weights (minutes); tests/toy/test_train.py runs the script",
}
SMALL = {"--limit": "16", "--n": "4", "--m": "2", "--max-tokens": "96"}


def _shell_blocks(text: str) -> list[list[str]]:
    """The lines of each fenced block whose info string is `bash` or empty, fences paired in
    order (a ```python or ```text block is skipped whole, not mistaken for prose between two)."""
    blocks, current, inside = [], None, False
    for line in text.splitlines():
        fence = re.match(r"^\s*```(\S*)\s*$", line)
        if fence and not inside:
            inside, current = True, ([] if fence.group(1) in ("", "bash") else None)
        elif fence:
            inside = False
            if current is not None:
                blocks.append(current)
        elif inside and current is not None:
            current.append(line)
    return blocks


def doc_commands() -> list[str]:
    """The prefdata command lines of the bash blocks, in document order, trailing comments cut."""
    found = []
    for doc in DOCS:
        for block in _shell_blocks(doc.read_text()):
            for line in block:
                words = shlex.split(line, comments=True)
                while words:  # `a && b` is two commands
                    cut = words.index("&&") if "&&" in words else len(words)
                    command, words = words[:cut], words[cut + 1:]
                    if command[0] in ("prefdata", ".venv/bin/prefdata", "scripts/install.sh") \
                            or command[:3] == ["python", "-m", "prefdata.toy"]:
                        found.append(shlex.join(command))
    return found


def small(words: list[str]) -> list[str]:
    """The command with its long parts cut down: few prompts, samples and tokens, one epoch."""
    words = list(words)
    command = words[3] if words[0] == "python" else words[1]
    sizes = dict(SMALL) if command == "build" else {}
    if command == "study":
        sizes = {"--limit": "16", "--n": "4", "--m": "2", "--epochs": "1"}
    if command == "measure":
        sizes = {"--n": "8"}
    if command == "train":
        sizes = {"--max-steps": "2"}
    for flag, value in sizes.items():
        if flag in words:
            words[words.index(flag) + 1] = value
        else:
            words += [flag, value]
    return words


def run(words: list[str], cwd: Path, extra_env: dict | None = None) -> subprocess.CompletedProcess:
    if words[0] in ("prefdata", ".venv/bin/prefdata"):
        argv = [sys.executable, "-m", "prefdata.cli", *words[1:]]
    else:  # python -m prefdata.toy ...
        argv = [sys.executable, *words[1:]]
    env = {**os.environ, "PYTHONPATH": str(ROOT), **(extra_env or {})}
    return subprocess.run(argv, cwd=cwd, env=env, capture_output=True, text=True, timeout=1800)


@pytest.fixture
def clone(tmp_path) -> Path:
    """A directory shaped like a fresh clone: pipelines/ inside, ../shared/data/gsm8k beside."""
    here = tmp_path / "prefdata"
    here.mkdir()
    (here / "pipelines").symlink_to(ROOT / "pipelines")
    (tmp_path / "shared" / "data").mkdir(parents=True)
    if GSM8K.is_dir():
        (tmp_path / "shared" / "data" / "gsm8k").symlink_to(GSM8K)
    write_example_files(here)
    return here


def write_example_files(here: Path) -> None:
    """The files the README's import examples read: each `name`: followed by a ```json block is
    written as shown; pairs.parquet (described in prose, TRL's standard form) is made here."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    text = (ROOT / "README.md").read_text()
    for name, body in re.findall(r"`([\w.-]+\.jsonl?)`:\s*\n\s*```json\n(.*?)```", text, flags=re.S):
        (here / name).write_text(body)
    hh = re.search(r"implicit prompt\*\*.*?```json\n(.*?)```", text, flags=re.S)
    if hh:
        (here / "hh.jsonl").write_text(hh.group(1))
    pq.write_table(pa.table({"prompt": ["What is 2 + 3?", "What is 4 + 4?"],
                             "chosen": ["2 + 3 = 5. The answer is 5.", "4 + 4 = 8. The answer is 8."],
                             "rejected": ["The answer is 6.", "The answer is 9."]}), here / "pairs.parquet")


def test_the_docs_hold_the_commands_this_test_expects():
    commands = doc_commands()
    assert any("--source ../shared/data/gsm8k" in c for c in commands)
    assert any(c.startswith(".venv/bin/prefdata study") for c in commands)
    assert not any("my-pipeline.toml" in c for c in commands)  # a file a fresh clone does not have


@pytest.mark.slow
@pytest.mark.vllm
def test_every_doc_command_runs_as_written(clone):
    if not GSM8K.is_dir():
        pytest.fail(f"the README's GSM8K data is not at {GSM8K}; set PREFDATA_GSM8K_DIR")
    ran = []
    for line in doc_commands():
        reason = next((why for pattern, why in NOT_RUN.items() if pattern in line), None)
        if reason:
            print(f"not run ({reason}): {line}")
            continue
        words = small(shlex.split(line))
        result = run(words, clone)
        print(f"$ {shlex.join(words)}  -> exit {result.returncode}")
        assert result.returncode == 0, f"{line}\n{result.stdout[-2000:]}\n{result.stderr[-2000:]}"
        assert "Traceback" not in result.stdout + result.stderr, line
        # the terminal carries prefdata's own lines only: model-library logging went to WS/logs/
        assert not re.search(r"^(INFO|WARNING|DEBUG) \d\d-\d\d", result.stdout + result.stderr, re.M), line
        ran.append(line)
    assert len(ran) >= 10
    info = run(["prefdata", "info", "gsm"], clone).stdout
    assert "schema v1" in info


@pytest.mark.slow
def test_the_gsm8k_command_on_transformers(clone):
    """The toy models attend over 512 tokens; the longest GSM8K test prompts do not fit."""
    if not GSM8K.is_dir():
        pytest.fail(f"the README's GSM8K data is not at {GSM8K}; set PREFDATA_GSM8K_DIR")
    line = next(c for c in doc_commands() if "gsm8k" in c)
    words = small(shlex.split(line)) + ["--backend", "transformers"]
    words[words.index("--limit") + 1] = "100"  # the README's 100 prompts: one of them is too long
    words[words.index("--n") + 1] = "1"
    result = run(words, clone)
    assert result.returncode == 0, result.stderr[-2000:]
    assert "1 dropped as prompt_too_long" in result.stdout and "prompt_too_long=1" in result.stdout
