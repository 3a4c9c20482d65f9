"""Tests for prefdata.train.losses: hand-derived values, properties, and equality with TRL.

Expected numbers are computed with the `math` module from the paper equations,
never by calling the code under test. The TRL tests run TRL's own DPOTrainer
loss on a tiny random Llama and compare with our losses fed log-probs that we
compute independently from the same model and batch.
"""

from __future__ import annotations

import copy
import doctest
import math
import subprocess
import sys

import pytest
import torch

from prefdata.train import losses as L
from prefdata.train.loss_config import LossConfig, compute_loss
from prefdata.train.losses import LOSSES


def nlogsig(z: float) -> float:
    """−log σ(z), the reference value for the logistic losses."""
    return math.log1p(math.exp(-z))


def t(*xs: float) -> torch.Tensor:
    return torch.tensor(xs, dtype=torch.float32)


# Two pairs with known log-ratios: r_w = pc − rc = (1, 0), r_l = pr − rr = (−1, 1)
PC, PR, RC, RR = t(-1.0, -2.0), t(-3.0, -1.0), t(-2.0, -2.0), t(-2.0, -2.0)
NC, NR = torch.tensor([2, 4]), torch.tensor([1, 2])  # token counts


# --------------------------------------------------------------------------- hand-derived values


def test_dpo_hand_values():
    out = L.dpo_loss(PC, PR, RC, RR, beta=0.5)
    # h = r_w − r_l = (2, −1); L = −log σ(0.5·h)
    expected = [nlogsig(1.0), nlogsig(-0.5)]
    assert out.losses.tolist() == pytest.approx(expected, abs=1e-6)
    assert out.loss.item() == pytest.approx(sum(expected) / 2, abs=1e-6)
    assert out.chosen_rewards.tolist() == pytest.approx([0.5, 0.0])
    assert out.rejected_rewards.tolist() == pytest.approx([-0.5, 0.5])


def test_ipo_hand_values_length_averaged_by_default():
    out = L.ipo_loss(PC, PR, RC, RR, NC, NR, beta=0.25)
    # averaged: r_w = (1/2, 0/4), r_l = (−1/1, 1/2); h = (1.5, −0.5); 1/(2β) = 2
    expected = [(1.5 - 2.0) ** 2, (-0.5 - 2.0) ** 2]
    assert out.losses.tolist() == pytest.approx(expected, abs=1e-6)
    assert out.chosen_rewards.tolist() == pytest.approx([0.125, 0.0])
    summed = L.ipo_loss(PC, PR, RC, RR, beta=0.25, average_log_probs=False)
    assert summed.losses.tolist() == pytest.approx([(2.0 - 2.0) ** 2, (-1.0 - 2.0) ** 2], abs=1e-6)


def test_cdpo_hand_values():
    eps, beta = 0.1, 0.5
    out = L.cdpo_loss(PC, PR, RC, RR, beta=beta, label_smoothing=eps)
    expected = [(1 - eps) * nlogsig(z) + eps * nlogsig(-z) for z in (1.0, -0.5)]
    assert out.losses.tolist() == pytest.approx(expected, abs=1e-6)


def test_flex_dpo_hand_values():
    out = L.flex_dpo_loss(PC, PR, RC, RR, beta_chosen=2.0, beta_rejected=0.5)
    # z = 2·r_w − 0.5·r_l = (2 + 0.5, 0 − 0.5)
    assert out.losses.tolist() == pytest.approx([nlogsig(2.5), nlogsig(-0.5)], abs=1e-6)
    assert out.chosen_rewards.tolist() == pytest.approx([2.0, 0.0])
    assert out.rejected_rewards.tolist() == pytest.approx([-0.5, 0.5])


def test_dpo_sft_hand_values():
    alpha, beta = 0.5, 0.5
    out = L.dpo_sft_loss(PC, PR, RC, RR, NC, NR, beta=beta, sft_weight=alpha)
    # NLL = token mean over the batch's chosen tokens: −(−1 − 2) / (2 + 4) = 0.5
    dpo = [nlogsig(1.0), nlogsig(-0.5)]
    assert out.loss.item() == pytest.approx(sum(dpo) / 2 + alpha * 0.5, abs=1e-6)
    # per pair: token share, dpo_i + α·B·(−pc_i)/Σn
    assert out.losses.tolist() == pytest.approx([dpo[0] + alpha * 2 * 1 / 6, dpo[1] + alpha * 2 * 2 / 6], abs=1e-6)


def test_slic_hand_values():
    out = L.slic_loss(PC, PR, RC, RR, slic_delta=1.0)
    # max(0, 1 − (pc − pr)): pc − pr = (2, −1) → (0, 2); no reference in the loss
    assert out.losses.tolist() == pytest.approx([0.0, 2.0])
    reg = L.slic_loss(PC, PR, RC, RR, slic_delta=1.0, sft_weight=0.1)
    assert reg.losses.tolist() == pytest.approx([0.0 + 0.1 * 1.0, 2.0 + 0.1 * 2.0])
    avg = L.slic_loss(PC, PR, RC, RR, NC, NR, slic_delta=1.0, average_log_probs=True)
    # per-token: pc/nc = (−0.5, −0.5), pr/nr = (−3, −0.5) → max(0, 1 − 2.5), max(0, 1 − 0)
    assert avg.losses.tolist() == pytest.approx([0.0, 1.0])


def test_dpo_gradient_matches_paper():
    pc = PC.clone().requires_grad_()
    pr = PR.clone().requires_grad_()
    beta = 0.5
    L.dpo_loss(pc, pr, RC, RR, beta=beta).loss.backward()
    # ∂L/∂log π(y_w) = −β·σ(−βh)/B and ∂L/∂log π(y_l) = +β·σ(−βh)/B (Rafailov et al., §4)
    sig = [1 / (1 + math.exp(z)) for z in (1.0, -0.5)]
    assert pc.grad.tolist() == pytest.approx([-beta * s / 2 for s in sig], abs=1e-6)
    assert pr.grad.tolist() == pytest.approx([beta * s / 2 for s in sig], abs=1e-6)


# --------------------------------------------------------------------------- properties


def random_batch(seed: int = 0, b: int = 5):
    g = torch.Generator().manual_seed(seed)
    logps = [-torch.rand(b, generator=g) * 20 for _ in range(4)]
    tokens = [torch.randint(1, 12, (b,), generator=g) for _ in range(2)]
    return (*logps, *tokens)


def test_flex_with_equal_betas_is_dpo():
    batch = random_batch()
    dpo = L.dpo_loss(*batch, beta=0.3)
    for flex in (
        L.flex_dpo_loss(*batch, beta_chosen=0.3, beta_rejected=0.3),
        L.flex_dpo_loss(*batch, beta=0.3),  # None falls back to beta
    ):
        torch.testing.assert_close(flex.losses, dpo.losses)
        torch.testing.assert_close(flex.chosen_rewards, dpo.chosen_rewards)


def test_cdpo_zero_smoothing_is_dpo_and_sft_zero_weight_is_dpo():
    batch = random_batch(1)
    dpo = L.dpo_loss(*batch, beta=0.2)
    torch.testing.assert_close(L.cdpo_loss(*batch, beta=0.2, label_smoothing=0.0).losses, dpo.losses)
    torch.testing.assert_close(L.dpo_sft_loss(*batch, beta=0.2, sft_weight=0.0).losses, dpo.losses)


def test_averaging_with_single_token_completions_is_summing():
    pc, pr, rc, rr, _, _ = random_batch(2)
    ones = torch.ones(5, dtype=torch.long)
    for fn in LOSSES.values():
        summed = fn(pc, pr, rc, rr, ones, ones, average_log_probs=False)
        averaged = fn(pc, pr, rc, rr, ones, ones, average_log_probs=True)
        torch.testing.assert_close(summed.losses, averaged.losses)


@pytest.mark.parametrize("name", sorted(LOSSES))
def test_every_loss_has_mean_loss_detached_rewards_and_gradients(name):
    pc, pr, rc, rr, nc, nr = random_batch(3)
    pc.requires_grad_()
    pr.requires_grad_()
    # a large margin keeps SLiC's hinge active so both sides get a gradient
    out = LOSSES[name](pc, pr, rc, rr, nc, nr, **({"slic_delta": 50.0} if name == "slic" else {}))
    assert out.loss.shape == () and out.losses.shape == (5,)
    torch.testing.assert_close(out.loss, out.losses.mean())
    assert not out.chosen_rewards.requires_grad and not out.rejected_rewards.requires_grad
    out.loss.backward()
    for grad in (pc.grad, pr.grad):
        assert grad is not None and torch.isfinite(grad).all() and grad.abs().sum() > 0


def test_defaults_are_the_documented_ones():
    """Each loss called with no hyperparameters: cDPO's ε = 0 and Flex-DPO's β_c = β_r = β are
    DPO, SLiC's λ = 0 is the bare hinge with δ = 1, IPO averages, DPO+SFT's α = 1 and β = 0.1.
    (A mutation test found cDPO's default untested: every call passed label_smoothing.)"""
    pc, pr, rc, rr, nc, nr = random_batch(3)
    dpo = L.dpo_loss(pc, pr, rc, rr)
    expected_dpo = [nlogsig(0.1 * ((a - c) - (b - d))) for a, b, c, d in zip(pc, pr, rc, rr)]
    assert dpo.losses.tolist() == pytest.approx(expected_dpo, abs=1e-5)
    torch.testing.assert_close(L.cdpo_loss(pc, pr, rc, rr).losses, dpo.losses)
    torch.testing.assert_close(L.flex_dpo_loss(pc, pr, rc, rr).losses, dpo.losses)
    hinge = [max(0.0, 1.0 - a + b) for a, b in zip(pc.tolist(), pr.tolist())]
    assert L.slic_loss(pc, pr, rc, rr).losses.tolist() == pytest.approx(hinge, abs=1e-5)
    torch.testing.assert_close(L.ipo_loss(pc, pr, rc, rr, nc, nr).losses,
                               L.ipo_loss(pc, pr, rc, rr, nc, nr, average_log_probs=True).losses)
    sft = L.dpo_sft_loss(pc, pr, rc, rr, nc, nr).loss.item()
    assert sft == pytest.approx(dpo.loss.item() + (-pc.sum() / nc.sum()).item(), abs=1e-5)


# Every loss with every term switched on: a loss whose extra term sits at its default 0 would
# pass the split test below without testing that term.
ALL_TERMS = {"dpo": LossConfig("dpo", beta=0.3), "ipo": LossConfig("ipo", beta=0.3),
             "cdpo": LossConfig("cdpo", beta=0.3, label_smoothing=0.2),
             "flex_dpo": LossConfig("flex_dpo", beta_chosen=0.5, beta_rejected=0.1),
             "dpo_sft": LossConfig("dpo_sft", beta=0.3, sft_weight=0.7),
             "slic": LossConfig("slic", slic_delta=40.0, sft_weight=0.3)}


def test_all_terms_covers_every_loss():
    assert sorted(ALL_TERMS) == sorted(LOSSES)


@pytest.mark.parametrize("name", sorted(LOSSES))
@pytest.mark.parametrize("parts", [2, 4])
def test_split_batch_gives_the_whole_batch_gradient(name, parts):
    """What the loop does for gradient accumulation and for K processes: each part's per-pair
    losses, summed and divided by the whole batch's B (with the whole batch's chosen-token mean
    passed in), back-propagate the same gradient as the whole batch's mean loss."""
    pc, pr, rc, rr, nc, nr = (x.double() if x.is_floating_point() else x for x in random_batch(1, b=4))
    whole_pc, whole_pr = pc.clone().requires_grad_(), pr.clone().requires_grad_()
    compute_loss(ALL_TERMS[name], whole_pc, whole_pr, rc, rr, nc, nr).loss.backward()
    part_pc, part_pr = pc.clone().requires_grad_(), pr.clone().requires_grad_()
    per_pair = nc.double().mean()
    for idx in torch.arange(4).chunk(parts):
        out = compute_loss(ALL_TERMS[name], part_pc[idx], part_pr[idx], rc[idx], rr[idx], nc[idx], nr[idx],
                           per_pair)
        (out.losses.sum() / 4).backward()
    torch.testing.assert_close(part_pc.grad, whole_pc.grad, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(part_pr.grad, whole_pr.grad, rtol=1e-12, atol=1e-12)
    assert whole_pc.grad.abs().min() > 0  # every pair's chosen side gets a gradient


def test_dpo_sft_micro_batch_normaliser_is_the_batch_mean():
    """The bug this guards: normalising the SFT term by each micro-batch's own token count makes
    accumulation differ from one batch (4 pairs, chosen lengths 2, 4, 6, 20)."""
    pc, pr, rc, rr = t(-3.0, -5.0, -9.0, -30.0), t(-4.0, -4.0, -4.0, -4.0), t(-3.0, -5.0, -9.0, -30.0), \
        t(-4.0, -4.0, -4.0, -4.0)
    nc, nr = torch.tensor([2, 4, 6, 20]), torch.tensor([3, 3, 3, 3])
    whole = L.dpo_sft_loss(pc, pr, rc, rr, nc, nr, sft_weight=1.0).loss.item()
    # log 2 from DPO (all margins 0) + NLL (3+5+9+30)/(2+4+6+20)
    assert whole == pytest.approx(math.log(2) + 47 / 32, abs=1e-6)
    halves = [L.dpo_sft_loss(pc[s], pr[s], rc[s], rr[s], nc[s], nr[s], 8.0, sft_weight=1.0).losses.sum().item()
              for s in (slice(0, 2), slice(2, 4))]
    assert sum(halves) / 4 == pytest.approx(whole, abs=1e-6)
    own = [L.dpo_sft_loss(pc[s], pr[s], rc[s], rr[s], nc[s], nr[s], sft_weight=1.0).losses.sum().item()
           for s in (slice(0, 2), slice(2, 4))]
    # each half's own token mean instead: log 2 + (8/6 + 39/26)/2 = log 2 + 1.4167, not 1.4688
    assert sum(own) / 4 == pytest.approx(math.log(2) + (8 / 6 + 39 / 26) / 2, abs=1e-6)


def test_input_errors():
    with pytest.raises(ValueError, match="token counts"):
        L.ipo_loss(PC, PR, RC, RR)  # averaging by default needs counts
    with pytest.raises(ValueError, match="chosen token counts"):
        L.dpo_sft_loss(PC, PR, RC, RR)
    with pytest.raises(ValueError, match="shape"):
        L.dpo_loss(PC, PR, RC, t(0.0))


def test_docstring_examples():
    assert doctest.testmod(L, raise_on_error=False).failed == 0


# --------------------------------------------------------------------------- equality with TRL

BETA, EPS, ALPHA = 0.3, 0.2, 0.7


@pytest.fixture(scope="module")
def world():
    """A char tokenizer, two different random Llamas (policy, reference) and a 4-pair dataset."""
    import trl  # a dev dependency (scripts/install.sh --dev); fail, never skip, when it is missing
    from datasets import Dataset
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    vocab = {tok: i for i, tok in enumerate(["<pad>", "<eos>", "<unk>", *"abcdefghijklmnopqrstuvwxyz0123456789 +=?."])}
    tok = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Split(pattern="", behavior="isolated")  # one token per character
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=tok, eos_token="<eos>", pad_token="<pad>", unk_token="<unk>")
    config = LlamaConfig(
        vocab_size=64, hidden_size=128, intermediate_size=256, num_hidden_layers=2, num_attention_heads=2,
        num_key_value_heads=2, head_dim=64, max_position_embeddings=64, pad_token_id=0, eos_token_id=1,
        bos_token_id=1, initializer_range=0.2,  # wide init: log-ratios of several nats, not ~0
    )  # fmt: skip
    torch.manual_seed(0)
    policy = LlamaForCausalLM(config).float()
    torch.manual_seed(1)
    reference = LlamaForCausalLM(config).float().eval()
    dataset = Dataset.from_dict(
        {
            "prompt": ["1+2=", "what is 3+4?", "9+9=", "a b"],
            "chosen": ["3", "7 it is", "18", "c d e"],
            "rejected": ["4 no", "8", "19 or so", "x"],
        }
    )
    return trl, tokenizer, policy, reference, dataset


def trl_loss(world, tmp_path, indices, **dpo_args):
    """TRL's loss via DPOTrainer.compute_loss on the given pairs; also its metrics, batch and policy."""
    trl, tokenizer, policy, reference, dataset = world
    model = copy.deepcopy(policy)  # TRL patches forward; keep the fixture's models pristine
    args = trl.DPOConfig(
        output_dir=str(tmp_path), beta=BETA, report_to=[], use_cpu=True, save_strategy="no",
        bf16=False,  # TRL defaults to bf16 autocast, even on CPU; the comparison is in fp32
        per_device_train_batch_size=len(indices), **dpo_args,
    )  # fmt: skip
    trainer = trl.DPOTrainer(
        model=model, ref_model=copy.deepcopy(reference), args=args, train_dataset=dataset, processing_class=tokenizer
    )
    batch = trainer.data_collator([trainer.train_dataset[i] for i in indices])
    loss = trainer.compute_loss(trainer.model, batch)
    metrics = {k: v[-1] for k, v in trainer._metrics["train"].items()}
    return loss, metrics, batch, model


def sequence_logps(model, batch):
    """Our own log-probs: plain forward, log-softmax, completion tokens summed; (chosen, rejected) halves."""
    logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
    logp = torch.log_softmax(logits[:, :-1].float(), dim=-1)
    token_logp = logp.gather(-1, batch["input_ids"][:, 1:, None]).squeeze(-1)
    mask = batch["completion_mask"][:, 1:]
    summed, tokens = (token_logp * mask).sum(1), mask.sum(1)
    return summed.chunk(2), tokens.chunk(2)


def our_loss(world, batch, config):
    _, _, policy, reference, _ = world
    model = copy.deepcopy(policy)
    (pc, pr), (nc, nr) = sequence_logps(model, batch)
    with torch.no_grad():
        (rc, rr), _ = sequence_logps(reference, batch)
    return compute_loss(config, pc, pr, rc, rr, nc, nr), model


def relative_grad_diff(ours, theirs) -> float:
    """max |∇ours − ∇theirs| over all parameters, relative to TRL's largest gradient entry."""
    pairs = list(zip(ours.parameters(), theirs.parameters(), strict=True))
    diff = max((p.grad - q.grad).abs().max().item() for p, q in pairs)
    return diff / max(q.grad.abs().max().item() for _, q in pairs)


TRL_CASES = {
    "dpo": (dict(loss_type=["sigmoid"]), LossConfig("dpo", beta=BETA)),
    "ipo": (dict(loss_type=["ipo"]), LossConfig("ipo", beta=BETA)),
    # TRL 1.x dropped label smoothing from "sigmoid"; cDPO = 2(1−ε)·sigmoid − (1−2ε)·robust(ε), exactly
    "cdpo": (
        dict(loss_type=["sigmoid", "robust"], loss_weights=[2 * (1 - EPS), -(1 - 2 * EPS)], label_smoothing=EPS),
        LossConfig("cdpo", beta=BETA, label_smoothing=EPS),
    ),
    # TRL 1.x spells rpo_alpha=α as an added "sft" loss with weight α
    "dpo_sft": (
        dict(loss_type=["sigmoid", "sft"], loss_weights=[1.0, ALPHA]),
        LossConfig("dpo_sft", beta=BETA, sft_weight=ALPHA),
    ),
    "dpo_averaged": (dict(loss_type=["sigmoid_norm"]), LossConfig("dpo", beta=BETA, average_log_probs=True)),
}


@pytest.mark.parametrize("case", sorted(TRL_CASES))
def test_matches_trl_dpo_trainer(world, tmp_path, case):
    dpo_args, config = TRL_CASES[case]
    theirs, metrics, batch, their_model = trl_loss(world, tmp_path, [0, 1, 2, 3], **dpo_args)
    ours, our_model = our_loss(world, batch, config)
    assert abs(ours.loss.item() - theirs.item()) < 1e-5
    if not config.hyperparameters()["average_log_probs"]:  # TRL always logs summed-log-prob rewards
        assert ours.chosen_rewards.mean().item() == pytest.approx(metrics["rewards/chosen"], abs=1e-5)
        assert ours.rejected_rewards.mean().item() == pytest.approx(metrics["rewards/rejected"], abs=1e-5)
    assert abs(ours.chosen_rewards.mean().item()) > 1e-2  # the test would be vacuous with policy == reference
    # same gradients too: our log-prob convention (completion tokens, summed) is TRL's
    theirs.backward()
    ours.loss.backward()
    assert relative_grad_diff(our_model, their_model) < 1e-5


def test_cdpo_matches_trl_aot_per_pair(world, tmp_path):
    # TRL's "aot" computes −(1−ε)·log σ(βΔ) − ε·log σ(−βΔ) after sorting Δ over the batch; a batch of one
    # pair makes the sort the identity, so pair by pair it is TRL's own cDPO formula.
    config = LossConfig("cdpo", beta=BETA, label_smoothing=EPS)
    for i in range(4):
        aot = dict(loss_type=["aot"], label_smoothing=EPS)
        theirs, _, batch, _ = trl_loss(world, tmp_path, [i], **aot)
        ours, _ = our_loss(world, batch, config)
        assert abs(ours.loss.item() - theirs.item()) < 1e-5


def test_import_does_not_load_torch():
    # the CLI imports LossConfig; `prefdata --help` must not pay for torch (DESIGN.md, style 12)
    code = "import sys, prefdata.train.loss_config; assert 'torch' not in sys.modules"
    subprocess.run([sys.executable, "-c", code], check=True)
