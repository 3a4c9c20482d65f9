"""Helpers for the prompt-source tests: tiny files written into tmp_path."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest


def write_jsonl(path: Path, rows: list[dict]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


GSM_ROWS = [
    {"question": "Ann has 2 apples and buys 3. How many?", "answer": "2+3=<<2+3=5>>5\n#### 5"},
    {"question": "A car costs 1,000 dollars twice. Total?", "answer": "2*1000=2000\n#### 2,000"},
    {"question": "Bob had 10 and lost 12. Balance?", "answer": "10-12=-2\n####  -2 "},
]


@pytest.fixture
def gsm_file(tmp_path: Path) -> Path:
    return write_jsonl(tmp_path / "tinygsm" / "train.jsonl", GSM_ROWS)


def gsm8k_dir() -> Path:
    """The real GSM8K files: $PREFDATA_GSM8K_DIR, else /work/shared/data/gsm8k beside the repo."""
    env = os.environ.get("PREFDATA_GSM8K_DIR")
    return Path(env) if env else (Path(__file__).parents[2] / ".." / "shared" / "data" / "gsm8k").resolve()
