"""Tests for prefdata.train.loss_config: dispatch by name, resolved defaults, refused settings.

The expected values come from calling each pure loss in prefdata.train.losses
directly with the hyperparameters written out; the losses' own values are
checked against hand-derived numbers in test_losses.py.
"""

from __future__ import annotations

import doctest

import pytest
import torch

from prefdata.train import loss_config
from prefdata.train import losses as L
from prefdata.train.loss_config import LossConfig, compute_loss, loss_name
from prefdata.train.losses import LOSSES


def random_batch(seed: int, b: int = 5) -> tuple[torch.Tensor, ...]:
    """Four (b,) sequence log-probs in (-20, 0] and two (b,) token counts in [1, 11]."""
    g = torch.Generator().manual_seed(seed)
    return (*(-20 * torch.rand(4, b, generator=g)), *torch.randint(1, 12, (2, b), generator=g))


def test_config_dispatches_through_registry():
    batch = random_batch(4)
    cases = {
        LossConfig("dpo", beta=0.2): L.dpo_loss(*batch, beta=0.2),
        LossConfig("ipo", beta=0.2): L.ipo_loss(*batch, beta=0.2, average_log_probs=True),
        LossConfig("cdpo", label_smoothing=0.1): L.cdpo_loss(*batch, label_smoothing=0.1),
        LossConfig("flex_dpo", beta_rejected=0.05): L.flex_dpo_loss(*batch, beta_chosen=0.1, beta_rejected=0.05),
        LossConfig("dpo_sft"): L.dpo_sft_loss(*batch, sft_weight=1.0),
        LossConfig("slic", slic_delta=3.0, average_log_probs=True): L.slic_loss(
            *batch, slic_delta=3.0, average_log_probs=True
        ),
    }
    assert {c.name for c in cases} == set(LOSSES)
    for config, expected in cases.items():
        torch.testing.assert_close(compute_loss(config, *batch).losses, expected.losses)


def test_config_resolves_defaults_and_rejects_bad_values():
    assert LossConfig("flex_dpo", beta=0.3, beta_chosen=0.5).hyperparameters() == {
        "beta": 0.3, "beta_chosen": 0.5, "beta_rejected": 0.3, "average_log_probs": False,
    }  # fmt: skip
    assert LossConfig("slic").hyperparameters()["sft_weight"] == 0.0
    assert LossConfig("dpo_sft").hyperparameters()["sft_weight"] == 1.0
    for bad in (
        dict(name="kto"),
        dict(name="dpo", label_smoothing=0.1),  # unused by dpo: an error, not ignored
        dict(name="ipo", slic_delta=2.0),
        dict(name="dpo", beta=0.0),
        dict(name="cdpo", label_smoothing=0.5),
        dict(name="flex_dpo", beta_rejected=-1.0),
        dict(name="dpo_sft", sft_weight=-0.1),
    ):
        with pytest.raises(ValueError):
            LossConfig(**bad)
    with pytest.raises(AttributeError):
        LossConfig().beta = 1.0  # frozen


def test_trl_loss_types_map_to_the_same_loss():
    assert loss_name("sigmoid") == "dpo" and loss_name("ipo") == "ipo"
    assert loss_name("flex_dpo") == "flex_dpo"  # our own names pass through
    assert set(loss_config.TRL_LOSS_TYPES.values()) <= set(LOSSES)


def test_docstring_examples():
    assert doctest.testmod(loss_config, raise_on_error=False).failed == 0
