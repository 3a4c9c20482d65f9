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


# The published GSM8K sizes (train, test), and those of the small hand-written stand-in in
# tests/data/gsm8k (same format, our own problems) used where the real files are not there.
REAL_GSM8K_SIZES = (7473, 1319)
FIXTURE_GSM8K = Path(__file__).parents[1] / "data" / "gsm8k"
FIXTURE_GSM8K_SIZES = (12, 10)


def real_gsm8k_dir() -> Path:
    """Where the real GSM8K files are looked for: $PREFDATA_GSM8K_DIR, else ../shared/data/gsm8k
    beside the checkout."""
    env = os.environ.get("PREFDATA_GSM8K_DIR")
    return Path(env) if env else (Path(__file__).parents[2] / ".." / "shared" / "data" / "gsm8k").resolve()


def gsm8k_dir() -> Path:
    """The real GSM8K files when present, else the hand-written stand-in: never a skip."""
    real = real_gsm8k_dir()
    return real if (real / "train.jsonl").is_file() and (real / "test.jsonl").is_file() else FIXTURE_GSM8K


def gsm8k_sizes(folder: Path) -> tuple[int, int]:
    return FIXTURE_GSM8K_SIZES if folder == FIXTURE_GSM8K else REAL_GSM8K_SIZES
