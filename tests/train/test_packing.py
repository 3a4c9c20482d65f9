"""Shared-prefix packing computes the same log-probs, losses and gradients as the unshared layout.

The oracle for log-probs is independent of both packers: one plain forward per
(prompt + completion) sequence, log-softmax of the full logits. The unshared layout
(score.packed_batch) is the second reference for losses and gradients, with fp32
tolerance 1e-5 throughout.
"""

from __future__ import annotations

import math
import random

import pytest

torch = pytest.importorskip("torch")

from prefdata.score import packed_batch, sequence_logps  # noqa: E402
from prefdata.train.loss_config import LossConfig, compute_loss  # noqa: E402
from prefdata.train.losses import LOSSES  # noqa: E402
from prefdata.train.packing import pair_batch, score_pairs_shared, supports_shared_prefix  # noqa: E402

TOL = dict(rtol=1e-5, atol=1e-5)

# every loss of the losses module, with a non-default hyperparameter where it has one
LOSS_CONFIGS = {"dpo": LossConfig("dpo", beta=0.3), "ipo": LossConfig("ipo", beta=0.5),
                "cdpo": LossConfig("cdpo", label_smoothing=0.2),
                "flex_dpo": LossConfig("flex_dpo", beta_chosen=0.4, beta_rejected=0.05),
                "dpo_sft": LossConfig("dpo_sft", sft_weight=0.7), "slic": LossConfig("slic", sft_weight=0.1)}


def test_every_loss_is_covered():
    assert set(LOSS_CONFIGS) == set(LOSSES)


def _llama():
    from prefdata.toy.model import ToyModelConfig, build_model

    return build_model(ToyModelConfig(hidden_size=64, num_layers=2, num_heads=2, head_dim=32,
                                      intermediate_size=128), seed=1)


def _qwen2(attn="sdpa"):
    """Grouped-query attention (4 query heads, 2 key/value heads), as Qwen2-0.5B has (14 / 2)."""
    from transformers import Qwen2Config, Qwen2ForCausalLM

    torch.manual_seed(2)
    cfg = Qwen2Config(vocab_size=101, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                      num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=512,
                      attn_implementation=attn)
    return Qwen2ForCausalLM(cfg).float()


MODELS = {"llama-sdpa": _llama, "qwen2-gqa-sdpa": _qwen2, "qwen2-eager": lambda: _qwen2("eager")}


def _pairs(n, seed=0, prompt=(1, 40), completion=(1, 25)):
    rng = random.Random(seed)

    def ids(lo, hi):
        return [rng.randrange(4, 100) for _ in range(rng.randint(lo, hi))]

    return [(ids(*prompt), ids(*completion), ids(*completion)) for _ in range(n)]


def _unshared(model, pairs, row_tokens=512):
    seqs = [(p, c) for p, c, _ in pairs] + [(p, r) for p, _, r in pairs]
    return sequence_logps(model, packed_batch(seqs, row_tokens, 0))


def _one_by_one(model, pairs):
    """Independent oracle: each sequence alone, full logits, no packing, no masks."""
    out = []
    for side in (1, 2):
        for pair in pairs:
            ids = torch.tensor([pair[0] + pair[side]])
            with torch.no_grad():
                logp = torch.log_softmax(model(input_ids=ids).logits[0, :-1].double(), -1)
            out.append(logp.gather(-1, ids[0, 1:, None]).squeeze(-1)[len(pair[0]) - 1:].sum().item())
    return torch.tensor(out, dtype=torch.float64)


def test_layout_positions_sources_and_mask_by_hand():
    # two pairs in one row: (P=2, C=1, R=2) then (P=1, C=2, R=1), then 2 padding tokens
    batch = pair_batch([([5, 6], [7], [8, 9]), ([10], [11, 12], [13])], pad_id=0, row_tokens=12,
                       width_multiple=12)
    assert batch.input_ids.tolist() == [[5, 6, 7, 8, 9, 10, 11, 12, 13, 0, 0, 0]]
    assert batch.position_ids.tolist() == [[0, 1, 2, 2, 3, 0, 1, 2, 1, 0, 1, 2]]
    # sequences: chosen 0, chosen 1, rejected 0, rejected 1
    assert batch.segment.tolist() == [0, 1, 1, 2, 2, 3]
    assert batch.targets.tolist() == [7, 11, 12, 8, 9, 13]
    assert batch.source.tolist() == [1, 5, 6, 1, 3, 5]
    assert batch.counts.tolist() == [1, 2, 2, 1]
    allowed = batch.layout.allowed()[0].int().tolist()
    assert allowed[4] == [1, 1, 0, 1, 1, 0, 0, 0, 0, 0, 0, 0]  # 2nd rejected token of pair 0
    assert allowed[7] == [0, 0, 0, 0, 0, 1, 1, 1, 0, 0, 0, 0]  # 2nd chosen token of pair 1
    assert allowed[8] == [0, 0, 0, 0, 0, 1, 0, 0, 1, 0, 0, 0]  # rejected of pair 1: prompt and itself
    assert allowed[10] == [0] * 9 + [1, 1, 0]                   # padding: its own causal block


@pytest.mark.parametrize("name", sorted(MODELS))
@pytest.mark.parametrize("row_tokens", [None, 400], ids=["one-pair-rows", "several-pairs-per-row"])
def test_log_probs_equal_the_unshared_layout_and_single_forwards(name, row_tokens):
    model = MODELS[name]()
    pairs = _pairs(9)
    batch = pair_batch(pairs, pad_id=0, row_tokens=row_tokens)
    if row_tokens:
        assert batch.input_ids.shape[0] < len(pairs)  # several pairs did share a row
    with torch.no_grad():
        shared = sequence_logps(model, batch)
        torch.testing.assert_close(shared, _unshared(model, pairs), **TOL)
    torch.testing.assert_close(shared, _one_by_one(model, pairs), **TOL)


@pytest.mark.parametrize("loss", sorted(LOSS_CONFIGS))
def test_losses_and_gradients_equal_the_unshared_layout(loss):
    model = _qwen2()
    pairs = _pairs(6, seed=3)
    ref = torch.randn(2, len(pairs), dtype=torch.float64, generator=torch.Generator().manual_seed(0)) - 40
    tokens = [torch.tensor([len(x[k]) for x in pairs]) for k in (1, 2)]
    params = [p for p in model.parameters()]
    results = []
    for logps in (lambda: _unshared(model, pairs), lambda: sequence_logps(model, pair_batch(pairs, 0, row_tokens=300))):
        sums = logps()
        n = len(pairs)
        out = compute_loss(LOSS_CONFIGS[loss], sums[:n], sums[n:], ref[0], ref[1], *tokens)
        results.append((out.losses.detach(), torch.autograd.grad(out.loss, params)))
    (losses_a, grads_a), (losses_b, grads_b) = results
    torch.testing.assert_close(losses_b, losses_a, **TOL)
    assert any(g.abs().max() > 1e-4 for g in grads_a)  # the comparison is not between zeros
    for a, b in zip(grads_a, grads_b):
        torch.testing.assert_close(b, a, **TOL)


def test_score_pairs_shared_equals_score_sequences_in_input_order():
    from prefdata.score import score_sequences

    class Tok:
        pad_token_id = 0

    model = _llama()
    pairs = _pairs(11, seed=5)
    chosen, rejected = score_pairs_shared(model, 0, pairs, batch_tokens=150)  # several groups
    flat = score_sequences(model, Tok(), [(p, c) for p, c, _ in pairs] + [(p, r) for p, _, r in pairs])
    torch.testing.assert_close(torch.tensor(chosen + rejected), torch.tensor(flat), **TOL)


def test_only_mask_taking_attention_supports_it():
    model = _llama()
    assert supports_shared_prefix(model)
    model.config._attn_implementation = "flash_attention_2"  # varlen kernels cannot share a prefix
    assert not supports_shared_prefix(model)


def test_training_and_scoring_agree_with_and_without_shared_prefix(tmp_path):
    """End to end: stored reference log-probs (scored shared, the default) equal the unshared
    layout's, and two training steps give the same weights either way, to 1e-5."""
    from prefdata.score import load_model, score_sequences
    from prefdata.train.loop import train
    from prefdata.train.report import tokenize_pairs
    from tests.train.test_loop import tiny_config, tiny_world

    ws, model_dir = tiny_world(tmp_path, n_pairs=8, n_test=2)
    stored = ws.read("pairs").to_pydict()
    model, tokenizer = load_model(model_dir, "cpu")
    data = tokenize_pairs(tokenizer, stored)
    unshared = score_sequences(model, tokenizer, list(zip(data["prompt"], data["chosen"]))
                               + list(zip(data["prompt"], data["rejected"])))
    torch.testing.assert_close(torch.tensor(stored["ref_chosen_logp"] + stored["ref_rejected_logp"]),
                               torch.tensor(unshared), **TOL)

    weights = {}
    for shared in (True, False):
        cfg = tiny_config(model_dir, max_steps=2, eval_every=0, checkpoint_every=0, heldout_prompts=0,
                          shared_prefix=shared, output_dir=str(tmp_path / f"run-{shared}"))
        result = train(ws, cfg)
        assert result["shared_prefix"] is shared
        assert result["train"][0]["loss"] == pytest.approx(math.log(2), abs=1e-5)  # policy = reference: log 2
        weights[shared] = _load(tmp_path / f"run-{shared}" / "model")
    start = _load(model_dir)
    assert max((weights[True][k] - start[k]).abs().max().item() for k in start) > 1e-4
    for k in weights[True]:
        torch.testing.assert_close(weights[True][k], weights[False][k], **TOL)


def _load(path):
    from safetensors.torch import load_file

    return load_file(str(path / "model.safetensors"))


@pytest.mark.slow
def test_flex_block_mask_forward_equals_the_dense_mask():
    """FlexAttention's BlockMask (the GPU layout without a dense mask) against the sdpa mask.
    CPU runs flex forward only (no backward on CPU); compiling it takes ~20 s."""
    pytest.importorskip("torch.nn.attention.flex_attention")
    model = _qwen2().eval()
    pairs = _pairs(5, seed=7)
    with torch.no_grad():
        dense = sequence_logps(model, pair_batch(pairs, 0, row_tokens=300))
        model.set_attn_implementation("flex_attention")
        flex = sequence_logps(model, pair_batch(pairs, 0, row_tokens=300, width_multiple=128))
    torch.testing.assert_close(flex, dense, **TOL)


def _logps_and_grads(model, batch, bf16=False):
    model.zero_grad(set_to_none=True)
    with torch.autocast("cuda", dtype=torch.bfloat16, enabled=bf16):
        sums = sequence_logps(model, batch)
    sums.sum().backward()
    return sums.detach(), [p.grad.detach().clone() for p in model.parameters()]


@pytest.mark.gpu
def test_shared_prefix_on_gpu_sdpa_and_flex_fp32_and_bf16():
    """On CUDA: the sdpa mask path and FlexAttention's BlockMask (forward and backward) against the
    unshared layout; fp32 to 1e-4 (GPU kernels reorder sums), bf16 autocast to bf16 rounding."""
    if not torch.cuda.is_available():
        pytest.skip("needs a CUDA GPU")
    torch.backends.cuda.matmul.allow_tf32 = False
    model = _qwen2().cuda()
    pairs = _pairs(8, seed=11)
    seqs = [(p, c) for p, c, _ in pairs] + [(p, r) for p, _, r in pairs]
    unshared = _logps_and_grads(model, packed_batch(seqs, 512, 0, "cuda"))
    shared = _logps_and_grads(model, pair_batch(pairs, 0, "cuda", row_tokens=300))
    torch.testing.assert_close(shared[0], unshared[0], rtol=1e-4, atol=1e-4)
    for a, b in zip(shared[1], unshared[1]):
        torch.testing.assert_close(a, b, rtol=1e-3, atol=1e-4)
    bf16_shared = _logps_and_grads(model, pair_batch(pairs, 0, "cuda"), bf16=True)[0]
    bf16_unshared = _logps_and_grads(model, packed_batch(seqs, 512, 0, "cuda"), bf16=True)[0]
    tokens = torch.tensor([len(c) for _, c in seqs], device="cuda")
    assert ((bf16_shared - bf16_unshared).abs() / tokens).max() < 0.02  # per-token, bf16 rounding
    model.set_attn_implementation("flex_attention")
    flex = _logps_and_grads(model, pair_batch(pairs, 0, "cuda", row_tokens=300, width_multiple=128))
    torch.testing.assert_close(flex[0], unshared[0], rtol=1e-4, atol=1e-4)
    for a, b in zip(flex[1], unshared[1]):
        torch.testing.assert_close(a, b, rtol=1e-3, atol=1e-4)


def test_row_width_trades_padding_against_attention_span():
    from prefdata.train.packing import row_tokens_for

    model = _llama()
    # one long segment and many about half as long: rows as wide as the longest are mostly padding
    mixed = [([5] * 60, [6] * 10, [7] * 10)] + [([5] * 25, [6] * 5, [7] * 5) for _ in range(7)]
    width = row_tokens_for(model, mixed)
    longest = pair_batch(mixed, pad_id=0)
    wider = pair_batch(mixed, pad_id=0, row_tokens=width)
    assert width > 80 and wider.input_ids.numel() < longest.input_ids.numel()
    # the chosen layout computes the same log-probs as the one-segment-per-row layout
    with torch.no_grad():
        torch.testing.assert_close(sequence_logps(model, wider), sequence_logps(model, longest), **TOL)
    # equal lengths: no padding to save, the narrowest row wins
    same = [([5] * 30, [6] * 5, [7] * 5)] * 4
    assert row_tokens_for(model, same) == 40
    # FlexAttention skips empty blocks, so the dense-mask estimate does not apply
    model.config._attn_implementation = "flex_attention"
    assert row_tokens_for(model, mixed) is None
