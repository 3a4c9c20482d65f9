"""Reference log-probs of every pair's chosen and rejected completions, stored in the pairs table.

DPO needs log pi_ref(y | x) for both responses of every pair. Computing it once
here (no grad) and storing it beside the pair means the trainer holds one model,
not two. What is scored, and how:

- prompt: the tokenizer's own chat template over the pair's `messages` (or one
  user turn holding `prompt`), with `add_generation_prompt=True`;
  completion: the response text + EOS. Only completion tokens are scored.
- sequences are packed into rows of at most `batch_tokens` tokens (longest
  first, first fit), each sequence restarting its `position_ids` at 0; with no
  attention mask, transformers turns the position resets into a block-diagonal
  causal mask, so packed sequences never see each other and no compute goes to
  padding.
- the model body runs to hidden states; the vocabulary projection and
  log-softmax run on the completion positions only, `chunk_positions` at a
  time, in fp32. The full (batch x length x vocab) logits never exist: a 150k
  vocabulary at 8k completion tokens would be 5 GB of fp32 logits.

The training loop uses the same functions (with gradients), so reference and
policy log-probs are computed identically and the DPO margin starts at zero.
By default a pair's prompt is computed once for both responses (shared-prefix
packing, prefdata.train.packing; `shared_prefix=False` for the layout above).

>>> summary = score_pairs(ws, "prefdata/toy/weights/policy")  # doctest: +SKIP
>>> summary["rows_scored"]                                     # doctest: +SKIP
512
"""

from __future__ import annotations

import math
import time
from pathlib import Path
from typing import Callable, Sequence

from prefdata.errors import PrefdataError
from prefdata.logprobs import Packed, pack, packed_batch, sequence_logps, token_groups  # noqa: F401  (this module's API too)

# -- model loading and identity -----------------------------------------------------------------
def model_hash(path: str | Path) -> str:
    """Content hash of a model directory; the generate stage's, so candidates and scores agree."""
    from prefdata.generate.model import model_hash as generate_model_hash

    return generate_model_hash(path)


def pick_device(device: str | None = None):
    import torch

    if device is not None:
        return torch.device(device)
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def load_model(path: str | Path, device=None, *, trust_remote_code: bool = False, allow_pickle: bool = False):
    """(model, tokenizer) from a local HF directory; weights in fp32 (bf16 comes from autocast).

    Safetensors weights only and no custom code from the directory, unless the caller opts in.
    """
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from prefdata.generate.model import validate_model_dir

    path = validate_model_dir(path, allow_pickle=allow_pickle, trust_remote_code=trust_remote_code)
    try:
        tokenizer = AutoTokenizer.from_pretrained(path, trust_remote_code=trust_remote_code)
        model = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32, use_safetensors=not allow_pickle,
                                                     trust_remote_code=trust_remote_code)
    except (OSError, ValueError) as err:
        first = (str(err).strip().splitlines() or [type(err).__name__])[0]
        raise PrefdataError(f"cannot load the model in {path}: {first}",
                            "check the model directory; set trust_remote_code only if you trust its code"
                            ) from None
    return model.to(pick_device(device)), tokenizer


# -- tokenisation -------------------------------------------------------------------------------
def encode_prompts(tokenizer, prompts: Sequence[str], messages: Sequence[list | None]) -> list[list[int]]:
    """Token ids of each prompt rendered by the tokenizer's chat template, ready for the answer.

    `messages[i]` (chat turns) wins over `prompts[i]` (one user turn) when present.
    """
    from prefdata.generate.model import chat_template, render

    if not chat_template(tokenizer):
        raise PrefdataError("the model's tokenizer has no chat template",
                            "use a chat model, or add a chat_template to its tokenizer_config.json")
    texts = [render(tokenizer, [dict(m) for m in turns] if turns else [{"role": "user", "content": prompt}])
             for prompt, turns in zip(prompts, messages)]
    # The template already holds BOS (if the model uses one); adding it again would double it.
    return tokenizer(texts, add_special_tokens=False)["input_ids"] if texts else []


def encode_completions(tokenizer, responses: Sequence[str]) -> list[list[int]]:
    """Token ids of each response followed by EOS: the model must also learn where to stop."""
    if tokenizer.eos_token_id is None:
        raise PrefdataError("the model's tokenizer has no EOS token", "set eos_token in its tokenizer config")
    if not responses:
        return []
    return [ids + [tokenizer.eos_token_id]
            for ids in tokenizer(list(responses), add_special_tokens=False)["input_ids"]]


def prompt_ids(tokenizer, prompt: str, messages: list[dict] | None = None) -> list[int]:
    return encode_prompts(tokenizer, [prompt], [messages])[0]


def completion_ids(tokenizer, response: str) -> list[int]:
    return encode_completions(tokenizer, [response])[0]


def score_sequences(model, tokenizer, sequences: Sequence[tuple[list[int], list[int]]],
                    batch_tokens: int = 4096, chunk_positions: int = 1024, bf16: bool = False,
                    on_batch: Callable[[int], None] | None = None) -> list[float]:
    """Summed completion log-prob of each (prompt_ids, completion_ids), no grad, in input order.

    Sequences are sorted by length and cut into groups of about `batch_tokens`
    tokens; each group is one packed forward.
    """
    import torch

    device = next(model.parameters()).device
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    out = [math.nan] * len(sequences)
    was_training = model.training
    model.eval()
    for group in token_groups([len(p) + len(c) for p, c in sequences], batch_tokens):
        batch = packed_batch([sequences[i] for i in group], batch_tokens, pad, device)
        with torch.no_grad(), torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16):
            sums = sequence_logps(model, batch, chunk_positions).tolist()
        for i, value in zip(group, sums):
            out[i] = value
        if on_batch:
            on_batch(len(group))
    model.train(was_training)
    return out


# -- the stage ----------------------------------------------------------------------------------
def _fits_context(prompts, chosen, rejected, context: int | None, dropped: dict) -> list[bool]:
    """Per pair: do prompt + chosen and prompt + rejected both fit `context` tokens? Counts the
    misfits in `dropped`: prompt_too_long (the prompt alone fills it), too_long (with a response)."""
    if context is None:
        return [True] * len(prompts)
    fits = []
    for p, c, r in zip(prompts, chosen, rejected):
        if len(p) >= context:
            dropped["prompt_too_long"] += 1
        elif len(p) + max(len(c), len(r)) > context:
            dropped["too_long"] += 1
        fits.append(len(p) + max(len(c), len(r)) <= context)
    return fits


def _fill(table, rows: list[int], values: dict[str, list]):
    """`table` with column `name` replaced by `values[name]` at `rows` (in order), kept elsewhere."""
    import numpy as np
    import pyarrow as pa
    import pyarrow.compute as pc

    position = np.full(table.num_rows, -1)
    position[rows] = np.arange(len(rows))
    mask, take = pa.array(position >= 0), pa.array(np.maximum(position, 0))
    for name, column in values.items():
        field = table.schema.field(name)
        new = pa.array(column, field.type).take(take)
        table = table.set_column(table.schema.get_field_index(name), field, pc.if_else(mask, new, table[name]))
    return table


def score_pairs(ws, model_path: str | Path, dataset: str | None = None, batch_tokens: int = 4096,
                chunk_positions: int = 1024, device: str | None = None, bf16: bool | None = None,
                progress: Callable[[str], None] | None = None, shared_prefix: bool = True) -> dict:
    """Fill the reference log-prob columns of the pairs table under the model at `model_path`.

    Each pairs part is rewritten atomically with `ref_chosen_logp`,
    `ref_rejected_logp` (sums over completion tokens), `ref_*_logp_mean` (per
    token), `chosen_tokens`, `rejected_tokens` and `ref_model_hash` filled.
    Resumable: a part whose selected rows already carry this model's hash is
    skipped, so a killed run continues where it stopped.

    `dataset` limits scoring to rows of that dataset (other rows are kept as
    they are). `bf16` (default: on when on GPU) runs the body under bf16
    autocast exactly as training does, so the initial DPO margin is zero.
    `shared_prefix` computes each pair's prompt once (prefdata.train.packing) where the
    model's attention allows it; the log-probs equal the unshared ones up to float rounding.
    Returns a summary dict; the manifest records it under stage "score".
    """
    import pyarrow.parquet as pq

    from prefdata.generate.model import context_length
    from prefdata.schemas import conform
    from prefdata.train.packing import score_pairs_shared, supports_shared_prefix

    say = progress or (lambda _msg: None)
    ref_hash = model_hash(model_path)
    started = time.time()
    summary = {"model_path": str(model_path), "ref_model_hash": ref_hash, "dataset": dataset,
               "parts_scored": 0, "parts_skipped": 0, "rows_scored": 0,
               "dropped": {"prompt_too_long": 0, "too_long": 0}}
    with ws.writer():
        model = tokenizer = None
        known: set[str] = set()
        for path in ws.parts("pairs"):
            table = conform("pairs", pq.read_table(path))
            known.update(table["dataset"].to_pylist())
            selected = [dataset is None or d == dataset for d in table["dataset"].to_pylist()]
            if not any(selected):
                continue
            hashes = table["ref_model_hash"].to_pylist()
            if all(hashes[i] == ref_hash for i, s in enumerate(selected) if s):
                summary["parts_skipped"] += 1
                continue
            if model is None:  # load lazily: a fully scored workspace costs no model load
                model, tokenizer = load_model(model_path, device)
                use_bf16 = bf16 if bf16 is not None else model.device.type == "cuda"
                summary["bf16"] = use_bf16
            rows = [i for i, s in enumerate(selected) if s]
            sub = table.take(rows)
            prompts = encode_prompts(tokenizer, sub["prompt"].to_pylist(), sub["messages"].to_pylist())
            chosen = encode_completions(tokenizer, sub["chosen"].to_pylist())
            rejected = encode_completions(tokenizer, sub["rejected"].to_pylist())
            # Past the model's context its log-probs mean nothing: such pairs keep null log-probs
            # (the hash says they were looked at) and are counted; training leaves them out.
            fits = _fits_context(prompts, chosen, rejected, context_length(model_path), summary["dropped"])
            live = [i for i, ok in enumerate(fits) if ok]
            if shared_prefix and supports_shared_prefix(model):
                pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
                triples = [(prompts[i], chosen[i], rejected[i]) for i in live]
                sums = sum(score_pairs_shared(model, pad, triples, batch_tokens, chunk_positions, use_bf16), [])
            else:
                sums = score_sequences(model, tokenizer, [(prompts[i], chosen[i]) for i in live]
                                       + [(prompts[i], rejected[i]) for i in live],
                                       batch_tokens, chunk_positions, use_bf16)
            n, k = len(rows), len(live)
            c_sum, r_sum = [None] * n, [None] * n
            for j, i in enumerate(live):
                c_sum[i], r_sum[i] = sums[j], sums[k + j]
            c_len, r_len = [len(c) for c in chosen], [len(r) for r in rejected]
            table = _fill(table, rows, {
                "ref_chosen_logp": c_sum, "ref_rejected_logp": r_sum,
                "ref_chosen_logp_mean": [None if v is None else v / t for v, t in zip(c_sum, c_len)],
                "ref_rejected_logp_mean": [None if v is None else v / t for v, t in zip(r_sum, r_len)],
                "chosen_tokens": c_len, "rejected_tokens": r_len, "ref_model_hash": [ref_hash] * n})
            key = path.name[len("part-"):-len(".parquet")]
            ws.write_part("pairs", key, table)
            summary["parts_scored"] += 1
            summary["rows_scored"] += k
            say(f"scored {k} pairs in part {key}" + (f", {n - k} too long for the model's context" if n > k else ""))
        if dataset is not None and dataset not in known:
            raise PrefdataError(f"no pairs of dataset {dataset!r} in {ws.root}",
                                f"choose one of: {', '.join(sorted(known))}" if known else "build pairs first")
        summary["seconds"] = round(time.time() - started, 3)
        ws.write_manifest("score", {k: v for k, v in summary.items() if k != "seconds"})
    return summary


def format_score_summary(summary: dict) -> str:
    """One readable line: what was scored, what was left out and why."""
    dropped = ", ".join(f"{k}={v}" for k, v in summary.get("dropped", {}).items() if v)
    what = f"dataset {summary['dataset']}" if summary.get("dataset") else "all datasets"
    return (f"scored {summary['rows_scored']} pairs of {what} under {summary['model_path']} "
            f"(ref_model_hash {summary['ref_model_hash']}); {summary['parts_skipped']} parts already scored"
            + (f"; left unscored (past the model's context): {dropped}" if dropped else "")
            + f"; {summary.get('seconds', 0)} s")
