"""What every judge shares: the item it judges, the verdict it returns, the protocol.

A judge is anything with a ``name``, a ``version`` and ``judge(items)``. The
(name, version) pair keys the judgments table, so changing a judge's config
(new rubric, new weights) changes its version and re-judges exactly what it
touches, while re-running the same judge skips what is already judged.

Statuses (the judgments schema): ``ok``; ``unverifiable`` (no answer found, or
the reference cannot be parsed; score is null); ``parse_error`` (the LLM judge
never produced a parsable verdict); ``timeout`` (the verifier ran out of time).
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from typing import Protocol, Sequence, runtime_checkable

STATUSES = ("ok", "unverifiable", "parse_error", "timeout")


@dataclass(frozen=True)
class JudgeItem:
    """One candidate to judge, with what a judge may need to know about its prompt."""

    candidate_id: str
    prompt_id: str
    prompt: str
    response: str
    reference_solution: str | None = None
    reference_answer: str | None = None


@dataclass(frozen=True)
class Verdict:
    score: float | None
    correct: bool | None
    status: str
    raw_output: str | None = None

    def __post_init__(self):
        if self.status not in STATUSES:
            raise ValueError(f"unknown judge status {self.status!r}")
        if self.status != "ok" and self.score is not None:
            raise ValueError("only an ok verdict carries a score")


@runtime_checkable
class Judge(Protocol):
    name: str  # "verifier" | "llm:<model>" | "rm:<model>"
    version: str  # config hash: a new version re-judges everything

    def judge(self, items: Sequence[JudgeItem]) -> list[Verdict]:
        """One verdict per item, in order."""
        ...


def config_hash(config: dict) -> str:
    """Stable 12-hex hash of a JSON-able config, used as a judge version."""
    text = json.dumps(config, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:12]
