"""What the build's steps hand each other: the tables one build has produced so far."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

from prefdata.config import BuildConfig
from prefdata.store import Workspace


@dataclass
class BuildState:
    cfg: BuildConfig
    ws: Workspace
    log: Callable[[str], None]
    prompts: object = None            # pa.Table: this build's prompts
    work_keys: set = field(default_factory=set)  # work keys of this build's generated candidates
    scored: object = None             # pl.DataFrame: this build's candidates with verdicts
    hygiene: object = None            # prefdata.hygiene.stage.PromptHygiene: its index checks chosen texts
    pairs: dict = field(default_factory=dict)    # dataset name -> pl.DataFrame
    too_long: dict = field(default_factory=dict)  # origin -> prompt ids too long for its model's context
    summary: dict = field(default_factory=dict)
