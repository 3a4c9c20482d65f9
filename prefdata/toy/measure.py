"""Measure the toy world: accuracies and the on-/off-policy log-prob gap.

The numbers the study cares about: the policy's held-out accuracy under
temperature-1 sampling, the other model's, and the mean per-token log-prob
*under the policy* of (a) the policy's own samples, (b) the reference
solutions, (c) the other model's samples. (a) should sit clearly above (b)
and (c); that gap is what makes scenarios 1-4 differ.

Run: ``python -m prefdata.toy measure [--n 200] [--seed 0]``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

from . import task

MAX_NEW_TOKENS = 96  # the longest toy solution is ~80 characters


def load(path: str | Path):
    """(model, tokenizer) from a toy model directory, in eval mode on CPU."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(path, trust_remote_code=False)
    tok.padding_side = "left"
    model = AutoModelForCausalLM.from_pretrained(path, dtype="float32", use_safetensors=True,
                                                 trust_remote_code=False)
    model.eval()
    return model, tok


def render_prompts(tok, questions: Sequence[str]) -> list[str]:
    return [tok.apply_chat_template([{"role": "user", "content": q}],
                                    add_generation_prompt=True, tokenize=False)
            for q in questions]


def sample(model, tok, questions: Sequence[str], *, seed: int = 0, temperature: float = 1.0,
           batch_size: int = 100, max_new_tokens: int = MAX_NEW_TOKENS) -> list[str]:
    """One completion per question, pure temperature sampling (no top-k/top-p)."""
    import torch

    torch.manual_seed(seed)
    prompts = render_prompts(tok, questions)
    out: list[str] = []
    for i in range(0, len(prompts), batch_size):
        enc = tok(prompts[i:i + batch_size], return_tensors="pt", padding=True,
                  add_special_tokens=False)
        with torch.no_grad():
            gen = model.generate(**enc, do_sample=True, temperature=temperature, top_k=0,
                                 top_p=1.0, max_new_tokens=max_new_tokens,
                                 pad_token_id=tok.pad_token_id, eos_token_id=tok.eos_token_id)
        out.extend(tok.batch_decode(gen[:, enc["input_ids"].shape[1]:], skip_special_tokens=True))
    return out


def mean_token_logprobs(model, tok, questions: Sequence[str], completions: Sequence[str],
                        batch_size: int = 100) -> list[float]:
    """Per-sequence mean log-prob of completion tokens (text + EOS) given the chat prompt."""
    import torch

    prompts = render_prompts(tok, questions)
    result: list[float] = []
    for i in range(0, len(prompts), batch_size):
        seqs, starts = [], []
        for p, c in zip(prompts[i:i + batch_size], completions[i:i + batch_size]):
            p_ids = tok(p, add_special_tokens=False)["input_ids"]
            c_ids = tok(c, add_special_tokens=False)["input_ids"] + [tok.eos_token_id]
            seqs.append(p_ids + c_ids)
            starts.append(len(p_ids))
        width = max(map(len, seqs))
        ids = torch.full((len(seqs), width), tok.pad_token_id, dtype=torch.long)
        mask = torch.zeros_like(ids)
        for j, s in enumerate(seqs):  # right padding keeps positions aligned with training
            ids[j, :len(s)] = torch.tensor(s)
            mask[j, :len(s)] = 1
        with torch.no_grad():
            logits = model(input_ids=ids, attention_mask=mask).logits.float()
        logp = torch.log_softmax(logits[:, :-1], dim=-1)
        tok_lp = logp.gather(-1, ids[:, 1:].unsqueeze(-1)).squeeze(-1)
        for j, s in enumerate(seqs):
            # Token t is predicted at position t-1; completion tokens are starts[j]..len(s)-1.
            result.append(tok_lp[j, starts[j] - 1:len(s) - 1].mean().item())
    return result


def accuracy(texts: Sequence[str], problems: Sequence[task.Problem]) -> float:
    return sum(task.is_correct(t, p.answer) for t, p in zip(texts, problems)) / len(problems)


def _mean(xs: Sequence[float]) -> float:
    return sum(xs) / len(xs)


def measure(policy_dir: str | Path | None = None, other_dir: str | Path | None = None,
            n: int = 200, seed: int = 0, data_seed: int = 0) -> dict:
    """Accuracies and mean per-token log-probs under the policy, on ``n`` test problems."""
    from .train import ensure_toy_models

    if policy_dir is None or other_dir is None:
        paths = ensure_toy_models()
        policy_dir = policy_dir or paths["policy"]
        other_dir = other_dir or paths["other"]
    problems = task.generate("test", n, seed=data_seed)
    questions = [p.question for p in problems]
    policy, ptok = load(policy_dir)
    other, otok = load(other_dir)
    own = sample(policy, ptok, questions, seed=seed)
    oth = sample(other, otok, questions, seed=seed + 1)
    refs = [p.reference_solution for p in problems]
    by_level = {}
    for lvl in sorted({p.difficulty for p in problems}):
        idx = [i for i, p in enumerate(problems) if p.difficulty == lvl]
        by_level[lvl] = accuracy([own[i] for i in idx], [problems[i] for i in idx])
    return {
        "n": n, "seed": seed, "data_seed": data_seed,
        "policy_accuracy": accuracy(own, problems),
        "policy_accuracy_by_difficulty": by_level,
        "other_accuracy": accuracy(oth, problems),
        "logp_policy_own_samples": _mean(mean_token_logprobs(policy, ptok, questions, own)),
        "logp_policy_reference": _mean(mean_token_logprobs(policy, ptok, questions, refs)),
        "logp_policy_other_samples": _mean(mean_token_logprobs(policy, ptok, questions, oth)),
        "examples": [{"question": questions[i], "policy": own[i], "other": oth[i],
                      "reference": refs[i]} for i in range(min(3, n))],
    }


def measure_with_threads(*args, threads: int = 2, **kwargs) -> dict:
    """``measure`` on ``threads`` intra-op threads (the CLI path), restoring the setting."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        return measure(*args, **kwargs)
    finally:
        torch.set_num_threads(before)


def format_report(m: dict) -> str:
    lines = [
        f"test problems: {m['n']} (data seed {m['data_seed']}, sampling seed {m['seed']})",
        f"policy accuracy (T=1): {m['policy_accuracy']:.3f}  by difficulty: "
        + ", ".join(f"{k} op: {v:.2f}" for k, v in m["policy_accuracy_by_difficulty"].items()),
        f"other accuracy (T=1):  {m['other_accuracy']:.3f}",
        "mean per-token log-prob under the policy:",
        f"  policy's own samples:  {m['logp_policy_own_samples']:.3f}",
        f"  reference solutions:   {m['logp_policy_reference']:.3f}",
        f"  other model's samples: {m['logp_policy_other_samples']:.3f}",
    ]
    for ex in m["examples"]:
        lines.append(f"  Q: {ex['question']}\n    policy: {ex['policy']!r}\n    other:  {ex['other']!r}")
    return "\n".join(lines)
