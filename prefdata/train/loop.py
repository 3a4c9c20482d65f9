"""The training loop: DPO and its relatives on one dataset of the pairs table.

Read it top to bottom: load the pairs, load ONE model (the reference log-probs
are already stored in the pairs, so no second model is needed), then
for each optimizer step: take the next pairs in a seeded order, run
`grad_accum` packed micro-batches forward and backward, clip, step; every
`eval_every` steps measure the fixed eval subset (report.py); every
`checkpoint_every` steps save everything a resume needs. At the end write a
Hugging Face model directory and the report.

Exactness of resume: the data order of epoch e is a pure function of
(seed, e), the learning rate a pure function of the step, and a checkpoint
holds model, optimizer, RNG states, the step and the measurement history. So
"4 steps" and "2 steps, killed, resumed for 2" give the same weights.

Under torchrun (`torchrun --nproc_per_node=K -m prefdata.cli train ...`, or a script that
calls `train()`) the process group comes from the environment (distributed.py).
The global batch stays `batch_size * grad_accum` pairs whatever K is: each rank
takes the strided slice batch[rank::K] in micro-batches of at most `batch_size`,
DDP (default) or FSDP2 (`fsdp=True`, or PREFDATA_FSDP=1) averages the gradients,
and the per-pair losses are scaled so the step's gradient equals the single-process
one-batch gradient, up to float summation order, for every loss in losses.py
(DPO+SFT's token-mean normaliser is taken over the whole step's batch, not the
micro-batch). Gradient accumulation (`grad_accum` micro-batches) equals one big batch the
same way.
Every rank runs the same evaluations (so all return the report); only rank 0
writes files. A run resumes on any number of processes.

>>> from prefdata.train.config import TrainConfig
>>> result = train(ws, TrainConfig(dataset="scenario2", model_path="prefdata/toy/weights/policy",
...                                lr=1e-4, max_steps=100))       # doctest: +SKIP
>>> result["table1"]["chosen"]                                     # doctest: +SKIP
{'before': -0.41, 'after': -0.52, 'delta': -0.11}
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import math
import os
import shutil
import time
from pathlib import Path
from typing import Callable

from prefdata.errors import PrefdataError, TrainingDiverged, WorkspaceLocked
from prefdata.paths import exclusive_lock
from prefdata.train import checkpoint as ckpt
from prefdata.train.config import TrainConfig

CHECKPOINTS = "checkpoints"


def train(ws, cfg: TrainConfig, verify: Callable[[str, str], bool] | None = None,
          on_step: Callable[[int, dict], None] | None = None,
          progress: Callable[[str], None] | None = None, fsdp: bool | None = None,
          base_accuracy: dict | None = None) -> dict:
    """Train `cfg.model_path` on the pairs of `cfg.dataset`; returns the report dict.

    Writes `config.json`, `log.jsonl`, `checkpoints/`, `model/` (HF format) and
    the report (`report.json`, `report.txt`, `report.png`) to `cfg.run_dir(ws)`.
    Resumes from the newest checkpoint there when `cfg.resume`. `verify(text,
    reference_answer) -> bool` grades greedy answers to held-out prompts
    (default: the toy task's answer extraction). `on_step(step, metrics)` is
    called after every optimizer step (and after its checkpoint), on every rank.
    `fsdp` shards the model with FSDP2 when run by several processes (default: the
    PREFDATA_FSDP environment variable; otherwise DDP). Raises `TrainingDiverged` on
    a NaN/inf loss or gradient. `base_accuracy`, a dict shared by runs from the same model
    (`prefdata study` passes one per seed), caches the base model's held-out accuracy by
    model hash and held-out prompt set, so runs on other datasets do not decode them again.
    """
    from prefdata.train.distributed import broadcast_object, init_from_env

    ctx = init_from_env("cpu" if str(cfg.device or "").startswith("cpu") else None)
    if fsdp is None:
        fsdp = os.environ.get("PREFDATA_FSDP", "0").lower() in ("1", "true", "yes")
    run_dir = cfg.run_dir(ws)
    with contextlib.ExitStack() as stack:
        locked = None
        if ctx.main:  # rank 0 owns the run directory; the other ranks only read from it
            run_dir.mkdir(parents=True, exist_ok=True)
            try:  # two runs training into one directory would corrupt each other
                stack.enter_context(exclusive_lock(
                    run_dir, f"{run_dir} is being trained by another process",
                    "wait for it to finish, or train into another output directory"))
            except WorkspaceLocked as err:
                locked = err.problem  # the fix is added once, below
        locked = broadcast_object(locked, ctx)  # every rank fails alike, none waits forever
        if locked:
            raise WorkspaceLocked(locked, "wait for it to finish, or train into another output directory")
        return _train(ws, cfg, run_dir, verify, on_step, progress if ctx.main else None, ctx, fsdp, base_accuracy)


def _train(ws, cfg: TrainConfig, run_dir: Path, verify, on_step, progress, ctx, fsdp: bool,
           base_accuracy: dict | None = None) -> dict:
    import torch

    from prefdata.score import load_model, model_hash, packed_batch, pick_device, sequence_logps
    from prefdata.train import distributed as dist
    from prefdata.train import report, report_files
    from prefdata.train.loss_config import compute_loss
    from prefdata.train.packing import pair_batch, row_tokens_for, supports_shared_prefix, width_multiple

    say = progress or (lambda _msg: None)
    started = time.time()
    ckpt_dir = run_dir / CHECKPOINTS
    device = pick_device(cfg.device)
    if ctx.active and device.type == "cuda":
        device = torch.device("cuda", ctx.local_rank)  # one GPU per process
    bf16 = cfg.bf16 if cfg.bf16 is not None else device.type == "cuda"
    if bf16 and device.type != "cuda":
        raise PrefdataError("bf16 training needs a CUDA GPU", "leave bf16 off on CPU (fp32 is used)")

    # ---- the pairs: scored by this very model, tokenised exactly as score.py did ----------------
    pairs = _load_pairs(ws, cfg.dataset)
    reference = cfg.reference_path or cfg.model_path
    ref_hash = model_hash(reference)
    scored_by = set(pairs["ref_model_hash"])
    if scored_by != {ref_hash}:
        raise PrefdataError(
            f"pairs of {cfg.dataset!r} were scored by model {sorted(map(str, scored_by))}, "
            f"not by {reference} ({ref_hash}); DPO's reference must be "
            + ("the model that scored them" if cfg.reference_path else "the starting policy"),
            f"run `prefdata score` with {reference} first, or train the model that scored them")
    model, tokenizer = load_model(cfg.model_path, device)
    if cfg.gradient_checkpointing:
        model.gradient_checkpointing_enable()
    # runner(batch): the summed log-probs through DDP/FSDP (the plain model when alone)
    runner, params = dist.wrap(model, ctx, fsdp and ctx.active, device, cfg.chunk_positions)
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    shared = cfg.shared_prefix and supports_shared_prefix(model)
    if cfg.shared_prefix and not shared:
        say(f"{model.config._attn_implementation} attention takes no shared-prefix mask: "
            "each prompt is computed twice, once with each response")
    data = report.tokenize_pairs(tokenizer, pairs)
    keep = [i for i in range(len(data["chosen"]))
            if max(len(data["prompt"][i]) + len(data["chosen"][i]),
                   len(data["prompt"][i]) + len(data["rejected"][i])) <= cfg.max_length]
    dropped = len(data["chosen"]) - len(keep)
    if not keep:
        raise PrefdataError(f"every pair of {cfg.dataset!r} is longer than max_length={cfg.max_length}",
                            "raise max_length")
    if dropped:
        say(f"left out {dropped} pairs longer than max_length={cfg.max_length} tokens")
    prompts = [data["prompt"][i] for i in keep]
    chosen = [data["chosen"][i] for i in keep]
    rejected = [data["rejected"][i] for i in keep]
    as64 = dict(dtype=torch.float64, device=device)
    ref_chosen = torch.tensor([pairs["ref_chosen_logp"][i] for i in keep], **as64)
    ref_rejected = torch.tensor([pairs["ref_rejected_logp"][i] for i in keep], **as64)
    n_chosen = torch.tensor([len(c) for c in chosen], device=device)
    n_rejected = torch.tensor([len(r) for r in rejected], device=device)
    n = len(keep)
    pair_digest = hashlib.sha256("\n".join(pairs["pair_id"][i] for i in keep).encode()).hexdigest()[:16]

    # ---- schedule: data order and learning rate are pure functions of the step ------------------
    steps_per_epoch = math.ceil(n / cfg.pairs_per_step)
    total_steps = cfg.max_steps or cfg.epochs * steps_per_epoch

    def batch_at(step: int) -> list[int]:
        epoch, j = divmod(step, steps_per_epoch)
        order = torch.randperm(n, generator=torch.Generator().manual_seed(cfg.seed * 1_000_003 + epoch))
        return order[j * cfg.pairs_per_step:(j + 1) * cfg.pairs_per_step].tolist()

    def lr_at(step: int) -> float:
        if step < cfg.warmup_steps:
            return cfg.lr * (step + 1) / cfg.warmup_steps
        frac = (step - cfg.warmup_steps) / max(1, total_steps - cfg.warmup_steps)
        if cfg.schedule == "cosine":
            return cfg.lr * 0.5 * (1 + math.cos(math.pi * frac))
        if cfg.schedule == "linear":
            return cfg.lr * (1 - frac)
        return cfg.lr

    def policy_logps(idx: list[int], through):
        """Summed completion log-probs (fp64) of chosen and rejected of pairs `idx`, one packed forward.

        `through` is the DDP/FSDP runner in training steps; measurements pass a plain
        model, whose gradients then stay rank-local (the gradient probe)."""
        if shared:  # prompt | chosen | rejected: each prompt computed once (packing.py)
            triples = [(prompts[i], chosen[i], rejected[i]) for i in idx]
            batch = pair_batch(triples, pad_id, device, row_tokens=row_tokens_for(model, triples),
                               width_multiple=width_multiple(model))
        else:
            seqs = [(prompts[i], chosen[i]) for i in idx] + [(prompts[i], rejected[i]) for i in idx]
            batch = packed_batch(seqs, cfg.max_length, pad_id, device)
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16):
            sums = through(batch) if through is runner else sequence_logps(through, batch, cfg.chunk_positions)
        return sums[:len(idx)], sums[len(idx):]

    def loss_of(idx: list[int], detach: str | None = None, through=model, whole_batch: list[int] | None = None):
        """The loss of pairs `idx`; `whole_batch`: the optimizer step's pairs when `idx` is a part
        of them, so batch-wide normalisers (DPO+SFT's token mean) are the whole batch's."""
        pc, pr = policy_logps(idx, through)
        # detach one side to get the gradient through the other alone (report's gradient probe)
        pc, pr = (pc.detach() if detach == "chosen" else pc), (pr.detach() if detach == "rejected" else pr)
        t = torch.tensor(idx, device=device)
        per_pair = None
        if whole_batch is not None:
            per_pair = n_chosen[torch.tensor(whole_batch, device=device)].double().mean()
        return compute_loss(cfg.loss, pc, pr, ref_chosen[t], ref_rejected[t], n_chosen[t], n_rejected[t],
                            per_pair)

    # ---- optimizer, and resume -------------------------------------------------------------------
    # fused: one kernel over every tensor (CPU and CUDA), not a Python loop per parameter;
    # FSDP2's sharded DTensor parameters take the multi-tensor (foreach) path instead
    optimizer = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay,
                                  **({"foreach": True} if fsdp and ctx.active else {"fused": True}))
    history: dict = {"train": [], "eval": [], "grads": [], "before": {}}
    step = 0
    # rank 0 chooses; every rank then reads that file (the run directory is shared, like the workspace)
    checkpoint = dist.broadcast_object(ckpt.latest_checkpoint(ckpt_dir) if cfg.resume and ctx.main else None, ctx)
    if checkpoint is not None:
        state = torch.load(checkpoint, map_location=device, weights_only=True)
        changed = cfg.differences(TrainConfig.from_dict(state["config"]))
        if changed or state["pair_digest"] != pair_digest:
            what = ", ".join(changed) if changed else "the pairs of the dataset"
            raise PrefdataError(f"{run_dir} holds a run with different {what}",
                                "pass the same options to resume it, resume=False to start over, "
                                "or another output directory")
        dist.load_checkpoint_state(runner, model, optimizer, state["model"], state["optimizer"])
        ckpt.set_rng(state["rng"])
        step, history = state["step"], json.loads(state["history"])
        say(f"resumed {run_dir.name} at step {step} from {checkpoint.name}")
        if ctx.main:  # drop log lines of steps after the checkpoint: they are about to be redone
            (run_dir / "log.jsonl").write_text("".join(json.dumps(r) + "\n" for r in history["train"]))
        finished = step == total_steps and (run_dir / "report.json").is_file() and (run_dir / "model").is_dir()
        if dist.broadcast_object(finished, ctx):
            return json.loads((run_dir / "report.json").read_text())  # finished already
    else:
        if ctx.main:
            if ckpt_dir.exists():
                shutil.rmtree(ckpt_dir)  # resume=False: start over, never mix two runs' checkpoints
            ckpt_dir.mkdir(parents=True)
            (run_dir / "log.jsonl").write_text("")
        torch.manual_seed(cfg.seed)  # only dropout draws from it (the toy has none); resume restores it
    if ctx.main:
        (run_dir / "config.json").write_text(cfg.to_json())

    evalset = report.build_evalset(ws, cfg, tokenizer, pairs, keep, data)

    def probe(whole) -> dict:
        """Parameter-gradient norms per side, and the loss's gradient w.r.t. each side's sequence
        probability, on the probe pairs."""
        idx = evalset.probe_idx
        with torch.no_grad():
            pc, pr = policy_logps(idx, whole)
        t = torch.tensor(idx, device=device)
        return {**_probe(whole, loss_of, evalset, report),
                **report.probability_gradients(cfg.loss, pc, pr, ref_chosen[t], ref_rejected[t],
                                               n_chosen[t], n_rejected[t])}
    if step == 0:
        say(f"measuring the base model on {len(evalset.eval_idx)} eval pairs")
        with dist.whole_model(runner, model) as whole:  # measured on every rank, on the whole model
            history["before"] = report.measure(whole, tokenizer, evalset, cfg, bf16)
            # a set of prompts, so its order (which batches them) does not enter the key
            key = (ref_hash, cfg.max_new_tokens, verify, tuple(sorted(map(repr, evalset.prompts))))
            if base_accuracy is not None and key in base_accuracy:
                history["before"]["accuracy"] = dict(base_accuracy[key])
            else:
                history["before"]["accuracy"] = report.accuracy(whole, tokenizer, evalset, cfg, verify, bf16)
                if base_accuracy is not None:
                    base_accuracy[key] = dict(history["before"]["accuracy"])
            history["eval"].append({"step": 0, **history["before"]})
            history["grads"].append({"step": 0, **probe(whole)})

    # ---- the loop --------------------------------------------------------------------------------
    parallel = f", {ctx.world} processes ({'FSDP' if fsdp else 'DDP'})" if ctx.active else ""
    say(f"training {cfg.run_name}: {n} pairs, {total_steps} steps of {cfg.pairs_per_step} pairs, "
        f"{device.type}{' bf16' if bf16 else ''}{parallel}")
    model.train()
    while step < total_steps:
        lr = lr_at(step)
        for group in optimizer.param_groups:
            group["lr"] = lr
        batch = batch_at(step)
        # [loss, chosen reward, rejected reward, reward accuracy, non-finite losses]: sums over this rank
        sums = [0.0] * 5
        micros = dist.shard_of(batch, cfg.batch_size, ctx)
        for k, micro in enumerate(micros):
            # a rank left without pairs (end of an epoch) still joins the collectives, at weight 0
            weight = ctx.world / len(batch) if micro else 0.0
            with dist.no_sync(runner, last=k == len(micros) - 1):
                out = loss_of(micro or batch[:1], through=runner, whole_batch=batch)
                # per-pair losses over the global batch, times K because DDP/FSDP average over ranks;
                # every loss is a mean of per-pair terms whose batch-wide normalisers (DPO+SFT's
                # token mean) come from the whole batch, so accumulation and K processes both equal
                # one big batch (tests/train/test_loop.py and test_distributed.py, every loss)
                (out.losses.sum() * weight).backward()
            if micro:
                losses = out.losses.detach()
                sums[0] += losses.sum().item()
                sums[1] += out.chosen_rewards.sum().item()
                sums[2] += out.rejected_rewards.sum().item()
                sums[3] += (out.chosen_rewards > out.rejected_rewards).double().sum().item()
                sums[4] += (~torch.isfinite(losses)).sum().item()
        sums = dist.all_reduce_sum(sums, ctx, device)
        if sums[4] or not math.isfinite(sums[0]):
            _diverged(f"loss is {sums[0]}", step + 1, ckpt_dir)
        grad_norm = torch.nn.utils.clip_grad_norm_(params, cfg.max_grad_norm or float("inf"))
        if hasattr(grad_norm, "full_tensor"):  # FSDP: a DTensor; every rank gets the global norm
            grad_norm = grad_norm.full_tensor()
        if not torch.isfinite(grad_norm):
            _diverged(f"gradient norm is {grad_norm.item()}", step + 1, ckpt_dir)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        step += 1

        record = {"step": step, "epoch": (step - 1) // steps_per_epoch, "lr": lr,
                  "loss": sums[0] / len(batch), "grad_norm": grad_norm.item(),
                  "chosen_reward": sums[1] / len(batch), "rejected_reward": sums[2] / len(batch),
                  "reward_accuracy": sums[3] / len(batch), "seconds": time.time() - started}
        history["train"].append(record)
        if ctx.main:
            with open(run_dir / "log.jsonl", "a") as fh:
                fh.write(json.dumps(record) + "\n")
        if (cfg.eval_every and step % cfg.eval_every == 0) or step == total_steps:
            with dist.whole_model(runner, model) as whole:
                history["eval"].append({"step": step, **report.measure(whole, tokenizer, evalset, cfg, bf16)})
                history["grads"].append({"step": step, **probe(whole)})
            model.train()
            say(f"step {step}/{total_steps} loss {record['loss']:.4f} "
                f"chosen {history['eval'][-1]['chosen']:.3f} rejected {history['eval'][-1]['rejected']:.3f}")
        if (cfg.checkpoint_every and step % cfg.checkpoint_every == 0) or step == total_steps:
            ckpt.save_checkpoint(ckpt_dir, step, cfg, dist.checkpoint_state(runner, model, optimizer), history,
                             pair_digest, ctx.main)
        if on_step:
            on_step(step, record)

    # ---- the result: Table 1 over all pairs, held-out accuracy, the HF model, the report --------
    # training is over (its last checkpoint is written): free Adam's moments, twice the weights,
    # before the final measurements and the save need memory of their own
    optimizer.state.clear()
    del optimizer
    model.eval()
    with dist.whole_model(runner, model) as whole:
        after = report.table1_after(whole, tokenizer, prompts, chosen, rejected, cfg, bf16)
        final = {**history["eval"][-1], "accuracy": report.accuracy(whole, tokenizer, evalset, cfg, verify, bf16)}
        if ctx.main:
            ckpt.save_hf_model(whole, tokenizer, cfg.model_path, run_dir / "model")
    before = {"chosen": sum(pairs["ref_chosen_logp_mean"][i] for i in keep) / n,
              "rejected": sum(pairs["ref_rejected_logp_mean"][i] for i in keep) / n}
    result = report.assemble(cfg, history, final, before, after, evalset,
                             {"pairs": n, "kinds": sorted(set(pairs["kind"])), "pairs_dropped_too_long": dropped,
                              "steps": total_steps,
                              "ref_model_hash": ref_hash, "device": device.type, "bf16": bf16,
                              "shared_prefix": shared,
                              "processes": ctx.world, "parallel": ("fsdp" if fsdp else "ddp") if ctx.active
                              else None, "seconds": round(time.time() - started, 2)})
    if ctx.main:
        report_files.write_report(run_dir, result)
    say(report_files.format_run(result))
    dist.barrier()  # the other ranks return once rank 0's files are complete
    return result


def _probe(whole, loss_of, evalset, report) -> dict:
    """The gradient probe on `whole` (the plain model, or FSDP's gathered copy)."""
    return report.gradient_norms(whole, lambda idx, detach=None: loss_of(idx, detach, through=whole), evalset)


def _load_pairs(ws, dataset: str) -> dict:
    """The dataset's pairs as column lists, checked to carry reference log-probs."""
    import pyarrow.compute as pc

    table = ws.read("pairs")
    subset = table.filter(pc.equal(table["dataset"], dataset))
    if subset.num_rows == 0:
        known = sorted(set(table["dataset"].to_pylist()))
        raise PrefdataError(f"no pairs of dataset {dataset!r} in {ws.root}",
                            f"choose one of: {', '.join(known)}" if known else "build pairs first")
    # scored but past the reference model's context (score.py leaves their log-probs null): left out
    unfit = pc.and_(subset["ref_model_hash"].is_valid(),
                    pc.or_(subset["ref_chosen_logp"].is_null(), subset["ref_rejected_logp"].is_null()))
    subset = subset.filter(pc.invert(unfit))
    if subset.num_rows == 0:
        raise PrefdataError(f"every pair of {dataset!r} is longer than the reference model's context",
                            "use a model with a longer context, or shorter prompts (see `prefdata score`)")
    missing = subset["ref_chosen_logp"].null_count + subset["ref_rejected_logp"].null_count
    if missing:
        raise PrefdataError(f"{missing} log-probs of {dataset!r} pairs are not scored yet",
                            "run `prefdata score` on the workspace first")
    return subset.to_pydict()


def _diverged(what: str, step: int, ckpt_dir: Path):
    last = ckpt.latest_checkpoint(ckpt_dir)
    kept = (f"the last good checkpoint {last} is kept (resume from it with a lower learning rate)"
            if last else "no checkpoint was written yet; the input model is unchanged")
    raise TrainingDiverged(f"training diverged at step {step}: {what}; {kept}",
                           "lower lr or beta, raise warmup_steps, or set max_grad_norm")
