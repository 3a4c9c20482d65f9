"""The training run's files: resumable checkpoints and the final Hugging Face model.

Both are written crash-safe: to a temporary name, flushed, then renamed, so a
reader (or a resume) sees the previous file or the new one, never half of one.
"""

from __future__ import annotations

import json
import os
import random
import shutil
from pathlib import Path

from prefdata.train.config import TrainConfig


def rng_state() -> dict:
    import torch

    state = {"torch": torch.get_rng_state(), "python": list(random.getstate()[1])}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng(state: dict) -> None:
    import torch

    torch.set_rng_state(state["torch"].cpu())
    random.setstate((3, tuple(state["python"]), None))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all([s.cpu() for s in state["cuda"]])


def save_checkpoint(ckpt_dir: Path, step: int, cfg: TrainConfig, states: tuple[dict, dict], history: dict,
                     pair_digest: str, main: bool = True) -> Path:
    """Everything a resume needs, in one file written atomically (by rank 0); keeps the newest few.

    `states` = (model state, optimizer state) from `distributed.checkpoint_state`: full and
    index-keyed whatever the parallelism, so any number of processes can resume it."""
    import torch

    path = ckpt_dir / f"step-{step:08d}.pt"
    if not main:
        return path
    tmp = ckpt_dir / f".{path.name}.tmp"
    # history as JSON text: the checkpoint then loads with weights_only=True (no pickled objects)
    torch.save({"step": step, "model": states[0], "optimizer": states[1],
                "rng": rng_state(), "history": json.dumps(history), "config": cfg.to_dict(),
                "pair_digest": pair_digest}, tmp)
    with open(tmp, "rb+") as fh:
        os.fsync(fh.fileno())
    os.replace(tmp, path)
    for old in sorted(ckpt_dir.glob("step-*.pt"))[:-cfg.keep_checkpoints or None]:
        old.unlink()
    return path


def latest_checkpoint(ckpt_dir: Path) -> Path | None:
    found = sorted(ckpt_dir.glob("step-*.pt")) if ckpt_dir.is_dir() else []
    return found[-1] if found else None


def save_hf_model(model, tokenizer, source: str, out: Path) -> None:
    """A Hugging Face model directory like the input: same dtype, tokenizer and generation config."""
    import torch

    source_config = json.loads((Path(source) / "config.json").read_text())
    dtype = getattr(torch, str(source_config.get("dtype") or source_config.get("torch_dtype") or "float32"))
    tmp = out.with_name(f".{out.name}.tmp")
    if tmp.exists():
        shutil.rmtree(tmp)
    # cast a copy of the weights, not the live model (under FSDP its parameters are gathered views);
    # one cast per storage keeps tied weights tied, so save_pretrained stores them once
    cast: dict = {}
    state = {k: cast.setdefault(v.data_ptr(), v.detach().to(dtype)) for k, v in model.state_dict().items()}
    model.save_pretrained(tmp, state_dict=state, safe_serialization=True)
    tokenizer.save_pretrained(tmp)
    if out.exists():
        shutil.rmtree(out)
    os.replace(tmp, out)  # readers see the old model or the new one, never half of one
