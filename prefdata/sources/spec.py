"""What to load (`SourceSpec`) and what loading did (`SourceStats`)."""

from __future__ import annotations

from dataclasses import asdict, dataclass

FORMATS = ("auto", "jsonl", "json", "parquet", "csv", "hf")
PRESETS = ("gsm8k", "math", "chat", "plain")

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

    >>> SourceSpec("data/gsm8k", split="test", limit=10).split
    'test'
    """

    path_or_name: str
    format: str = "auto"
    split: str = "train"
    limit: int | None = None
    sample: int | None = None
    seed: int = 0
    prompt_column: str | None = None
    solution_column: str | None = None
    answer_column: str | None = None
    messages_column: str | None = None
    preset: str | None = None
    name: str | None = None
    config: str | None = None


@dataclass(frozen=True)
class SourceStats:
    """Counts from one `load_prompts` call.

    rows_read: rows in the source split; duplicates_removed: rows dropped because
    an earlier row had the same prompt_id; rows_kept: rows returned (after
    sampling and limit, so rows_kept <= rows_read - duplicates_removed).
    """

    source: str
    split: str
    format: str
    preset: str
    rows_read: int
    duplicates_removed: int
    rows_kept: int
    seconds: float

    def to_dict(self) -> dict:
        return asdict(self)
