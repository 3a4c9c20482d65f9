"""What to load (`SourceSpec`) and what loading did (`SourceStats`)."""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass, field

from prefdata.fields import at_least, one_of

FORMATS = ("auto", "jsonl", "json", "parquet", "csv", "hf")
PRESETS = ("gsm8k", "math", "chat", "plain")
MAX_PROMPT_BYTES = 1_000_000  # default cap on one prompt (UTF-8 bytes of its text and messages)

# File names (stems) that name a split rather than a dataset: for
# `data/gsm8k/train.jsonl` the dataset is "gsm8k" and the split "train".
SPLIT_NAMES = ("train", "test", "validation", "valid", "val", "dev", "eval", "evaluation")


@dataclass(frozen=True)
class SourceSpec:
    """Where the prompts come from and how their columns map onto the prompts table.

    `path_or_name` is a file, a directory (a `save_to_disk` dataset or a folder of
    `<split>.<ext>` data files) or a Hugging Face hub id. Every column is
    auto-detected when left as None; `preset` forces a known layout.

    `sample` draws that many rows (without replacement, seeded by `seed`) after
    duplicates are removed; `limit` then keeps the first `limit` rows. Both keep
    the source order. `name` overrides the source name that goes into
    `prompt_id` (default: the dataset's directory or file stem, e.g. "gsm8k").
    `config` is the hub config name (e.g. "main" for openai/gsm8k).
    `max_prompt_bytes` caps one prompt (its text plus its chat messages, in UTF-8
    bytes): a longer row is dropped with reason `prompt_too_large` (counted in the
    stats) before anything tokenizes it, so one huge row cannot exhaust memory.

    >>> SourceSpec("data/gsm8k", split="test", limit=10).split
    'test'
    """

    path_or_name: str
    format: str = field(default="auto", metadata=one_of(*FORMATS))
    split: str = "train"
    limit: int | None = field(default=None, metadata=at_least(0))
    sample: int | None = field(default=None, metadata=at_least(0))
    seed: int = field(default=0, metadata=at_least(0))
    prompt_column: str | None = None
    solution_column: str | None = None
    answer_column: str | None = None
    messages_column: str | None = None
    preset: str | None = field(default=None, metadata=one_of(*PRESETS))
    name: str | None = None
    config: str | None = None
    max_prompt_bytes: int = field(default=MAX_PROMPT_BYTES, metadata=at_least(1))

    def __post_init__(self):
        if isinstance(self.path_or_name, os.PathLike):
            object.__setattr__(self, "path_or_name", os.fspath(self.path_or_name))
        # Values are checked against these fields where a config is built from TOML or flags
        # (`prefdata.config.build_config`); `load_prompts` checks the rest when it reads.


@dataclass(frozen=True)
class SourceStats:
    """Counts from one `load_prompts` call.

    rows_read: rows in the source split; duplicates_removed: rows dropped because
    an earlier row had the same prompt_id; too_large: rows dropped because the
    prompt exceeds max_prompt_bytes; rows_kept: rows returned (after sampling and
    limit, so rows_kept <= rows_read - too_large - duplicates_removed).
    """

    source: str
    split: str
    format: str
    preset: str
    rows_read: int
    duplicates_removed: int
    rows_kept: int
    seconds: float
    too_large: int = 0  # rows dropped as prompt_too_large (longer than max_prompt_bytes)

    def to_dict(self) -> dict:
        return asdict(self)
