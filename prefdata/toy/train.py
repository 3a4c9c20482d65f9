"""Train the toy policy and other models, reproducibly, on two CPU threads.

Each model sees solutions in its own style only (policy style for the policy,
``<<a+b=c>>`` style for the other model), with the loss on completion tokens,
so the reference style stays off-policy for both. The step budget is fixed,
not timed, so the same seed gives the same weights on any machine with the
same torch build and thread count.

Run: ``python -m prefdata.toy train --out DIR --seed 0``.
"""

from __future__ import annotations

import math
import os
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

from . import task
from .model import ToyModelConfig

ROLES = ("policy", "other")
THREADS = 2  # the target machine has two cores; also fixes float reduction order


@dataclass(frozen=True)
class TrainConfig:
    """Everything that decides a toy model's weights."""

    style: str
    model: ToyModelConfig = field(default_factory=ToyModelConfig)
    steps: int = 600
    batch_size: int = 32
    lr: float = 3e-3
    warmup: int = 20
    weight_decay: float = 0.01
    mix: tuple[float, ...] = task.DEFAULT_MIX


# Per-role recipes. The other model is trained less: in scenarios 3 and 4 its
# samples are the rejected side, so it only needs to be a plausible, different,
# imperfect writer.
RECIPES = {
    "policy": TrainConfig(style="policy", steps=1200),
    "other": TrainConfig(style="other", steps=200),
}


def encode_example(tok, question: str, solution: str) -> tuple[list[int], int]:
    """Token ids of chat-rendered prompt + solution + EOS, and the prompt length."""
    prompt = tok.apply_chat_template([{"role": "user", "content": question}],
                                     add_generation_prompt=True, tokenize=False)
    p_ids = tok(prompt, add_special_tokens=False)["input_ids"]
    c_ids = tok(solution, add_special_tokens=False)["input_ids"] + [tok.eos_token_id]
    return p_ids + c_ids, len(p_ids)


def _batches(tok, cfg: TrainConfig, seed: int):
    """Yield (input_ids, attention_mask, labels) tensors, deterministic in seed."""
    import torch

    n = cfg.steps * cfg.batch_size
    problems = task.generate("train", n, seed=seed, mix=cfg.mix, unique=False)
    pad = tok.pad_token_id
    for s in range(cfg.steps):
        chunk = problems[s * cfg.batch_size:(s + 1) * cfg.batch_size]
        encoded = [encode_example(tok, p.question, p.solution(cfg.style)) for p in chunk]
        width = max(len(ids) for ids, _ in encoded)
        ids = torch.full((len(encoded), width), pad, dtype=torch.long)
        mask = torch.zeros_like(ids)
        labels = torch.full_like(ids, -100)
        for i, (seq, plen) in enumerate(encoded):
            ids[i, :len(seq)] = torch.tensor(seq)
            mask[i, :len(seq)] = 1
            labels[i, plen:len(seq)] = ids[i, plen:len(seq)]  # completion tokens only
        yield ids, mask, labels


def _lr_at(step: int, cfg: TrainConfig) -> float:
    if step < cfg.warmup:
        return cfg.lr * (step + 1) / cfg.warmup
    frac = (step - cfg.warmup) / max(1, cfg.steps - cfg.warmup)
    return cfg.lr * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * frac)))


def train_one(role: str, out_dir: str | Path, seed: int = 0, cfg: TrainConfig | None = None,
              quiet: bool = False) -> dict:
    """Train one toy model into ``out_dir``; return its training summary."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(THREADS)
    try:
        return _train_one(role, out_dir, seed, cfg or RECIPES[role], quiet)
    finally:
        torch.set_num_threads(before)  # callers (tests, the pipeline) keep their setting


def _train_one(role: str, out_dir: str | Path, seed: int, cfg: TrainConfig, quiet: bool) -> dict:
    import torch

    from .model import build_model, build_tokenizer, save_model

    torch.manual_seed(seed)
    tok = build_tokenizer()
    # Different init per role even with one seed: they are different models.
    model = build_model(cfg.model, seed=seed * 1000 + ROLES.index(role))
    model.train()
    decay = [p for n, p in model.named_parameters() if p.ndim >= 2]
    no_decay = [p for n, p in model.named_parameters() if p.ndim < 2]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": cfg.weight_decay},
                             {"params": no_decay, "weight_decay": 0.0}],
                            lr=cfg.lr, betas=(0.9, 0.98))
    t0, losses = time.time(), []
    # Data seed differs from the policy's so the two models see different problems.
    for step, (ids, mask, labels) in enumerate(_batches(tok, cfg, seed * 1000 + ROLES.index(role))):
        for g in opt.param_groups:
            g["lr"] = _lr_at(step, cfg)
        loss = model(input_ids=ids, attention_mask=mask, labels=labels).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        opt.zero_grad(set_to_none=True)
        losses.append(loss.item())
        if not quiet and (step % 50 == 0 or step == cfg.steps - 1):
            print(f"[{role}] step {step:4d}/{cfg.steps} loss {loss.item():.3f} "
                  f"({time.time() - t0:.0f}s)", flush=True)
    seconds = time.time() - t0
    model.eval()
    summary = {"role": role, "seed": seed, "train_seconds": round(seconds, 1),
               "final_loss": round(sum(losses[-20:]) / len(losses[-20:]), 4),
               "config": _jsonable(asdict(cfg))}
    save_model(model, out_dir, name=role, meta=summary)
    return summary


def _jsonable(x):
    if isinstance(x, dict):
        return {k: _jsonable(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_jsonable(v) for v in x]
    return x


def train_toy_models(out_dir: str | Path, seed: int = 0, quiet: bool = False) -> dict[str, Path]:
    """Train the policy and the other model into ``out_dir/policy`` and ``out_dir/other``.

    Returns ``{"policy": path, "other": path}``.
    """
    out = Path(out_dir)
    paths = {}
    for role in ROLES:
        summary = train_one(role, out / role, seed=seed, quiet=quiet)
        if not quiet:
            print(f"[{role}] trained in {summary['train_seconds']}s -> {out / role}", flush=True)
        paths[role] = out / role
    return paths


# --- shipped weights --------------------------------------------------------

WEIGHTS_DIR = Path(__file__).resolve().parent / "weights"


def policy_path() -> Path:
    """Directory of the shipped toy policy (HF format, loadable by transformers and vLLM)."""
    return WEIGHTS_DIR / "policy"


def other_path() -> Path:
    """Directory of the shipped toy other model."""
    return WEIGHTS_DIR / "other"


def _complete(path: Path) -> bool:
    return all((path / f).is_file() for f in ("config.json", "model.safetensors", "tokenizer.json"))


def cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "prefdata" / "toy"


def ensure_toy_models(quiet: bool = True) -> dict[str, Path]:
    """Paths of a usable policy and other model: the shipped ones, else a cached retrain.

    Retraining (a few minutes on two idle cores) happens only when the shipped
    weights are missing, e.g. in a source tree without them.
    """
    shipped = {"policy": policy_path(), "other": other_path()}
    if all(_complete(p) for p in shipped.values()):
        return shipped
    cached = {r: cache_dir() / r for r in ROLES}
    if not all(_complete(p) for p in cached.values()):
        train_toy_models(cache_dir(), seed=0, quiet=quiet)
    return cached
