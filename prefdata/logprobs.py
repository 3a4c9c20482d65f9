"""Log-probs of completions under a causal LM: packing sequences into rows, and summing the
completion tokens' log-probs without materialising full-vocabulary logits.

The machinery beneath reference scoring (`prefdata.score`), shared-prefix packing
(`prefdata.train.packing`) and the training loop, kept in its own module so that those
three sit above it and never import each other in a circle.

- sequences are packed into rows (longest first, first fit), each sequence restarting its
  `position_ids` at 0; with no attention mask, transformers turns the position resets into
  a block-diagonal causal mask, so packed sequences never see each other;
- the model body runs to hidden states; the vocabulary projection and log-softmax run on
  the completion positions only, `chunk_positions` at a time, in fp32.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Sequence

if TYPE_CHECKING:
    import torch


# -- packing ------------------------------------------------------------------------------------
def pack(lengths: Sequence[int], row_tokens: int) -> list[list[int]]:
    """Indices of `lengths` grouped into rows of at most `row_tokens` tokens.

    Longest first, first fit; a sequence longer than `row_tokens` gets a row of
    its own. Deterministic for equal input.

    >>> pack([5, 3, 4, 2], 8)
    [[0, 1], [2, 3]]
    """
    rows: list[list[int]] = []
    room: list[int] = []
    for i in sorted(range(len(lengths)), key=lambda i: (-lengths[i], i)):
        for r, free in enumerate(room):
            if lengths[i] <= free:
                rows[r].append(i)
                room[r] -= lengths[i]
                break
        else:
            rows.append([i])
            room.append(row_tokens - lengths[i])
    return rows


def token_groups(sizes: Sequence[int], budget: int) -> list[list[int]]:
    """Indices of `sizes`, longest first, cut into consecutive groups of at most `budget` tokens
    (an item over the budget is a group of its own): one forward pass per group.

    >>> token_groups([3, 5, 2, 4], 7)
    [[1], [3, 0], [2]]
    """
    groups: list[list[int]] = []
    used = 0
    for i in sorted(range(len(sizes)), key=lambda i: -sizes[i]):
        if groups and groups[-1] and used + sizes[i] <= budget:
            groups[-1].append(i)
            used += sizes[i]
        else:
            groups.append([i])
            used = sizes[i]
    return groups


@dataclass
class Packed:
    """Sequences laid out in rows: inputs for the model body, and where the completion targets are."""

    input_ids: torch.Tensor      # (rows, length) long
    position_ids: torch.Tensor   # (rows, length) long; restarts at 0 for each sequence
    source: torch.Tensor         # (n_targets,) flat index into rows*length of the predicting position
    targets: torch.Tensor        # (n_targets,) token id predicted there
    segment: torch.Tensor        # (n_targets,) which input sequence the target belongs to
    counts: torch.Tensor         # (n_sequences,) completion tokens per sequence
    n_sequences: int
    # shared-prefix packing (prefdata.train.packing) sets this: its attention_mask(model) is passed to
    # the model; None = sequences separated by their position-id restarts alone
    layout: Any = None


def packed_batch(sequences: Sequence[tuple[list[int], list[int]]], row_tokens: int,
                 pad_id: int, device=None) -> Packed:
    """Pack (prompt_ids, completion_ids) sequences into one model input.

    Padding (only at the end of rows shorter than the longest row) gets its own
    position run 0..k, so it is a separate block that nothing attends to.
    """
    import torch

    lengths = [len(p) + len(c) for p, c in sequences]
    rows = pack(lengths, row_tokens)
    width = max(sum(lengths[i] for i in row) for row in rows)
    ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
    pos = torch.zeros((len(rows), width), dtype=torch.long)
    source, targets, segment = [], [], []
    for r, row in enumerate(rows):
        at = 0
        for i in row:
            prompt, completion = sequences[i]
            n = lengths[i]
            ids[r, at:at + n] = torch.tensor(prompt + completion)
            pos[r, at:at + n] = torch.arange(n)
            # The token at offset len(prompt)+j is predicted by the hidden state one before it.
            first = r * width + at + len(prompt) - 1
            source.extend(range(first, first + len(completion)))
            targets.extend(completion)
            segment.extend([i] * len(completion))
            at += n
        pos[r, at:] = torch.arange(width - at)
    counts = torch.tensor([len(c) for _, c in sequences], dtype=torch.long)
    as_long = dict(dtype=torch.long, device=device)
    return Packed(ids.to(device), pos.to(device), torch.tensor(source, **as_long),
                  torch.tensor(targets, **as_long), torch.tensor(segment, **as_long),
                  counts.to(device), len(sequences))


# -- log-probs ----------------------------------------------------------------------------------
def _chunk_logps(hidden, weight, bias, targets, softcap):
    """log p(target) for a chunk of positions; fp32 even under autocast (bf16 logits lose ~0.1 nats)."""
    import torch

    with torch.autocast(device_type=hidden.device.type, enabled=False):
        logits = hidden.float() @ weight.float().T
        if bias is not None:
            logits = logits + bias.float()
        if softcap:  # Gemma-2 style final logit soft-capping
            logits = softcap * torch.tanh(logits / softcap)
        return logits.gather(-1, targets[:, None]).squeeze(-1) - logits.logsumexp(-1)


def sequence_logps(model, batch: Packed, chunk_positions: int = 1024):
    """Summed completion log-prob per sequence, shape (n_sequences,), fp64.

    Token log-probs are fp32; their sum is fp64 because an 8k-token response sums
    to thousands of nats, where fp32 rounding alone is ~1e-3.

    Differentiable when grad is enabled: each chunk is checkpointed, so backward
    recomputes its logits instead of keeping (completion tokens x vocab) alive.
    """
    import torch
    from torch.utils.checkpoint import checkpoint

    mask = {} if batch.layout is None else {"attention_mask": batch.layout.attention_mask(model)}
    hidden = model.base_model(input_ids=batch.input_ids, position_ids=batch.position_ids,
                              use_cache=False, **mask).last_hidden_state
    hidden = hidden.reshape(-1, hidden.shape[-1]).index_select(0, batch.source)
    head = model.get_output_embeddings()
    softcap = getattr(model.config, "final_logit_softcapping", None)
    scale = getattr(model.config, "logits_scaling", None) or 1.0  # Granite divides logits
    pieces = []
    for start in range(0, hidden.shape[0], chunk_positions):
        h = hidden[start:start + chunk_positions] / scale
        t = batch.targets[start:start + chunk_positions]
        if torch.is_grad_enabled():
            pieces.append(checkpoint(_chunk_logps, h, head.weight, head.bias, t, softcap,
                                     use_reentrant=False))
        else:
            pieces.append(_chunk_logps(h, head.weight, head.bias, t, softcap))
    token_logps = torch.cat(pieces) if pieces else hidden.new_zeros(0, dtype=torch.float32)
    sums = torch.zeros(batch.n_sequences, dtype=torch.float64, device=token_logps.device)
    return sums.index_add(0, batch.segment, token_logps.double())
