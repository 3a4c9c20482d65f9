"""What to import (`ImportSpec`) and the `--map` option's parser.

Fields are prefdata's names for the columns an import needs; `--map
field=column` points a field at a column of the file when auto-detection does
not find it (e.g. `--map response=completion,prompt=question`).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from prefdata.errors import PrefdataError

KINDS = ("candidates", "pairs")
ORIGINS = ("policy", "other")
CANDIDATE_FIELDS = ("prompt", "messages", "response", "completions", "model", "reference_solution",
                    "reference_answer", "finish_reason")
PAIR_FIELDS = ("prompt", "chosen", "rejected", "chosen_score", "rejected_score")
DEFAULT_MARKER = "\n\nAssistant:"
DEFAULT_HUMAN_MARKER = "\n\nHuman:"
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.=-]{0,63}")


@dataclass(frozen=True)
class ImportSpec:
    """One `prefdata import`.

    `kind` is "candidates" (responses to judge and pair) or "pairs" (finished
    preference pairs). `mapping` is field -> file column; `ratings` names the
    score/label columns stored as judgments (default: auto-detected). `marker`
    ends the prompt of an implicit-prompt pair (chosen and rejected are whole
    dialogues); `human_marker` starts a user turn in such a dialogue.

    >>> ImportSpec("data.jsonl", "candidates", origin="policy", model_name="my-model").origin
    'policy'
    """

    path: str
    kind: str
    format: str = "auto"
    split: str = "train"
    mapping: dict = field(default_factory=dict)
    origin: str = "policy"
    model_name: str | None = None
    dataset: str | None = None
    ratings: tuple[str, ...] | None = None
    marker: str = DEFAULT_MARKER
    human_marker: str = DEFAULT_HUMAN_MARKER
    source_name: str | None = None

    def __post_init__(self):
        if self.kind not in KINDS:
            raise PrefdataError(f"unknown import kind {self.kind!r}", "use --as candidates or --as pairs")
        allowed = CANDIDATE_FIELDS if self.kind == "candidates" else PAIR_FIELDS
        unknown = sorted(set(self.mapping) - set(allowed))
        if unknown:
            raise PrefdataError(f"--map names unknown field(s) {unknown} for --as {self.kind}",
                                f"map these fields: {', '.join(allowed)}")
        if self.kind == "candidates" and self.origin not in ORIGINS:
            raise PrefdataError(f"--origin {self.origin!r} is not allowed",
                                "use --origin policy (the model you will train) or --origin other")
        if self.kind == "pairs":
            if not self.dataset or not _NAME.fullmatch(self.dataset):
                raise PrefdataError(f"dataset name {self.dataset!r} is not allowed for imported pairs",
                                    "pass --dataset NAME (letters, digits and . _ - =, at most 64 characters)")
        if not self.marker:
            raise PrefdataError("--marker is empty", "give the text that ends the prompt, e.g. '\\n\\nAssistant:'")


def parse_map(text: str | None) -> dict[str, str]:
    """`"response=completion,prompt=question"` -> `{"response": "completion", "prompt": "question"}`.

    >>> parse_map("response=completion, prompt=question")
    {'response': 'completion', 'prompt': 'question'}
    """
    if not text:
        return {}
    out: dict[str, str] = {}
    for item in text.split(","):
        name, sep, column = item.partition("=")
        name, column = name.strip(), column.strip()
        if not sep or not name or not column:
            raise PrefdataError(f"--map item {item.strip()!r} is not FIELD=COLUMN",
                                "e.g. --map response=completion,prompt=question")
        if name in out:
            raise PrefdataError(f"--map gives field {name!r} twice", "map each field once")
        out[name] = column
    return out
