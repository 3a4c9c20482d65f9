"""Preference losses as small pure functions: sequence log-probs in, loss out.

Every loss takes the same inputs, each a tensor of shape ``(B,)`` for a batch of
``B`` preference pairs ``(x, y_w, y_l)``:

- ``policy_chosen_logps``   log π_θ(y_w | x)
- ``policy_rejected_logps`` log π_θ(y_l | x)
- ``ref_chosen_logps``      log π_ref(y_w | x)
- ``ref_rejected_logps``    log π_ref(y_l | x)
- ``chosen_tokens``, ``rejected_tokens`` (optional) completion token counts |y_w|, |y_l|

The log-probs are **summed over completion tokens** (prompt tokens excluded), as
the pairs table stores them. Each loss then makes an explicit choice:

- ``average_log_probs=False`` uses the sums (the papers' sequence likelihoods);
- ``average_log_probs=True`` divides each log-prob by its token count first,
  giving the mean per-token log-prob (what TRL does for IPO).

Only IPO defaults to averaging. With r_w = log π_θ(y_w) − log π_ref(y_w) and
r_l = log π_θ(y_l) − log π_ref(y_l) (summed or averaged as chosen), every loss
returns a :class:`LossOutput`: the batch-mean ``loss`` (the scalar to
back-propagate), per-pair ``losses`` (``losses.mean() == loss``), and the
implicit rewards β·r_w and β·r_l (detached; logging only).

Loss hyperparameters are keyword-only and named exactly like the fields of
:class:`prefdata.train.loss_config.LossConfig`, so its ``compute_loss``
dispatches through the :data:`LOSSES` dict without a chain of ``if name == ...``.

torch is imported inside the functions, not at module level, so the CLI can
import the loss registry and config without paying for torch (DESIGN.md, style 12).
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Callable, NamedTuple

if TYPE_CHECKING:
    from torch import Tensor


class LossOutput(NamedTuple):
    """What every loss returns; all tensors but ``loss`` have shape ``(B,)``."""

    loss: Tensor  # () mean of ``losses``; call .backward() on this
    losses: Tensor  # (B,) per-pair loss, keeps the graph
    chosen_rewards: Tensor  # (B,) β·r_w, detached
    rejected_rewards: Tensor  # (B,) β·r_l, detached


def _per_token(logps: Tensor, tokens: Tensor | None, what: str) -> Tensor:
    """Sequence log-prob → mean per-token log-prob; empty completions count as one token."""
    if tokens is None:
        raise ValueError(f"average_log_probs=True needs {what} token counts")
    # clamp(min=1) mirrors TRL: an empty completion has log-prob 0 and must not divide by 0
    return logps / tokens.to(logps.dtype).clamp(min=1)


def _log_ratios(
    policy_chosen_logps: Tensor, policy_rejected_logps: Tensor, ref_chosen_logps: Tensor, ref_rejected_logps: Tensor,
    chosen_tokens: Tensor | None, rejected_tokens: Tensor | None, average_log_probs: bool,
) -> tuple[Tensor, Tensor]:  # fmt: skip
    """(r_w, r_l), each ``(B,)``: policy/reference log-ratios, summed or per-token averaged."""
    logps = (policy_chosen_logps, policy_rejected_logps, ref_chosen_logps, ref_rejected_logps)
    if logps[0].dim() != 1 or any(t.shape != logps[0].shape for t in logps):
        raise ValueError(f"log-probs must all have shape (B,), got {[tuple(t.shape) for t in logps]}")
    chosen = policy_chosen_logps - ref_chosen_logps
    rejected = policy_rejected_logps - ref_rejected_logps
    if average_log_probs:
        # dividing the difference equals differencing the averages; TRL uses this same order of operations
        chosen = _per_token(chosen, chosen_tokens, "chosen")
        rejected = _per_token(rejected, rejected_tokens, "rejected")
    return chosen, rejected


def _output(losses: Tensor, chosen_rewards: Tensor, rejected_rewards: Tensor) -> LossOutput:
    return LossOutput(losses.mean(), losses, chosen_rewards.detach(), rejected_rewards.detach())


def _smoothed_logistic(logits: Tensor, label_smoothing: float) -> Tensor:
    """−(1−ε)·log σ(z) − ε·log σ(−z): the logistic loss with labels flipped at rate ε."""
    from torch.nn.functional import logsigmoid

    return -(1.0 - label_smoothing) * logsigmoid(logits) - label_smoothing * logsigmoid(-logits)


# --------------------------------------------------------------------------- losses


def dpo_loss(
    policy_chosen_logps: Tensor,
    policy_rejected_logps: Tensor,
    ref_chosen_logps: Tensor,
    ref_rejected_logps: Tensor,
    chosen_tokens: Tensor | None = None,
    rejected_tokens: Tensor | None = None,
    *,
    beta: float = 0.1,
    average_log_probs: bool = False,
) -> LossOutput:
    """Sigmoid DPO (Rafailov et al. 2023, Eq. 7).

    L = −log σ(β·(r_w − r_l)),  r = log π_θ(y|x) − log π_ref(y|x)

    Shapes: four ``(B,)`` log-probs summed over completion tokens; token counts
    ``(B,)`` only needed with ``average_log_probs=True``. Default: summed
    log-probs, as in the paper and TRL ``loss_type="sigmoid"``.

    >>> import torch
    >>> out = dpo_loss(torch.tensor([-1.0]), torch.tensor([-3.0]),
    ...                torch.tensor([-2.0]), torch.tensor([-2.0]), beta=1.0)
    >>> round(out.loss.item(), 4)  # −log σ(1·((−1+2) − (−3+2))) = −log σ(2)
    0.1269
    >>> out.chosen_rewards, out.rejected_rewards
    (tensor([1.]), tensor([-1.]))
    """
    r_w, r_l = _log_ratios(policy_chosen_logps, policy_rejected_logps, ref_chosen_logps, ref_rejected_logps,
                           chosen_tokens, rejected_tokens, average_log_probs)  # fmt: skip
    return _output(_smoothed_logistic(beta * (r_w - r_l), 0.0), beta * r_w, beta * r_l)


def cdpo_loss(
    policy_chosen_logps: Tensor,
    policy_rejected_logps: Tensor,
    ref_chosen_logps: Tensor,
    ref_rejected_logps: Tensor,
    chosen_tokens: Tensor | None = None,
    rejected_tokens: Tensor | None = None,
    *,
    beta: float = 0.1,
    label_smoothing: float = 0.0,
    average_log_probs: bool = False,
) -> LossOutput:
    """Conservative DPO (Mitchell 2023, "A note on DPO with noisy preferences").

    L = −(1−ε)·log σ(β·(r_w − r_l)) − ε·log σ(−β·(r_w − r_l))

    ε = ``label_smoothing`` ∈ [0, 0.5) is the assumed rate of flipped labels;
    ε = 0 is exactly :func:`dpo_loss`. Shapes and the summed default as there.
    Earlier TRL releases computed this for ``loss_type="sigmoid"`` with
    ``label_smoothing > 0``; TRL 1.16 keeps the formula only inside its
    ``"aot"`` loss (after sorting across the batch, so equal at batch size 1).

    >>> import torch, math
    >>> out = cdpo_loss(torch.tensor([0.0]), torch.tensor([0.0]), torch.tensor([0.0]),
    ...                 torch.tensor([0.0]), label_smoothing=0.2)
    >>> math.isclose(out.loss.item(), math.log(2), rel_tol=1e-6)  # Δ = 0: both terms are log 2
    True
    """
    r_w, r_l = _log_ratios(policy_chosen_logps, policy_rejected_logps, ref_chosen_logps, ref_rejected_logps,
                           chosen_tokens, rejected_tokens, average_log_probs)  # fmt: skip
    return _output(_smoothed_logistic(beta * (r_w - r_l), label_smoothing), beta * r_w, beta * r_l)


def ipo_loss(
    policy_chosen_logps: Tensor,
    policy_rejected_logps: Tensor,
    ref_chosen_logps: Tensor,
    ref_rejected_logps: Tensor,
    chosen_tokens: Tensor | None = None,
    rejected_tokens: Tensor | None = None,
    *,
    beta: float = 0.1,
    average_log_probs: bool = True,
) -> LossOutput:
    """IPO (Azar et al. 2023, Eq. 17), β playing the role of the paper's τ.

    L = (r_w − r_l − 1/(2β))²

    Default: **length-averaged** log-probs (r divided by the token count), so
    the squared loss does not grow with completion length. The paper does not
    say so; TRL's ``loss_type="ipo"`` does it (confirmed with the IPO authors,
    per TRL's comment) and we match it. Token counts ``(B,)`` are therefore
    required unless ``average_log_probs=False``. Rewards are β times the same
    averaged log-ratios (TRL logs summed ones).

    >>> import torch
    >>> out = ipo_loss(torch.tensor([-4.0]), torch.tensor([-6.0]), torch.tensor([-6.0]),
    ...                torch.tensor([-6.0]), torch.tensor([2]), torch.tensor([3]), beta=0.5)
    >>> out.loss.item()  # r_w = 2/2 = 1, r_l = 0: (1 − 0 − 1/(2·0.5))² = 0
    0.0
    """
    r_w, r_l = _log_ratios(policy_chosen_logps, policy_rejected_logps, ref_chosen_logps, ref_rejected_logps,
                           chosen_tokens, rejected_tokens, average_log_probs)  # fmt: skip
    return _output((r_w - r_l - 1.0 / (2.0 * beta)) ** 2, beta * r_w, beta * r_l)


def flex_dpo_loss(
    policy_chosen_logps: Tensor,
    policy_rejected_logps: Tensor,
    ref_chosen_logps: Tensor,
    ref_rejected_logps: Tensor,
    chosen_tokens: Tensor | None = None,
    rejected_tokens: Tensor | None = None,
    *,
    beta: float = 0.1,
    beta_chosen: float | None = None,
    beta_rejected: float | None = None,
    average_log_probs: bool = False,
) -> LossOutput:
    """Flex-DPO, the 3D-properties paper's mitigation: one β per side.

    L = −log σ(β_c·r_w − β_r·r_l)

    DPO's gradient pushes the rejected log-prob down much faster than it lifts
    the chosen one; a smaller β_r (or larger β_c) rebalances the two. ``None``
    for either falls back to ``beta``, so β_c = β_r = β is exactly
    :func:`dpo_loss`. Rewards are β_c·r_w and β_r·r_l. Summed default.

    >>> import torch
    >>> out = flex_dpo_loss(torch.tensor([-1.0]), torch.tensor([-3.0]), torch.tensor([-2.0]),
    ...                     torch.tensor([-2.0]), beta_chosen=2.0, beta_rejected=0.5)
    >>> out.chosen_rewards, out.rejected_rewards  # 2·(−1+2), 0.5·(−3+2)
    (tensor([2.]), tensor([-0.5000]))
    """
    beta_c = beta if beta_chosen is None else beta_chosen
    beta_r = beta if beta_rejected is None else beta_rejected
    r_w, r_l = _log_ratios(policy_chosen_logps, policy_rejected_logps, ref_chosen_logps, ref_rejected_logps,
                           chosen_tokens, rejected_tokens, average_log_probs)  # fmt: skip
    return _output(_smoothed_logistic(beta_c * r_w - beta_r * r_l, 0.0), beta_c * r_w, beta_r * r_l)


def dpo_sft_loss(
    policy_chosen_logps: Tensor,
    policy_rejected_logps: Tensor,
    ref_chosen_logps: Tensor,
    ref_rejected_logps: Tensor,
    chosen_tokens: Tensor | None = None,
    rejected_tokens: Tensor | None = None,
    chosen_tokens_per_pair: Tensor | float | None = None,
    *,
    beta: float = 0.1,
    sft_weight: float = 1.0,
    average_log_probs: bool = False,
) -> LossOutput:
    """DPO plus an SFT (negative log-likelihood) term on the chosen responses.

    L = mean_i[−log σ(β·(r_w,i − r_l,i))] + α · (−Σ_i log π_θ(y_w,i) / Σ_i |y_w,i|)

    α = ``sft_weight``. This is TRL's ``rpo_alpha`` (RPO, Pang et al. 2024;
    ``loss_type=["sigmoid", "sft"], loss_weights=[1, α]`` in TRL 1.16): the
    NLL is the mean over **all chosen tokens of the batch**, so long chosen
    responses weigh more than in the paper's per-sequence normalisation.
    ``chosen_tokens`` ``(B,)`` is required for it. ``average_log_probs`` only
    affects the DPO term (summed by default).

    Per-pair ``losses`` give each pair its token share of the NLL,
    dpo_i + α·(−log π_θ(y_w,i))/t̄ with t̄ = Σ|y_w|/B the mean chosen length,
    so ``losses.mean() == loss``.

    ``chosen_tokens_per_pair`` is t̄ over the *whole optimizer batch* when this
    call sees only part of it (a micro-batch of gradient accumulation, one
    process's share): with it, the per-pair losses of the parts, summed and
    divided by the whole batch's B, equal this loss on the whole batch. Left
    ``None`` it is this batch's own mean.

    >>> import torch
    >>> z = torch.zeros(2)
    >>> out = dpo_sft_loss(torch.tensor([-3.0, -1.0]), z, z, z, torch.tensor([3, 1]), sft_weight=0.5)
    >>> round(out.loss.item() - dpo_loss(torch.tensor([-3.0, -1.0]), z, z, z).loss.item(), 4)  # 0.5·(3+1)/4
    0.5
    """
    if chosen_tokens is None:
        raise ValueError("dpo_sft_loss needs chosen token counts for its NLL term")
    dpo = dpo_loss(
        policy_chosen_logps, policy_rejected_logps, ref_chosen_logps, ref_rejected_logps,
        chosen_tokens, rejected_tokens, beta=beta, average_log_probs=average_log_probs,
    )  # fmt: skip
    # The NLL uses summed log-probs whatever average_log_probs says: the token mean is taken batch-wide below
    per_pair = chosen_tokens_per_pair
    if per_pair is None:
        per_pair = chosen_tokens.to(policy_chosen_logps.dtype).sum().clamp(min=1) / policy_chosen_logps.shape[0]
    nll = -policy_chosen_logps / per_pair
    return _output(dpo.losses + sft_weight * nll, dpo.chosen_rewards, dpo.rejected_rewards)


def slic_loss(
    policy_chosen_logps: Tensor,
    policy_rejected_logps: Tensor,
    ref_chosen_logps: Tensor,
    ref_rejected_logps: Tensor,
    chosen_tokens: Tensor | None = None,
    rejected_tokens: Tensor | None = None,
    *,
    beta: float = 0.1,
    slic_delta: float = 1.0,
    sft_weight: float = 0.0,
    average_log_probs: bool = False,
) -> LossOutput:
    """SLiC-HF calibration loss (Zhao et al. 2023, Eq. 2).

    L = max(0, δ − log π_θ(y_w|x) + log π_θ(y_l|x)) − λ·log π_θ(y_w|x)

    δ = ``slic_delta`` is the margin; λ = ``sft_weight`` the regularisation
    weight. The paper regularises towards the SFT target; in a preference
    dataset that is y_w, so λ > 0 adds a per-pair NLL on the chosen response
    (unlike :func:`dpo_sft_loss`, per pair, in the same summed/averaged
    convention as the hinge, as the equation is written). λ = 0 by default:
    the pure calibration hinge.

    The reference model does not enter the loss; the reference log-probs are
    used only for the logged rewards β·r_w and β·r_l, kept comparable across
    losses. (TRL's ``"hinge"`` is a different loss: max(0, 1 − β·(r_w − r_l)),
    a hinge on reference-adjusted log-ratios.) Summed default.

    >>> import torch
    >>> z = torch.tensor([0.0])
    >>> slic_loss(torch.tensor([-2.0]), torch.tensor([-2.5]), z, z, slic_delta=1.0).loss.item()
    0.5
    """
    r_w, r_l = _log_ratios(policy_chosen_logps, policy_rejected_logps, ref_chosen_logps, ref_rejected_logps,
                           chosen_tokens, rejected_tokens, average_log_probs)  # fmt: skip
    chosen, rejected = policy_chosen_logps, policy_rejected_logps
    if average_log_probs:
        chosen = _per_token(chosen, chosen_tokens, "chosen")
        rejected = _per_token(rejected, rejected_tokens, "rejected")
    losses = (slic_delta - chosen + rejected).clamp(min=0) - sft_weight * chosen
    return _output(losses, beta * r_w, beta * r_l)


LossFn = Callable[..., LossOutput]

#: Loss name → pure loss function. The names are the values of ``LossConfig.name``.
LOSSES: dict[str, LossFn] = {
    "dpo": dpo_loss,
    "ipo": ipo_loss,
    "cdpo": cdpo_loss,
    "flex_dpo": flex_dpo_loss,
    "dpo_sft": dpo_sft_loss,
    "slic": slic_loss,
}
