"""Typed, frozen configuration of a training run.

One `TrainConfig` fully describes a run; it is saved as `config.json` beside
the run's outputs, and a resumed run must be given the same one (fields that
only say *how often* to log or save may differ).

>>> from prefdata.train.loss_config import LossConfig
>>> cfg = TrainConfig(dataset="scenario2", model_path="prefdata/toy/weights/policy",
...                   loss=LossConfig("ipo", beta=0.5), lr=1e-4, max_steps=50)
>>> cfg.run_name
'scenario2-ipo'
>>> cfg.pairs_per_step
8
"""

from __future__ import annotations

import dataclasses
import json
import math
from dataclasses import dataclass, field
from pathlib import Path

from prefdata.errors import PrefdataError
from prefdata.fields import at_least, between, check_value
from prefdata.train.loss_config import LossConfig

SCHEDULES = ("constant", "cosine", "linear")

# Fields that may change between a run and its resumption without changing the result.
RESUMABLE_CHANGES = frozenset({"resume", "checkpoint_every", "keep_checkpoints", "eval_every",
                               "device", "output_dir", "eval_batch_tokens", "generate_batch"})


@dataclass(frozen=True)
class TrainConfig:
    """A DPO-family training run over one dataset of the pairs table.

    dataset         the pairs' `dataset` value (scenario1..scenario4 or a mix name)
    model_path      the model to train; must be the model that scored the pairs
                    (DPO's reference is the initial policy; checked by hash)
    reference_path  the model that scored the pairs when it is not `model_path` (iterative
                    DPO keeping the base policy as reference while training a later round's model)
    loss            which loss and its hyperparameters (`prefdata.train.losses`)
    lr, warmup_steps, schedule
                    AdamW peak learning rate, linear warm-up, then constant / cosine / linear decay to 0
    epochs, max_steps
                    passes over the pairs; `max_steps` (optimizer steps), when set, wins
    batch_size      pairs per micro-batch (one forward/backward)
    grad_accum      micro-batches per optimizer step; pairs per step = batch_size * grad_accum
    max_length      prompt + completion tokens; longer pairs are left out (and counted),
                    because truncating them would no longer match their stored reference log-probs
    bf16            bf16 autocast (GPU only); None = on when a GPU is used
    checkpoint_every  optimizer steps between resumable checkpoints (0 = only at the end)
    eval_every      optimizer steps between measurements of the eval subset and the gradient probe
    eval_pairs, probe_pairs
                    fixed subset of pairs whose log-probs are tracked; pairs in the gradient probe
    heldout_responses, heldout_prompts
                    unpaired responses for the dispersion measure; held-out prompts for accuracy
    generate_batch  held-out prompts decoded together for accuracy (a small model on CPU is
                    fastest with all of them at once; a large one needs memory per sequence)
    shared_prefix   compute each pair's prompt once: prompt | chosen | rejected as one packed segment,
                    rejected hidden from chosen by the attention mask (prefdata.train.packing); used
                    where the model's attention takes such a mask (sdpa, eager, flex), else ignored.
                    Same log-probs and gradients as the unshared layout up to float rounding
    output_dir      default WORKSPACE/runs/<dataset>-<loss>
    """

    dataset: str
    model_path: str
    loss: LossConfig = field(default_factory=LossConfig)
    reference_path: str | None = None
    lr: float = 5e-6
    warmup_steps: int = 0
    schedule: str = "constant"
    weight_decay: float = 0.0
    max_grad_norm: float | None = 1.0
    epochs: int = 1
    max_steps: int | None = None
    batch_size: int = 8
    grad_accum: int = 1
    max_length: int = 1024
    bf16: bool | None = None
    gradient_checkpointing: bool = False
    seed: int = 0
    checkpoint_every: int = 50
    keep_checkpoints: int = 2
    eval_every: int = 10
    eval_pairs: int = 64
    probe_pairs: int = 8
    heldout_responses: int = 64
    heldout_prompts: int = 64
    max_new_tokens: int = 128
    eval_batch_tokens: int = 4096
    generate_batch: int = 32
    chunk_positions: int = 1024
    shared_prefix: bool = True
    device: str | None = None
    output_dir: str | None = None
    resume: bool = True

    def __post_init__(self):
        if isinstance(self.loss, dict):  # from JSON/TOML
            object.__setattr__(self, "loss", LossConfig(**self.loss))
        for name in ("model_path", "reference_path", "output_dir"):  # Paths become str so the saved config is JSON
            if getattr(self, name) is not None:
                object.__setattr__(self, name, str(getattr(self, name)))
        for name in ("batch_size", "grad_accum", "epochs", "max_length", "probe_pairs", "chunk_positions",
                     "eval_batch_tokens", "generate_batch"):
            _check(getattr(self, name) >= 1, f"{name}={getattr(self, name)}", f"use {name} >= 1")
        for name in ("warmup_steps", "checkpoint_every", "eval_every", "eval_pairs", "heldout_responses",
                     "heldout_prompts", "max_new_tokens", "keep_checkpoints"):
            _check(getattr(self, name) >= 0, f"{name}={getattr(self, name)}", f"use {name} >= 0")
        _check(math.isfinite(self.lr) and self.lr > 0, f"lr={self.lr}", "use a finite learning rate > 0")
        _check(self.max_steps is None or self.max_steps >= 1, f"max_steps={self.max_steps}", "use max_steps >= 1")
        _check(self.schedule in SCHEDULES, f"schedule={self.schedule!r}", f"use one of {', '.join(SCHEDULES)}")
        _check(self.keep_checkpoints >= 1 or self.checkpoint_every == 0, "keep_checkpoints=0",
               "keep at least one checkpoint, or set checkpoint_every=0")

    @property
    def run_name(self) -> str:
        return f"{self.dataset}-{self.loss.name}"

    @property
    def pairs_per_step(self) -> int:
        return self.batch_size * self.grad_accum

    def run_dir(self, ws) -> Path:
        return Path(self.output_dir) if self.output_dir else Path(ws.root) / "runs" / self.run_name

    def to_dict(self) -> dict:
        out = dataclasses.asdict(self)
        out["loss"] = {"name": self.loss.name, **self.loss.hyperparameters()}
        return out

    @classmethod
    def from_dict(cls, data: dict) -> "TrainConfig":
        data = dict(data)
        loss = dict(data.pop("loss", {}))
        known = {f.name for f in dataclasses.fields(LossConfig)}
        unknown = set(data) - {f.name for f in dataclasses.fields(cls)}
        _check(not unknown, f"unknown training options {sorted(unknown)}", "remove them")
        return cls(loss=LossConfig(**{k: v for k, v in loss.items() if k in known}), **data)

    def differences(self, other: "TrainConfig") -> list[str]:
        """Fields (besides the resumable ones) whose values differ: why a resume is refused."""
        mine, theirs = self.to_dict(), other.to_dict()
        return sorted(k for k in mine if k not in RESUMABLE_CHANGES and mine[k] != theirs.get(k))

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, sort_keys=True) + "\n"


# The command-line options of `prefdata train` that are TrainConfig or LossConfig numbers:
# (type, range) per option, checked before any model or workspace work.
_OPTION_RANGES = {
    "lr": (float, at_least(0, open=True)), "beta": (float, at_least(0, open=True)),
    "beta_chosen": (float, at_least(0, open=True)), "beta_rejected": (float, at_least(0, open=True)),
    "label_smoothing": (float, between(0, 0.5, hi_open=True)), "sft_weight": (float, at_least(0)),
    "epochs": (int, at_least(1)), "max_steps": (int, at_least(1)), "batch_size": (int, at_least(1)),
    "grad_accum": (int, at_least(1)), "max_length": (int, at_least(1)), "seed": (int, at_least(0)),
    "checkpoint_every": (int, at_least(0)), "eval_every": (int, at_least(0)),
}


def check_train_options(options: dict) -> None:
    """One-line errors naming the flag (`--lr`) for training numbers that are not finite or out
    of range; None means "not given"."""
    for name, value in options.items():
        if value is not None:
            tp, meta = _OPTION_RANGES[name]
            check_value(name, value, tp, meta, origin=lambda key: "--" + key.replace("_", "-"))


def _check(ok: bool, what: str, fix: str) -> None:
    if not ok:
        raise PrefdataError(f"bad training option {what}", fix)
