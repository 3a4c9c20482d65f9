"""Shared-prefix packing: each pair's prompt goes through the model once, not twice.

The unshared layout (score.packed_batch) runs prompt+chosen and prompt+rejected as two
sequences, so every prompt token is computed twice. Here a pair is ONE segment

    prompt | chosen | rejected        positions 0..P-1 | P..P+C-1 | P..P+R-1

with the rejected positions restarting at the prompt's end, and an attention mask in
which a token attends to earlier tokens of its own segment, except that rejected tokens
never see chosen ones. Each rejected token then sees exactly prompt + its own prefix at
the positions it would have alone, so its log-prob is the unshared one (to float
rounding) while the prompt is computed once. The first rejected token is predicted from
the last prompt token, which also predicts the first chosen token. Gradients agree too:
the shared prompt activations receive the sum of both sides' gradients, as the two
copies did. Segments are packed several to a row (longest first, first fit) in rows as
wide as the longest segment of the batch, or as `row_tokens_for` picks (padding against a
longer attention span); padding is its own block.

Which mask, by the model's attention implementation (`model.config._attn_implementation`):

- ``sdpa`` and ``eager``: a 4D additive mask (rows, 1, W, W) built once per forward, in
  the dtype attention computes in (bf16 under bf16 autocast), so neither autocast nor
  sdpa copies it per layer; transformers passes a 4D mask through to every layer as it
  is. It is dense, O(rows * W^2) (W = the longest segment, not a whole long row): 2 MB
  per row of 1024 tokens in bf16. On CUDA, sdpa with a mask runs the memory-efficient
  kernel, which reads this one bias tensor in every layer and in backward.
- ``flex_attention``: a BlockMask from a mask function over (segment, part) ids, so no
  dense mask exists at all; rows are padded to a multiple of 128 tokens (the block size)
  to limit recompilation. FlexAttention has no backward on CPU: CPU training uses sdpa.
- anything else (flash attention kernels): the shared-prefix mask cannot be expressed,
  `supports_shared_prefix` is False and callers fall back to the unshared layout.

>>> batch = pair_batch([([5, 6], [7], [8, 9])], pad_id=0)
>>> batch.input_ids.tolist(), batch.position_ids.tolist()
([[5, 6, 7, 8, 9]], [[0, 1, 2, 2, 3]])
>>> batch.source.tolist(), batch.targets.tolist(), batch.segment.tolist()  # chosen 7; rejected 8, 9
([1, 1, 3], [7, 8, 9], [0, 1, 1])
>>> batch.layout.allowed()[0].int().tolist()[3]  # the first rejected token: prompt and itself
[1, 1, 0, 1, 0]
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, Callable, Sequence

from prefdata.logprobs import Packed, pack

if TYPE_CHECKING:
    import torch

# attention implementations that take a custom 4D mask (dense) or a BlockMask (flex)
DENSE_MASKS = ("sdpa", "eager")
FLEX = "flex_attention"
FLEX_BLOCK = 128
PROMPT, CHOSEN, REJECTED = 0, 1, 2

Triple = tuple[list[int], list[int], list[int]]  # (prompt ids, chosen ids, rejected ids)


def attention_implementation(model) -> str | None:
    return getattr(model.config, "_attn_implementation", None)


def supports_shared_prefix(model) -> bool:
    """Whether `model`'s attention takes the shared-prefix mask (sdpa, eager or flex attention)."""
    return attention_implementation(model) in DENSE_MASKS + (FLEX,)


@dataclass
class SharedLayout:
    """Which segment and which part (prompt, chosen, rejected) each token of a packed batch is."""

    doc: torch.Tensor   # (rows, width) long: segment number in its row; padding is one more segment
    part: torch.Tensor  # (rows, width) long: PROMPT (also padding), CHOSEN or REJECTED

    def allowed(self) -> torch.Tensor:
        """(rows, W, W) bool: query i may attend key j. Causal within a segment, rejected never
        sees chosen (chosen never sees rejected by causality: rejected comes after it)."""
        import torch

        idx = torch.arange(self.doc.shape[1], device=self.doc.device)
        causal = idx[:, None] >= idx[None, :]
        same = self.doc[:, :, None] == self.doc[:, None, :]
        crossed = (self.part[:, :, None] == REJECTED) & (self.part[:, None, :] == CHOSEN)
        return same & causal & ~crossed

    def attention_mask(self, model):
        """The mask for `model`'s attention implementation, built once for the whole forward."""
        import torch

        if attention_implementation(model) == FLEX:
            return self._block_mask()
        device = self.doc.device.type
        dtype = torch.get_autocast_dtype(device) if torch.is_autocast_enabled(device) else model.dtype
        allowed = self.allowed()
        mask = torch.zeros(allowed.shape, dtype=dtype, device=self.doc.device)
        return mask.masked_fill_(~allowed, torch.finfo(dtype).min)[:, None]

    def _block_mask(self):
        from torch.nn.attention.flex_attention import create_block_mask

        doc, part = self.doc, self.part

        def shared_prefix(b, h, q, kv):
            return (doc[b, q] == doc[b, kv]) & (q >= kv) & ~((part[b, q] == REJECTED) & (part[b, kv] == CHOSEN))

        rows, width = doc.shape
        return create_block_mask(shared_prefix, rows, None, width, width, device=doc.device,
                                 _compile=doc.device.type == "cuda")


def pair_batch(pairs: Sequence[Triple], pad_id: int, device=None, row_tokens: int | None = None,
               width_multiple: int = 1) -> Packed:
    """Pack (prompt, chosen, rejected) triples as shared-prefix segments into one model input.

    Sequence k < n of the result is pair k's chosen completion, n + k its rejected one, as
    `score.packed_batch` orders `[(p, c) ...] + [(p, r) ...]`: `sequence_logps` returns
    the same (2n,) sums for both layouts. Rows hold at most `row_tokens` tokens (default:
    the longest segment); `width_multiple` pads the row width up (FlexAttention blocks).
    """
    import torch

    n = len(pairs)
    lengths = [len(p) + len(c) + len(r) for p, c, r in pairs]
    if any(len(p) == 0 for p, _, _ in pairs):
        raise ValueError("shared-prefix packing needs a non-empty prompt (it predicts both first tokens)")
    rows = pack(lengths, row_tokens or max(lengths))
    width = max(sum(lengths[i] for i in row) for row in rows)
    width = math.ceil(width / width_multiple) * width_multiple
    ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
    pos = torch.zeros((len(rows), width), dtype=torch.long)
    doc = torch.zeros((len(rows), width), dtype=torch.long)
    part = torch.zeros((len(rows), width), dtype=torch.long)
    source: list[list[int]] = [[] for _ in range(2 * n)]
    for r, row in enumerate(rows):
        at = 0
        for d, i in enumerate(row):
            prompt, chosen, rejected = pairs[i]
            p, c, k = len(prompt), len(chosen), len(rejected)
            ids[r, at:at + p + c + k] = torch.tensor(prompt + chosen + rejected)
            pos[r, at:at + p + c] = torch.arange(p + c)
            pos[r, at + p + c:at + p + c + k] = torch.arange(p, p + k)
            doc[r, at:at + p + c + k] = d
            part[r, at + p:at + p + c] = CHOSEN
            part[r, at + p + c:at + p + c + k] = REJECTED
            last_prompt = r * width + at + p - 1
            # chosen token j is predicted at the position before it (the last prompt token for j = 0);
            # rejected token 0 likewise by the last prompt token, token j > 0 by rejected token j - 1
            source[i] = list(range(last_prompt, last_prompt + c))
            source[n + i] = ([last_prompt] + list(range(last_prompt + c + 1, last_prompt + c + k)))[:k]
            at += p + c + k
        pos[r, at:] = torch.arange(width - at)
        doc[r, at:] = len(row)
    sides = [c for _, c, _ in pairs] + [r for _, _, r in pairs]
    as_long = dict(dtype=torch.long, device=device)
    flat_source = [s for seq in source for s in seq]
    targets = [t for seq in sides for t in seq]
    segment = [k for k, seq in enumerate(sides) for _ in seq]
    return Packed(ids.to(device), pos.to(device), torch.tensor(flat_source, **as_long),
                  torch.tensor(targets, **as_long), torch.tensor(segment, **as_long),
                  torch.tensor([len(s) for s in sides], **as_long), 2 * n,
                  layout=SharedLayout(doc.to(device), part.to(device)))


def width_multiple(model) -> int:
    """Row-width granularity for `model`: FlexAttention's block size, else none."""
    return FLEX_BLOCK if attention_implementation(model) == FLEX else 1


# row widths tried, as multiples of the longest segment
WIDTH_STEPS = (1.0, 1.25, 1.5, 1.75, 2.0, 2.5, 3.0)


def _flops_per_token(model) -> tuple[float, float] | None:
    """(linear, attention per key position) multiply-adds per token per layer, from the config."""
    cfg = model.config
    cfg = getattr(cfg, "text_config", None) or cfg
    try:
        h, inter, heads = int(cfg.hidden_size), int(cfg.intermediate_size), int(cfg.num_attention_heads)
    except (AttributeError, TypeError, ValueError):
        return None
    kv = int(getattr(cfg, "num_key_value_heads", None) or heads)
    hd = int(getattr(cfg, "head_dim", None) or h // heads)
    linear = h * (heads * hd + 2 * kv * hd) + heads * hd * h + 3 * h * inter  # q,k,v,o and a gated MLP
    return float(linear), float(2 * heads * hd)  # scores and the weighted sum, per key


def row_tokens_for(model, triples: Sequence[Triple]) -> int | None:
    """The row width that makes the dense-mask forward cheapest for these segments; None: the
    longest segment (FlexAttention, or a config without the sizes the estimate needs).

    Rows as wide as the longest segment hold mostly one segment each, so up to a third of a
    batch of mixed lengths can be padding, which costs what real tokens cost. Wider rows
    take two segments where they fit, but a dense mask makes every token's attention as long
    as its row. The estimate is rows x width x (linear + width x attention) multiply-adds;
    the lowest over a few widths wins (on the CPU long-prompt benchmark: 1.5x the longest,
    ~9% less time per step than 1x).
    """
    flops = _flops_per_token(model)
    if flops is None or attention_implementation(model) not in DENSE_MASKS or not triples:
        return None
    linear, attention = flops
    lengths = [len(p) + len(c) + len(r) for p, c, r in triples]
    longest = max(lengths)
    best, best_cost = longest, math.inf
    for step in WIDTH_STEPS:
        rows = pack(lengths, int(longest * step))
        width = max(sum(lengths[i] for i in row) for row in rows)
        cost = len(rows) * width * (linear + attention * width)
        if cost < best_cost * 0.99:  # ties go to the narrower row (less mask memory)
            best, best_cost = int(longest * step), cost
    return best


def score_pairs_shared(model, pad_id: int, pairs: Sequence[Triple], batch_tokens: int = 4096,
                       chunk_positions: int = 1024, bf16: bool = False,
                       on_batch: Callable[[int], None] | None = None) -> tuple[list[float], list[float]]:
    """(chosen sums, rejected sums): summed completion log-probs of every pair, no grad, input order.

    The shared-prefix counterpart of `score.score_sequences`: pairs sorted by segment length,
    cut into groups of about `batch_tokens` tokens, one packed forward per group.
    """
    import torch

    from prefdata.logprobs import sequence_logps, token_groups

    device = next(model.parameters()).device
    n = len(pairs)
    chosen, rejected = [math.nan] * n, [math.nan] * n
    was_training = model.training
    model.eval()
    for group in token_groups([sum(map(len, pair)) for pair in pairs], batch_tokens):
        triples = [pairs[i] for i in group]
        batch = pair_batch(triples, pad_id, device, row_tokens=row_tokens_for(model, triples),
                           width_multiple=width_multiple(model))
        with torch.no_grad(), torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16):
            sums = sequence_logps(model, batch, chunk_positions).tolist()
        for k, i in enumerate(group):
            chosen[i], rejected[i] = sums[k], sums[len(group) + k]
        if on_batch:
            on_batch(len(group))
    model.train(was_training)
    return chosen, rejected
