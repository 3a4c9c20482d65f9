"""What training did to the model, per dataset: the study's Table 1 and the measures around it.

- Table 1: mean per-token log-prob of chosen and of rejected responses, over
  all trained pairs, under the base model (the stored reference log-probs) and
  after training. "Mean per-token" = the mean over pairs of (summed log-prob /
  completion tokens), so a long response does not outweigh a short one.
- trajectories: the same two numbers on a fixed, seeded subset of pairs, every
  `eval_every` steps.
- gradient magnitudes: on a fixed probe batch, the L2 norm over all parameters
  of the loss gradient that flows through the chosen log-probs alone and
  through the rejected ones alone (the other side detached). The study's
  point: DPO pushes the rejected side much harder than it lifts the chosen one.
- sequence-probability gradients (the study's Figure 10): on the same probe
  batch, |dl/dπ(y_w)| and |dl/dπ(y_l)|, the gradient of each pair's loss l with
  respect to the probability π(y|x) = exp(summed log-prob) of its whole chosen
  and rejected response. For DPO, dl/dπ(y_w) = −β·σ(−z)/π(y_w) and
  dl/dπ(y_l) = β·σ(−z)/π(y_l): the rejected side's gradient is π(y_w)/π(y_l)
  times the chosen one's, and it grows as π(y_l) falls. Since π(y) is tiny
  (e^−1000 for an off-policy sentence) these are kept as log10 magnitudes,
  averaged over the probe pairs, next to |dl/dlog π(y)| (the same gradient
  with respect to the log-prob, which is what reaches the parameters).
- dispersion: mean per-token log-prob of responses that are in no pair (other
  candidates of the same prompts, unused reference solutions, reference
  solutions of held-out prompts), before vs after: when chosen and rejected
  both fall, the mass goes somewhere; this shows whether it goes to them.
- held-out accuracy: greedy answers to held-out prompts, graded by
  `verify(text, reference_answer)`, before and after.

`prefdata.train.report_files` writes them to `WORKSPACE/runs/<dataset>-<loss>/` as
report.txt, report.json, report.png, and lays all runs side by side in runs/combined.*.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from typing import Callable

from prefdata.errors import PrefdataError


# -- evaluation data ----------------------------------------------------------------------------
def tokenize_pairs(tokenizer, pairs: dict) -> dict:
    """Prompt / chosen / rejected token ids of every pair, exactly as score.py built them."""
    from prefdata.score import encode_completions, encode_prompts

    out = {"prompt": encode_prompts(tokenizer, pairs["prompt"], pairs["messages"])}
    for side in ("chosen", "rejected"):
        out[side] = encode_completions(tokenizer, pairs[side])
        for i, (ids, scored) in enumerate(zip(out[side], pairs[f"{side}_tokens"])):
            if scored is not None and len(ids) != scored:
                raise PrefdataError(f"pair {pairs['pair_id'][i]} tokenises to {len(ids)} {side} tokens, "
                                    f"but was scored with {scored}",
                                    "re-run `prefdata score` with the model being trained")
    return out


@dataclass
class EvalSet:
    """The fixed things measured during and after training (indices into the trained pairs)."""

    eval_idx: list[int]
    probe_idx: list[int]
    eval_chosen: list[tuple[list[int], list[int]]]
    eval_rejected: list[tuple[list[int], list[int]]]
    heldout: list[tuple[list[int], list[int]]] = field(default_factory=list)
    heldout_origin: list[str] = field(default_factory=list)
    prompts: list[tuple[list[int], str]] = field(default_factory=list)  # (prompt ids, reference answer)


def build_evalset(ws, cfg, tokenizer, pairs: dict, keep: list[int], data: dict) -> EvalSet:
    """Seeded eval subset and probe of the trained pairs, unpaired responses and held-out prompts."""
    import pyarrow as pa
    import pyarrow.compute as pc

    from prefdata.score import completion_ids, prompt_ids

    rng = random.Random(f"prefdata-eval/{cfg.seed}")
    eval_idx = sorted(rng.sample(range(len(keep)), min(len(keep), max(cfg.eval_pairs, cfg.probe_pairs))))
    evalset = EvalSet(
        eval_idx=eval_idx, probe_idx=eval_idx[:cfg.probe_pairs],
        eval_chosen=[(data["prompt"][keep[i]], data["chosen"][keep[i]]) for i in eval_idx],
        eval_rejected=[(data["prompt"][keep[i]], data["rejected"][keep[i]]) for i in eval_idx])

    # Unpaired responses. Their prompt rendering comes from the pairs (same prompt id, same text).
    prompt_of = {pid: data["prompt"][i] for i, pid in enumerate(pairs["prompt_id"])}
    in_pairs = {(pid, t) for pid, c, r in zip(pairs["prompt_id"], pairs["chosen"], pairs["rejected"])
                for t in (c, r)}
    candidates = ws.read("candidates", ["prompt_id", "origin", "text"])
    candidates = candidates.filter(pc.is_in(candidates["prompt_id"],
                                            value_set=pa.array(list(prompt_of), pa.string()))).to_pydict()
    by_origin: dict[str, list[tuple[str, str]]] = {}
    seen = set(in_pairs)

    def add(origin: str, pid: str, text: str) -> None:
        if (pid, text) not in seen:  # 8 identical samples, or a reference that is also a candidate, count once
            seen.add((pid, text))
            by_origin.setdefault(origin, []).append((pid, text))

    for pid, origin, text in zip(candidates["prompt_id"], candidates["origin"], candidates["text"]):
        add(origin, pid, text)
    prompts_table = ws.read("prompts", ["prompt_id", "split", "prompt", "messages", "reference_solution",
                                        "reference_answer"]).to_pylist()
    has_test_split = any(row["split"] == "test" for row in prompts_table)
    heldout_rows = {}
    for row in prompts_table:
        if row["prompt_id"] in prompt_of:
            if row["reference_solution"]:
                add("reference", row["prompt_id"], row["reference_solution"])
        elif row["split"] == "test" or not has_test_split:  # no test split: any prompt not trained on
            heldout_rows[row["prompt_id"]] = row
            if row["reference_solution"]:
                add("heldout_reference", row["prompt_id"], row["reference_solution"])

    def rendered(pid: str) -> list[int]:  # only the prompts actually used are rendered
        if pid not in prompt_of:
            row = heldout_rows[pid]
            prompt_of[pid] = prompt_ids(tokenizer, row["prompt"], row["messages"])
        return prompt_of[pid]

    # Round-robin over origins after a seeded shuffle, so no one origin fills the budget.
    pools = {o: rng.sample(v, len(v)) for o, v in sorted(by_origin.items())}
    while len(evalset.heldout) < cfg.heldout_responses and any(pools.values()):
        for origin, pool in pools.items():
            if pool and len(evalset.heldout) < cfg.heldout_responses:
                pid, text = pool.pop()
                evalset.heldout.append((rendered(pid), completion_ids(tokenizer, text)))
                evalset.heldout_origin.append(origin)
    graded = [r for r in heldout_rows.values() if r["reference_answer"] is not None]
    for row in rng.sample(graded, min(len(graded), cfg.heldout_prompts)):
        evalset.prompts.append((rendered(row["prompt_id"]), row["reference_answer"]))
    return evalset


# -- measurements -------------------------------------------------------------------------------
def _per_token(model, tokenizer, seqs, cfg, bf16) -> list[float]:
    """Per-token mean completion log-prob of each (prompt_ids, completion_ids)."""
    from prefdata.score import score_sequences

    sums = score_sequences(model, tokenizer, seqs, cfg.eval_batch_tokens, cfg.chunk_positions, bf16)
    return [s / len(c) for s, (_, c) in zip(sums, seqs)]


def _pairs_per_token(model, tokenizer, prompts, chosen, rejected, cfg, bf16) -> tuple[list[float], list[float]]:
    """Per-token mean log-probs of each pair's chosen and rejected, with each prompt computed once
    when `cfg.shared_prefix` and the model's attention allow it (prefdata.train.packing)."""
    from prefdata.train.packing import score_pairs_shared, supports_shared_prefix

    if not (cfg.shared_prefix and supports_shared_prefix(model)):
        values = _per_token(model, tokenizer, list(zip(prompts, chosen)) + list(zip(prompts, rejected)), cfg, bf16)
        return values[:len(chosen)], values[len(chosen):]
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    sums = score_pairs_shared(model, pad, list(zip(prompts, chosen, rejected)), cfg.eval_batch_tokens,
                              cfg.chunk_positions, bf16)
    return ([s / len(c) for s, c in zip(sums[0], chosen)], [s / len(r) for s, r in zip(sums[1], rejected)])


def _mean(values: list[float]) -> float | None:
    return sum(values) / len(values) if values else None


def measure(model, tokenizer, evalset: EvalSet, cfg, bf16: bool) -> dict:
    """Mean per-token log-prob of the eval chosen, eval rejected and unpaired responses (by origin)."""
    chosen, rejected = _pairs_per_token(model, tokenizer, [p for p, _ in evalset.eval_chosen],
                                        [c for _, c in evalset.eval_chosen], [r for _, r in evalset.eval_rejected],
                                        cfg, bf16)
    heldout = _per_token(model, tokenizer, evalset.heldout, cfg, bf16) if evalset.heldout else []
    return {"chosen": _mean(chosen), "rejected": _mean(rejected), "dispersion": _mean(heldout),
            "dispersion_by_origin": {o: _mean([v for v, vo in zip(heldout, evalset.heldout_origin) if vo == o])
                                     for o in sorted(set(evalset.heldout_origin))}}


def gradient_norms(model, loss_of: Callable, evalset: EvalSet) -> dict:
    """L2 norm of the probe loss's gradient through chosen alone and through rejected alone.

    `loss_of(idx, detach=side)` is the training loop's loss with one side's
    log-probs detached. torch.autograd.grad leaves the parameters' .grad (the
    optimizer's accumulators) untouched.
    """
    import torch

    model.eval()
    params = [p for p in model.parameters() if p.requires_grad]
    out = {}
    for side, other in (("chosen", "rejected"), ("rejected", "chosen")):
        grads = torch.autograd.grad(loss_of(evalset.probe_idx, detach=other).loss, params, allow_unused=True)
        # fp32 norms per tensor, then the norm of those: no fp64 copy of the gradients
        norms = [torch.linalg.vector_norm(g, dtype=torch.float32) for g in grads if g is not None]
        del grads  # one side's gradients (the size of the model) at a time, not both
        out[side] = float(torch.linalg.vector_norm(torch.stack(norms))) if norms else 0.0
    out["ratio"] = out["rejected"] / out["chosen"] if out["chosen"] else None
    return out


def probability_gradients(loss_config, policy_chosen_logps, policy_rejected_logps, ref_chosen_logps,
                          ref_rejected_logps, chosen_tokens=None, rejected_tokens=None) -> dict:
    """Per-side gradient of each pair's loss w.r.t. its sequence probability (the study's Fig. 10).

    Inputs: ``(B,)`` summed log-probs and token counts as for `loss_config.compute_loss`. With
    g = dl_i/dlog π(y) (autograd through the loss alone, no model), dl_i/dπ(y) = g / π(y), so
    log10|dl_i/dπ(y)| = log10|g| − log π(y)/ln 10, finite however small π(y) is. Returns the
    probe means of |g| (``dlogp_*``) and of log10|dl/dπ| (``log10_dprob_*``) per side, and the
    mean log10 ratio rejected/chosen; pairs whose gradient is exactly 0 have no log and are left out.

    >>> import torch
    >>> from prefdata.train.loss_config import LossConfig
    >>> g = probability_gradients(LossConfig("dpo", beta=1.0), torch.tensor([-1.0]), torch.tensor([-3.0]),
    ...                           torch.tensor([-1.0]), torch.tensor([-3.0]))
    >>> g["dlogp_chosen"], g["dlogp_rejected"]  # z = 0: β·σ(0) on both sides
    (0.5, 0.5)
    >>> round(g["log10_dprob_ratio"], 4)  # π(y_w)/π(y_l) = e^2
    0.8686
    """
    import math

    import torch

    from prefdata.train.loss_config import compute_loss

    chosen = policy_chosen_logps.detach().double().requires_grad_(True)
    rejected = policy_rejected_logps.detach().double().requires_grad_(True)
    out = compute_loss(loss_config, chosen, rejected, ref_chosen_logps.detach().double(),
                       ref_rejected_logps.detach().double(), chosen_tokens, rejected_tokens)
    # per-pair losses depend only on their own pair's log-probs, so one backward gives every pair's gradient
    g_chosen, g_rejected = torch.autograd.grad(out.losses.sum(), (chosen, rejected), allow_unused=True)
    result = {}
    logs = {}
    for side, g, logp in (("chosen", g_chosen, chosen), ("rejected", g_rejected, rejected)):
        g = torch.zeros_like(logp) if g is None else g.abs()
        result[f"dlogp_{side}"] = g.mean().item() if len(g) else None
        logs[side] = torch.where(g > 0, torch.log10(g) - logp.detach() / math.log(10), torch.nan)
        finite = logs[side][torch.isfinite(logs[side])]
        result[f"log10_dprob_{side}"] = finite.mean().item() if len(finite) else None
    ratio = (logs["rejected"] - logs["chosen"])
    ratio = ratio[torch.isfinite(ratio)]
    result["log10_dprob_ratio"] = ratio.mean().item() if len(ratio) else None
    return result


def default_verify(text: str, reference_answer: str) -> bool:
    """The toy task's grader: the final integer in `text` equals the reference answer."""
    from prefdata.toy.task import extract_answer

    got = extract_answer(text)
    return got is not None and str(got) == str(reference_answer).replace(",", "").strip()


def accuracy(model, tokenizer, evalset: EvalSet, cfg, verify: Callable[[str, str], bool] | None,
             bf16: bool = False) -> dict:
    """Greedy answers to the held-out prompts, graded by `verify(text, reference_answer)`."""
    import torch
    from transformers import GenerationConfig

    if not evalset.prompts:
        return {"accuracy": None, "prompts": 0, "correct": 0}
    verify = verify or default_verify
    device = next(model.parameters()).device
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    greedy = GenerationConfig(do_sample=False, max_new_tokens=cfg.max_new_tokens,
                              eos_token_id=tokenizer.eos_token_id, pad_token_id=pad)
    model.eval()
    correct, batch = 0, cfg.generate_batch
    for start in range(0, len(evalset.prompts), batch):
        chunk = evalset.prompts[start:start + batch]
        width = max(len(ids) for ids, _ in chunk)
        # left padding: every prompt ends at the right edge, where decoding continues
        input_ids = torch.tensor([[pad] * (width - len(ids)) + ids for ids, _ in chunk], device=device)
        mask = torch.tensor([[0] * (width - len(ids)) + [1] * len(ids) for ids, _ in chunk], device=device)
        with torch.no_grad(), torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16):
            out = model.generate(input_ids=input_ids, attention_mask=mask, generation_config=greedy)
        for row, (_, answer) in zip(out[:, width:], chunk):
            correct += bool(verify(tokenizer.decode(row, skip_special_tokens=True), answer))
    return {"accuracy": correct / len(evalset.prompts), "prompts": len(evalset.prompts), "correct": correct}


def table1_after(model, tokenizer, prompts, chosen, rejected, cfg, bf16) -> dict:
    """Mean per-token log-prob of every trained pair's chosen and rejected under the trained model."""
    chosen_values, rejected_values = _pairs_per_token(model, tokenizer, prompts, chosen, rejected, cfg, bf16)
    return {"chosen": _mean(chosen_values), "rejected": _mean(rejected_values)}


# -- the report ---------------------------------------------------------------------------------
def _delta(before, after) -> dict:
    return {"before": before, "after": after,
            "delta": None if before is None or after is None else after - before}


def assemble(cfg, history: dict, final: dict, before: dict, after: dict, evalset: EvalSet, meta: dict) -> dict:
    start = history["before"]
    origins = sorted(set(start["dispersion_by_origin"]) | set(final["dispersion_by_origin"]))
    return {
        "run": cfg.run_name, "dataset": cfg.dataset, "loss": cfg.to_dict()["loss"], **meta,
        "table1": {"chosen": _delta(before["chosen"], after["chosen"]),
                   "rejected": _delta(before["rejected"], after["rejected"]),
                   "margin": _delta(before["chosen"] - before["rejected"], after["chosen"] - after["rejected"])},
        "eval_subset": {"pairs": len(evalset.eval_idx),
                        "chosen": _delta(start["chosen"], final["chosen"]),
                        "rejected": _delta(start["rejected"], final["rejected"])},
        "dispersion": {"responses": len(evalset.heldout), **_delta(start["dispersion"], final["dispersion"]),
                       "by_origin": {o: {"responses": evalset.heldout_origin.count(o),
                                         **_delta(start["dispersion_by_origin"].get(o),
                                                  final["dispersion_by_origin"].get(o))} for o in origins}},
        "accuracy": {"prompts": final["accuracy"]["prompts"],
                     **_delta(start["accuracy"]["accuracy"], final["accuracy"]["accuracy"])},
        "trajectory": [{k: e[k] for k in ("step", "chosen", "rejected", "dispersion")} for e in history["eval"]],
        "gradients": history["grads"],
        "train": history["train"],
        "config": cfg.to_dict(),
    }
