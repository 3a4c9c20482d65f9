"""Which loss to train with: the typed :class:`LossConfig` and the one dispatch call.

The losses themselves are pure functions in :mod:`prefdata.train.losses`; this
module picks one by name, resolves its documented defaults, refuses settings the
chosen loss would ignore, and calls it (:func:`compute_loss`). TRL's
``loss_type`` names are accepted where the loss is the same (:func:`loss_name`).
"""

from __future__ import annotations

import dataclasses
import inspect
import math
from typing import TYPE_CHECKING, Any

from prefdata.train.losses import LOSSES, LossFn, LossOutput

if TYPE_CHECKING:
    from torch import Tensor


#: TRL's ``loss_type`` names of the losses that are the same here.
TRL_LOSS_TYPES = {"sigmoid": "dpo", "ipo": "ipo"}


def loss_name(name: str) -> str:
    """Our loss name for ``name``, which may be TRL's ``loss_type`` (``sigmoid`` -> ``dpo``).

    >>> loss_name("sigmoid"), loss_name("ipo"), loss_name("flex_dpo")
    ('dpo', 'ipo', 'flex_dpo')
    """
    return TRL_LOSS_TYPES.get(name, name)


def _hyperparameter_names(fn: LossFn) -> tuple[str, ...]:
    """The keyword-only parameters of a loss: its hyperparameters, named like LossConfig fields."""
    params = inspect.signature(fn).parameters.values()
    return tuple(p.name for p in params if p.kind is inspect.Parameter.KEYWORD_ONLY)


@dataclasses.dataclass(frozen=True)
class LossConfig:
    """Which loss to train with and its hyperparameters.

    ``None`` means "the loss's own documented default" (``average_log_probs``:
    True for IPO, False otherwise; ``sft_weight``: 1.0 for ``dpo_sft``, 0.0 for
    ``slic``; ``beta_chosen``/``beta_rejected``: ``beta``). Setting a field the
    chosen loss does not use is an error rather than silently ignored.

    >>> LossConfig("ipo", beta=0.5).hyperparameters()
    {'beta': 0.5, 'average_log_probs': True}
    >>> LossConfig("dpo", label_smoothing=0.1)
    Traceback (most recent call last):
    ...
    ValueError: loss 'dpo' does not use label_smoothing (used by: cdpo)
    """

    name: str = "dpo"
    beta: float = 0.1
    beta_chosen: float | None = None
    beta_rejected: float | None = None
    label_smoothing: float = 0.0
    sft_weight: float | None = None
    slic_delta: float = 1.0
    average_log_probs: bool | None = None

    def __post_init__(self) -> None:
        if self.name not in LOSSES:
            raise ValueError(f"unknown loss {self.name!r}; choose one of {sorted(LOSSES)}")
        used = _hyperparameter_names(LOSSES[self.name])
        for field in dataclasses.fields(self):
            if field.name != "name" and field.name not in used and getattr(self, field.name) != field.default:
                users = [n for n, fn in LOSSES.items() if field.name in _hyperparameter_names(fn)]
                raise ValueError(f"loss {self.name!r} does not use {field.name} (used by: {', '.join(users)})")
        for field_name in ("beta", "beta_chosen", "beta_rejected"):
            value = getattr(self, field_name)
            if value is not None and not (value > 0 and math.isfinite(value)):
                raise ValueError(f"{field_name} must be a finite number > 0, got {value}")
        if not 0.0 <= self.label_smoothing < 0.5:
            raise ValueError(f"label_smoothing must lie in [0, 0.5), got {self.label_smoothing}")
        if self.sft_weight is not None and not (self.sft_weight >= 0 and math.isfinite(self.sft_weight)):
            raise ValueError(f"sft_weight must be a finite number >= 0, got {self.sft_weight}")
        if not (self.slic_delta >= 0 and math.isfinite(self.slic_delta)):
            raise ValueError(f"slic_delta must be a finite number >= 0, got {self.slic_delta}")

    def hyperparameters(self) -> dict[str, Any]:
        """The keyword arguments the loss actually runs with, defaults resolved (for the saved config)."""
        params = inspect.signature(LOSSES[self.name]).parameters
        resolved = {}
        for name in _hyperparameter_names(LOSSES[self.name]):
            value = getattr(self, name)
            resolved[name] = params[name].default if value is None else value
        # flex_dpo's None betas mean "beta"; write the value used so the saved config is explicit
        for side in ("beta_chosen", "beta_rejected"):
            if side in resolved and resolved[side] is None:
                resolved[side] = self.beta
        return resolved


def compute_loss(
    config: LossConfig,
    policy_chosen_logps: Tensor,
    policy_rejected_logps: Tensor,
    ref_chosen_logps: Tensor,
    ref_rejected_logps: Tensor,
    chosen_tokens: Tensor | None = None,
    rejected_tokens: Tensor | None = None,
    chosen_tokens_per_pair: Tensor | float | None = None,
) -> LossOutput:
    """Run the loss ``config`` names on a batch; shapes as in :mod:`prefdata.train.losses`.

    ``chosen_tokens_per_pair``: the mean chosen length over the whole optimizer
    batch when this call sees part of it; passed on to the losses that
    normalise by a batch-wide token count (:func:`dpo_sft_loss`), so that parts
    sum to the whole. The other losses are sums of per-pair terms and ignore it.

    >>> import torch
    >>> z = torch.zeros(2)
    >>> compute_loss(LossConfig("dpo"), z, z, z, z).loss  # Δ = 0 → log 2
    tensor(0.6931)
    """
    fn = LOSSES[config.name]
    batch_wide = {}
    if chosen_tokens_per_pair is not None and "chosen_tokens_per_pair" in inspect.signature(fn).parameters:
        batch_wide["chosen_tokens_per_pair"] = chosen_tokens_per_pair
    return fn(
        policy_chosen_logps, policy_rejected_logps, ref_chosen_logps, ref_rejected_logps,
        chosen_tokens, rejected_tokens, **batch_wide, **config.hyperparameters(),
    )  # fmt: skip
