"""Benchmark: prefdata's DPO trainer vs TRL's `DPOTrainer` vs a bare forward+backward loop.

Three (four) sides, same model, same scored pairs, same pairs per optimizer step,
same max length, same precision, same torch thread count, run side by side in
alternating order (a different side first in each repetition), each repetition
of each side in a fresh subprocess so that its peak memory is its own:

* ``ours``   `prefdata.train.loop.train` on a workspace with scored pairs (the public
             function, unmodified; its step times come from its own `on_step` callback);
* ``trl``    TRL's `DPOTrainer.train()` on the same pairs exported with
             `prefdata.export.export_pairs` (prompt/chosen/rejected, conversational form,
             so TRL renders the same chat template), `precompute_ref_log_probs=True` so
             it, like ours, holds one model and reads fixed reference log-probs;
* ``bare_padded`` / ``bare_packed``
             the practical ceiling: for the same pairs (ours' batches, in ours' order),
             the 2 x pairs sequences prompt+chosen and prompt+rejected as one right-padded
             batch with an attention mask (padded) or packed into rows of `max_length`
             tokens with restarting position ids (packed, the layout ours uses), plain
             next-token cross-entropy from `model(...).logits`, backward, AdamW step.

Measured per run: wall time of a fixed number of optimizer steps after one warm-up
step (timestamps taken after each optimizer step; model load, dataset preparation,
TRL's reference precompute and prefdata's start/end measurements fall outside the
window), pairs/s, non-padding tokens/s (prompt + completion tokens of chosen and of
rejected, padding excluded, counted from each side's actual batches), peak memory
(CPU: peak RSS of the worker process minus its RSS after imports, both for the whole
train call and -- sampled every 10 ms -- before, inside and after the timed window; GPU:
`torch.cuda.max_memory_allocated`), and the end-to-end time of the whole call.

    python bench/bench_train.py                      # CPU, no activation checkpointing (prefdata's default)
    python bench/bench_train.py --gradient-checkpointing on --tag _gc   # checkpointing on (TRL's default), all sides
    python bench/bench_train.py --steps 2 --reps 1   # smoke run
    python bench/bench_train.py --device cuda --model-shape qwen2-0.5b   # on a GPU machine

Writes bench/results/train_<device><tag>.json and .md (`--out` to change).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SIDES = ("ours", "trl", "bare_padded", "bare_packed")
# Not run by default: TRL with its own DPOConfig defaults for precision and checkpointing (bf16 autocast
# even on CPU, gradient checkpointing on) -- what a TRL user gets without setting them.
EXTRA_SIDES = ("trl_defaults",)
DATASET = "bench"
BETA, LR = 0.1, 1e-5

# Model shapes. `bench-small` is a CPU-sized Llama (bigger than the toy so the matmuls, not Python,
# dominate); `qwen2-0.5b` is Qwen2-0.5B's architecture with random weights (no hub here). Both use
# the toy character tokenizer; the Qwen shape keeps its 151,936-row vocabulary (ids beyond the
# tokenizer's are never used), so the LM head costs what it costs in the real model.
SHAPES = {
    "bench-small": dict(arch="llama", hidden_size=256, intermediate_size=1024, num_hidden_layers=4,
                        num_attention_heads=4, num_key_value_heads=4, head_dim=64, vocab_size=None,
                        max_position_embeddings=2048, rope_theta=10000.0, rms_norm_eps=1e-6,
                        tie_word_embeddings=True),
    "qwen2-0.5b": dict(arch="qwen2", hidden_size=896, intermediate_size=4864, num_hidden_layers=24,
                       num_attention_heads=14, num_key_value_heads=2, vocab_size=151936,
                       max_position_embeddings=32768, rope_theta=1000000.0, rms_norm_eps=1e-6,
                       tie_word_embeddings=True),
}


# ------------------------------------------------------------------------------------------------
# setup: model directory, workspace with scored pairs, TRL export
# ------------------------------------------------------------------------------------------------
def build_model_dir(shape: str, out: Path) -> Path:
    import torch
    from transformers import GenerationConfig, LlamaConfig, LlamaForCausalLM, Qwen2Config, Qwen2ForCausalLM

    from prefdata.toy.model import BOS, EOS, PAD, build_tokenizer, vocab

    spec = dict(SHAPES[shape])
    arch = spec.pop("arch")
    ids = vocab()
    spec["vocab_size"] = spec["vocab_size"] or len(ids)
    special = dict(bos_token_id=ids[BOS], eos_token_id=ids[EOS], pad_token_id=ids[PAD])
    config = (LlamaConfig if arch == "llama" else Qwen2Config)(**spec, **special, dtype="float32")
    torch.manual_seed(0)
    model = (LlamaForCausalLM if arch == "llama" else Qwen2ForCausalLM)(config)
    model.generation_config = GenerationConfig(**special, do_sample=False, max_new_tokens=8)
    model.save_pretrained(out, safe_serialization=True)
    build_tokenizer().save_pretrained(out)
    return out


def build_workspace(root: Path, model_dir: Path, n_pairs: int, device: str) -> tuple:
    """A workspace whose `bench` dataset holds `n_pairs` toy-task pairs scored by `model_dir`."""
    import pyarrow as pa

    from prefdata.export import export_pairs
    from prefdata.score import score_pairs
    from prefdata.store import Workspace
    from prefdata.toy.task import generate

    ws = Workspace.create(root / "ws")
    problems = generate("train", n_pairs, seed=0)
    prompts = [{"prompt_id": f"p{i}", "source": "toy", "split": "train", "source_index": i,
                "prompt": p.question, "reference_solution": p.reference_solution,
                "reference_answer": str(p.answer)} for i, p in enumerate(problems)]
    # chosen: the reference solution; rejected: a policy-style solution with a wrong answer (scenario 2)
    wrong = [p.policy_solution.replace(f"is {p.answer}.", f"is {p.answer + 1}.") for p in problems]
    candidates = [{"candidate_id": f"c{i}-{k}", "prompt_id": f"p{i}", "origin": origin, "model_name": "bench",
                   "model_hash": "x", "backend": "bench", "sampling_params": "{}", "seed": 0, "sample_index": k,
                   "work_key": "w", "text": text, "token_count": len(text), "finish_reason": "stop"}
                  for i, p in enumerate(problems)
                  for k, (origin, text) in enumerate((("policy", wrong[i]), ("reference", p.reference_solution)))]
    n = n_pairs
    pairs = {"pair_id": [f"pair{i}" for i in range(n)], "prompt_id": [f"p{i}" for i in range(n)],
             "dataset": [DATASET] * n, "scenario": [2] * n, "kind": ["mixed"] * n,
             "prompt": [p.question for p in problems], "chosen": [p.reference_solution for p in problems],
             "rejected": wrong, "chosen_candidate_id": [f"c{i}-1" for i in range(n)],
             "rejected_candidate_id": [f"c{i}-0" for i in range(n)], "chosen_origin": ["reference"] * n,
             "rejected_origin": ["policy"] * n, "chosen_score": [1.0] * n, "rejected_score": [0.0] * n,
             "margin": [1.0] * n, "judge_name": ["rule"] * n, "strategy": ["reference_vs_worst_policy"] * n}
    with ws.writer():
        ws.write_part("prompts", "bench", pa.Table.from_pylist(prompts))
        ws.write_part("candidates", "bench", pa.Table.from_pylist(candidates))
        ws.write_part("pairs", DATASET, pa.table(pairs))
    score_pairs(ws, model_dir, device=device)
    exported = export_pairs(ws, root / "trl", dataset=DATASET, conversational=True)
    return ws, Path(exported[DATASET]["path"])


# ------------------------------------------------------------------------------------------------
# worker: one side, one repetition, in its own process
# ------------------------------------------------------------------------------------------------
class Meter:
    """Step timestamps, token counts and memory of one run.

    Memory on CPU: peak RSS (ru_maxrss) of the whole process, and RSS sampled every 10 ms
    in three phases -- before the timed window (loading, data preparation, prefdata's
    start measurements or TRL's reference precompute, the warm-up step), the timed window,
    and after it (prefdata's final measurements and save). The workers run with
    MALLOC_MMAP_THRESHOLD_ set, so large freed tensors go back to the OS and RSS falls
    when memory is freed; without it glibc keeps freed memory and every phase would
    show the peak of the phases before it.
    """

    def __init__(self, device: str):
        import psutil

        self.device = device
        self.proc = psutil.Process()
        self.baseline_rss = self.proc.memory_info().rss
        self.marks: list[float] = []        # time after each optimizer step
        self.tokens: list[int] = []         # non-padding tokens of each optimizer step
        self.pending = 0                    # tokens seen since the last step mark
        self.phase = 0                      # 0 before the timed window, 1 in it, 2 after it
        self.phase_peak = [0, 0, 0]
        self.window_peak_cuda = 0
        self._stop = False
        self._sampler = threading.Thread(target=self._sample, daemon=True)
        self._sampler.start()

    def _sample(self):
        while not self._stop:
            rss = self.proc.memory_info().rss
            self.phase_peak[self.phase] = max(self.phase_peak[self.phase], rss)
            time.sleep(0.01)

    def add_tokens(self, n: int):
        self.pending += n

    def step_done(self, warmup: int, steps: int):
        import torch

        if self.device == "cuda":
            torch.cuda.synchronize()
        self.marks.append(time.perf_counter())
        self.tokens.append(self.pending)
        self.pending = 0
        k = len(self.marks)
        if k == warmup:  # the timed window opens
            self.phase = 1
            if self.device == "cuda":
                torch.cuda.reset_peak_memory_stats()
        elif k == warmup + steps:
            self.phase = 2
            if self.device == "cuda":
                self.window_peak_cuda = torch.cuda.max_memory_allocated()

    def result(self, warmup: int, steps: int, pairs_per_step: int) -> dict:
        import resource

        self._stop = True
        if len(self.marks) < warmup + steps:
            raise RuntimeError(f"only {len(self.marks)} optimizer steps were seen, expected {warmup + steps}")
        seconds = self.marks[warmup + steps - 1] - self.marks[warmup - 1]
        tokens = sum(self.tokens[warmup:warmup + steps])
        timed = range(warmup, warmup + steps)
        durations = {i: self.marks[i] - self.marks[i - 1] for i in timed}
        mb = 2**20
        out = {"seconds": seconds, "steps": steps, "pairs": steps * pairs_per_step, "tokens": tokens,
               "pairs_per_s": steps * pairs_per_step / seconds, "tokens_per_s": tokens / seconds,
               # per-step medians: robust to a burst of load from other users during one step
               "median_step_pairs_per_s": statistics.median(pairs_per_step / durations[i] for i in timed),
               "median_step_tokens_per_s": statistics.median(self.tokens[i] / durations[i] for i in timed),
               "step_seconds": [b - a for a, b in zip(self.marks, self.marks[1:])],
               "step_tokens": self.tokens,
               "baseline_rss_mb": self.baseline_rss / mb,
               "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}
        out["peak_delta_mb"] = out["peak_rss_mb"] - out["baseline_rss_mb"]
        for name, peak in zip(("before_window", "window", "after_window"), self.phase_peak):
            out[f"{name}_peak_delta_mb"] = peak / mb - out["baseline_rss_mb"] if peak else None
        if self.device == "cuda":
            import torch

            out["peak_cuda_mb"] = torch.cuda.max_memory_allocated() / mb
            out["window_peak_cuda_mb"] = self.window_peak_cuda / mb
        return out


def run_ours(spec: dict, meter: Meter) -> None:
    import prefdata.score as score
    from prefdata.store import Workspace
    from prefdata.train.config import TrainConfig
    from prefdata.train.loop import train
    from prefdata.train.losses import LossConfig

    warmup, steps = spec["warmup"], spec["steps"]
    # Count the non-padding tokens the loop packs: `train` imports packed_batch from prefdata.score
    # when it is called, so wrapping the module attribute sees every training micro-batch.
    real = score.packed_batch

    def counting(sequences, *args, **kwargs):
        meter.add_tokens(sum(len(p) + len(c) for p, c in sequences))
        return real(sequences, *args, **kwargs)

    score.packed_batch = counting
    # eval/checkpoint only at the end (after the timed window); one step more than timed so that the
    # final step's measurement, checkpoint and report land after the last timestamp
    cfg = TrainConfig(dataset=DATASET, model_path=spec["model_dir"], loss=LossConfig("dpo", beta=BETA), lr=LR,
                      batch_size=spec["pairs_per_step"], max_steps=warmup + steps + 1,
                      max_length=spec["max_length"], checkpoint_every=0, eval_every=0, eval_pairs=8,
                      probe_pairs=2, heldout_responses=0, heldout_prompts=0, max_new_tokens=8,
                      gradient_checkpointing=spec["gradient_checkpointing"],
                      device=spec["device"], output_dir=spec["run_dir"], resume=False)
    started = time.perf_counter()
    meter.pending = 0

    def on_step(step, _record):
        meter.step_done(warmup, steps)

    meter.pending = 0
    train(Workspace.open(spec["ws"]), cfg, on_step=on_step)
    meter.e2e = time.perf_counter() - started
    meter.e2e_steps = warmup + steps + 1


def run_trl(spec: dict, meter: Meter, own_defaults: bool = False) -> None:
    import torch
    import trl
    from datasets import Dataset
    from transformers import AutoModelForCausalLM, AutoTokenizer, TrainerCallback
    import pyarrow.parquet as pq

    warmup, steps = spec["warmup"], spec["steps"]
    cuda = spec["device"] == "cuda"
    started = time.perf_counter()
    tokenizer = AutoTokenizer.from_pretrained(spec["model_dir"])
    model = AutoModelForCausalLM.from_pretrained(spec["model_dir"], dtype=torch.float32)
    dataset = Dataset(pq.read_table(spec["trl_data"]).select(["prompt", "chosen", "rejected"]))

    class Counting(trl.DPOTrainer):
        def compute_loss(self, model, inputs, *args, **kwargs):
            if model.training:
                meter.add_tokens(int(inputs["attention_mask"].sum()))
            return super().compute_loss(model, inputs, *args, **kwargs)

    class Marks(TrainerCallback):
        def on_step_end(self, args, state, control, **kwargs):
            meter.step_done(warmup, steps)

    args = trl.DPOConfig(
        output_dir=spec["run_dir"], per_device_train_batch_size=spec["pairs_per_step"],
        gradient_accumulation_steps=1, max_steps=warmup + steps, max_length=spec["max_length"],
        beta=BETA, loss_type=["sigmoid"], learning_rate=LR, lr_scheduler_type="constant", warmup_steps=0,
        weight_decay=0.0, max_grad_norm=1.0, precompute_ref_log_probs=True,
        # same precision as ours: fp32 on CPU (TRL would autocast to bf16 there), bf16 autocast on GPU
        **({} if own_defaults else {"bf16": cuda}),
        use_cpu=not cuda, report_to=[], save_strategy="no", disable_tqdm=True, seed=0,
        dataloader_num_workers=0,
        # TRL's default is on; the bench sets it for all sides
        **({} if own_defaults else {"gradient_checkpointing": spec["gradient_checkpointing"]}),
    )
    trainer = Counting(model=model, args=args, train_dataset=dataset, processing_class=tokenizer,
                       callbacks=[Marks()])
    meter.pending = 0
    trainer.train()
    meter.e2e = time.perf_counter() - started
    meter.e2e_steps = warmup + steps


def run_bare(spec: dict, meter: Meter, packed: bool) -> None:
    """Forward + backward + AdamW over ours' batches: the ceiling for the same tokens."""
    import math

    import torch
    import torch.nn.functional as F

    from prefdata.score import encode_completions, encode_prompts, load_model, pack
    from prefdata.store import Workspace

    warmup, steps, b = spec["warmup"], spec["steps"], spec["pairs_per_step"]
    device = torch.device(spec["device"])
    cuda = device.type == "cuda"
    started = time.perf_counter()
    model, tokenizer = load_model(spec["model_dir"], device)
    if spec["gradient_checkpointing"]:
        model.gradient_checkpointing_enable()
    pairs = Workspace.open(spec["ws"]).read("pairs").to_pydict()
    prompts = encode_prompts(tokenizer, pairs["prompt"], pairs["messages"])
    chosen, rejected = encode_completions(tokenizer, pairs["chosen"]), encode_completions(tokenizer, pairs["rejected"])
    n = len(prompts)
    pad = tokenizer.pad_token_id
    optimizer = torch.optim.AdamW(model.parameters(), lr=LR, weight_decay=0.0)
    model.train()
    per_epoch = math.ceil(n / b)

    def batch_at(step):  # the same seeded order as prefdata's loop (seed 0), so the same pairs per step
        epoch, j = divmod(step, per_epoch)
        order = torch.randperm(n, generator=torch.Generator().manual_seed(epoch))
        return order[j * b:(j + 1) * b].tolist()

    def inputs(idx):
        seqs = [prompts[i] + chosen[i] for i in idx] + [prompts[i] + rejected[i] for i in idx]
        meter.add_tokens(sum(map(len, seqs)))
        if not packed:
            width = max(map(len, seqs))
            ids = torch.full((len(seqs), width), pad, dtype=torch.long)
            mask = torch.zeros((len(seqs), width), dtype=torch.long)
            for r, s in enumerate(seqs):
                ids[r, :len(s)] = torch.tensor(s)
                mask[r, :len(s)] = 1
            labels = ids.masked_fill(mask == 0, -100)
            return dict(input_ids=ids.to(device), attention_mask=mask.to(device)), labels.to(device)
        rows = pack([len(s) for s in seqs], spec["max_length"])
        width = max(sum(len(seqs[i]) for i in row) for row in rows)
        ids = torch.full((len(rows), width), pad, dtype=torch.long)
        pos = torch.zeros((len(rows), width), dtype=torch.long)
        labels = torch.full((len(rows), width), -100, dtype=torch.long)
        for r, row in enumerate(rows):
            at = 0
            for i in row:
                s = torch.tensor(seqs[i])
                ids[r, at:at + len(s)] = s
                pos[r, at:at + len(s)] = torch.arange(len(s))
                labels[r, at:at + len(s) - 1] = s[1:]  # never predict across a sequence boundary
                at += len(s)
            pos[r, at:] = torch.arange(width - at)
        return dict(input_ids=ids.to(device), position_ids=pos.to(device)), labels.to(device)

    for step in range(warmup + steps):
        kwargs, labels = inputs(batch_at(step))
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=cuda):
            logits = model(**kwargs, use_cache=False).logits
        if not packed:
            logits, labels = logits[:, :-1], labels[:, 1:]
        loss = F.cross_entropy(logits.float().reshape(-1, logits.shape[-1]), labels.reshape(-1), ignore_index=-100)
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        meter.step_done(warmup, steps)
    meter.e2e = time.perf_counter() - started
    meter.e2e_steps = warmup + steps


def worker(side: str, spec_path: str, out_path: str) -> None:
    spec = json.loads(Path(spec_path).read_text())
    import torch

    torch.set_num_threads(spec["threads"])
    # Every side imports the same modules before the memory baseline, so import costs cancel out.
    # transformers and trl import lazily: name the classes, or their ~200 MB of code would land
    # in whichever side first touches them.
    import datasets  # noqa: F401
    import matplotlib.backends.backend_agg  # noqa: F401  (prefdata's report plots)
    import matplotlib.figure  # noqa: F401
    import polars  # noqa: F401
    import psutil  # noqa: F401
    import pyarrow.parquet  # noqa: F401
    from transformers import (AutoModelForCausalLM, AutoTokenizer, LlamaForCausalLM,  # noqa: F401
                              Qwen2ForCausalLM, Trainer, TrainerCallback)
    from trl import DPOConfig, DPOTrainer  # noqa: F401

    import prefdata.export  # noqa: F401
    import prefdata.score  # noqa: F401
    import prefdata.store  # noqa: F401
    import prefdata.train.loop  # noqa: F401
    import prefdata.train.report  # noqa: F401

    if spec["device"] == "cuda":
        torch.cuda.init()
        torch.cuda.reset_peak_memory_stats()
    meter = Meter(spec["device"])
    if side == "ours":
        run_ours(spec, meter)
    elif side in ("trl", "trl_defaults"):
        run_trl(spec, meter, own_defaults=side == "trl_defaults")
    else:
        run_bare(spec, meter, packed=side == "bare_packed")
    result = meter.result(spec["warmup"], spec["steps"], spec["pairs_per_step"])
    result.update(e2e_seconds=meter.e2e, e2e_steps=meter.e2e_steps, threads=torch.get_num_threads())
    Path(out_path).write_text(json.dumps(result))


def row_length_check(model_dir: Path, ws_root: Path, pairs_per_step: int, max_length: int, threads: int) -> dict:
    """How much prefdata's packing row length costs: the same packed sequences laid out in rows of
    `max_length` (training now) or 4096 = `eval_batch_tokens` (scoring/measurement now) versus rows of
    the longest sequence. With position-id packing transformers builds a dense block-diagonal mask, so
    attention work and mask memory grow with the row length, not with the sequences' own lengths."""
    import torch

    from prefdata.score import encode_completions, encode_prompts, load_model, packed_batch, sequence_logps
    from prefdata.store import Workspace

    torch.set_num_threads(threads)
    model, tokenizer = load_model(model_dir, "cpu")
    pairs = Workspace.open(ws_root).read("pairs").to_pydict()
    prompts = encode_prompts(tokenizer, pairs["prompt"], pairs["messages"])
    seqs = (list(zip(prompts, encode_completions(tokenizer, pairs["chosen"])))
            + list(zip(prompts, encode_completions(tokenizer, pairs["rejected"]))))
    pad = tokenizer.pad_token_id

    def timed(fn, n):
        fn()
        return statistics.median(_seconds(fn) for _ in range(n))

    def evaluate(row):  # table1_after / measure: no-grad packed forwards of ~4096 tokens each
        with torch.no_grad():
            group, used = [], 0
            for s in seqs:
                if group and used + len(s[0]) + len(s[1]) > 4096:
                    sequence_logps(model, packed_batch(group, row, pad))
                    group, used = [], 0
                group.append(s)
                used += len(s[0]) + len(s[1])
            sequence_logps(model, packed_batch(group, row, pad))

    optimizer = torch.optim.AdamW(model.parameters(), lr=LR)
    k = pairs_per_step
    batch = seqs[:k] + seqs[len(seqs) // 2:len(seqs) // 2 + k]  # k pairs: chosen and rejected sequences

    def step(row):
        sequence_logps(model, packed_batch(batch, row, pad)).sum().backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    longest_all = max(len(p) + len(c) for p, c in seqs)
    longest = max(len(p) + len(c) for p, c in batch)
    return {"eval_all_pairs_seconds": {"rows_4096": timed(lambda: evaluate(4096), 3),
                                       f"rows_{longest_all}_longest": timed(lambda: evaluate(longest_all), 3)},
            "train_step_seconds": {f"rows_{max_length}_max_length": timed(lambda: step(max_length), 5),
                                   f"rows_{longest}_longest": timed(lambda: step(longest), 5)},
            "sequences": len(seqs), "pairs_per_step": k, "threads": threads}


def _seconds(fn) -> float:
    started = time.perf_counter()
    fn()
    return time.perf_counter() - started


# ------------------------------------------------------------------------------------------------
# driver
# ------------------------------------------------------------------------------------------------
def machine(device: str) -> dict:
    import torch
    import transformers
    import trl

    cpu = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                if line.startswith("model name")), platform.processor())
    info = {"cpu": cpu, "cpus": os.cpu_count(), "python": platform.python_version(), "torch": torch.__version__,
            "transformers": transformers.__version__, "trl": trl.__version__, "platform": platform.platform()}
    if device == "cuda":
        info["gpu"] = torch.cuda.get_device_name(0)
    return info


def code_state() -> dict:
    """Which trainer code was measured: HEAD, and the measured files that differ from it."""
    import hashlib

    files = sorted(str(p.relative_to(ROOT)) for p in [*(ROOT / "prefdata" / "train").glob("*.py"),
                                                       ROOT / "prefdata" / "score.py"])

    def git(*cmd):
        return subprocess.run(["git", *cmd], cwd=ROOT, capture_output=True, text=True).stdout.strip()

    dirty = git("status", "--porcelain", "--", *files).splitlines()
    return {"head": git("rev-parse", "HEAD"), "uncommitted": [line[3:] for line in dirty],
            "sha256": {f: hashlib.sha256((ROOT / f).read_bytes()).hexdigest()[:16] for f in files}}


def median(runs: list[dict], key: str) -> float:
    return statistics.median(r[key] for r in runs)


def summarise(results: dict, args) -> dict:
    cuda = args.device == "cuda"
    sides = {}
    for side, runs in results.items():
        v = {"runs": len(runs), "pairs_per_s": median(runs, "pairs_per_s"), "tokens_per_s": median(runs, "tokens_per_s"),
             "median_step_pairs_per_s": median(runs, "median_step_pairs_per_s"),
             "median_step_tokens_per_s": median(runs, "median_step_tokens_per_s"),
             "step_seconds": median(runs, "seconds") / args.steps, "tokens_per_step": median(runs, "tokens") / args.steps,
             "peak_mb": median(runs, "peak_cuda_mb" if cuda else "peak_delta_mb"),
             "e2e_seconds": median(runs, "e2e_seconds"), "e2e_steps": runs[0]["e2e_steps"]}
        if cuda:
            v["window_peak_mb"] = median(runs, "window_peak_cuda_mb")
        else:
            for phase in ("before_window", "window", "after_window"):
                vals = [r[f"{phase}_peak_delta_mb"] for r in runs if r[f"{phase}_peak_delta_mb"] is not None]
                v[f"{phase}_peak_mb"] = statistics.median(vals) if vals else None
        # what the public call costs beyond its steps: model load, data preparation, measurements, saving
        v["fixed_overhead_seconds"] = v["e2e_seconds"] - v["e2e_steps"] * v["step_seconds"]
        sides[side] = v
    ours, trl = sides["ours"], sides["trl"]
    bares = [s for s in ("bare_padded", "bare_packed") if s in sides]
    ratios = {"ours_over_trl_pairs_per_s": ours["pairs_per_s"] / trl["pairs_per_s"],
              "ours_over_trl_tokens_per_s": ours["tokens_per_s"] / trl["tokens_per_s"],
              "ours_over_trl_pairs_per_s_per_step_medians":
                  ours["median_step_pairs_per_s"] / trl["median_step_pairs_per_s"],
              "ours_over_trl_peak_memory": ours["peak_mb"] / trl["peak_mb"],
              "ours_over_trl_window_peak_memory": ours["window_peak_mb"] / trl["window_peak_mb"]}
    goals = {"throughput >= 2x TRL (pairs/s)": ratios["ours_over_trl_pairs_per_s"] >= 2.0,
             "peak memory <= TRL (whole train call)": ratios["ours_over_trl_peak_memory"] <= 1.0}
    if bares:
        bare_name = max(bares, key=lambda s: sides[s]["tokens_per_s"])  # the ceiling: the faster bare layout
        bare = sides[bare_name]
        ratios.update({"bare_reference": bare_name,
                       "ours_over_bare_tokens_per_s": ours["tokens_per_s"] / bare["tokens_per_s"],
                       "ours_over_bare_tokens_per_s_per_step_medians":
                           ours["median_step_tokens_per_s"] / max(sides[s]["median_step_tokens_per_s"] for s in bares),
                       "trl_over_bare_tokens_per_s": trl["tokens_per_s"] / bare["tokens_per_s"]})
        for s in bares:
            ratios[f"ours_over_{s}_tokens_per_s"] = ours["tokens_per_s"] / sides[s]["tokens_per_s"]
        if "trl_defaults" in sides:
            ratios["trl_defaults_over_bare_tokens_per_s"] = sides["trl_defaults"]["tokens_per_s"] / bare["tokens_per_s"]
        if not cuda:
            goals[f"tokens/s >= 60% of bare loop ({bare_name})"] = ratios["ours_over_bare_tokens_per_s"] >= 0.6
    if "trl_defaults" in sides:
        ratios["ours_over_trl_defaults_pairs_per_s"] = ours["pairs_per_s"] / sides["trl_defaults"]["pairs_per_s"]
        ratios["ours_over_trl_defaults_peak_memory"] = ours["peak_mb"] / sides["trl_defaults"]["peak_mb"]
    return {"sides": sides, "ratios": ratios, "goals": goals}


def write_markdown(path: Path, report: dict) -> None:
    s, r, g, st, m = report["summary"]["sides"], report["summary"]["ratios"], report["summary"]["goals"], \
        report["settings"], report["machine"]
    cuda = st["device"] == "cuda"
    names = {"ours": "prefdata `train()`", "trl": "TRL `DPOTrainer.train()`",
             "trl_defaults": "TRL `DPOTrainer.train()`, its own bf16/checkpointing defaults",
             "bare_padded": "bare fwd+bwd+AdamW, padded", "bare_packed": "bare fwd+bwd+AdamW, packed"}
    lines = [
        f"# Training throughput: prefdata vs TRL DPOTrainer vs a bare loop ({st['device'].upper()})", "",
        "`python bench/bench_train.py" + "".join(f" {a}" if " " not in a else " '...'" for a in report["argv"]) + "`",
        "",
        f"Model: random-init `{st['model_shape']}` ({st['parameters'] / 1e6:.1f}M parameters, "
        f"{'fp32 weights + bf16 autocast' if cuda else 'fp32'}); {st['n_pairs']} toy-task pairs "
        f"(scenario 2 shape: chosen = reference solution, rejected = wrong policy-style answer), character "
        f"tokenizer, {st['mean_tokens_per_pair']:.0f} non-padding tokens per pair on average (prompt counted for "
        f"chosen and for rejected); {st['pairs_per_step']} pairs per optimizer step (one micro-batch), "
        f"max_length {st['max_length']}, DPO sigmoid beta={BETA}, AdamW lr={LR}, grad clip 1.0 (ours, TRL); "
        f"torch threads = {st['threads']} and activation (gradient) checkpointing "
        f"{st['gradient_checkpointing']} for every side. Each run: {st['warmup']} warm-up step, then "
        f"{st['steps']} timed steps; {st['reps']} runs per side, alternating order (a different side first in "
        f"each round), each run in a fresh subprocess; every figure is the median over runs.", "",
        "## Throughput", "",
        "| side | runs | pairs/s | non-pad tokens/s | per-step median pairs/s | s/step | tokens/step | "
        "end-to-end s (steps) | fixed overhead s |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for side, v in s.items():
        lines.append(f"| {names[side]} | {v['runs']} | {v['pairs_per_s']:.2f} | {v['tokens_per_s']:.0f} | "
                     f"{v['median_step_pairs_per_s']:.2f} | {v['step_seconds']:.2f} | {v['tokens_per_step']:.0f} | "
                     f"{v['e2e_seconds']:.1f} ({v['e2e_steps']}) | {v['fixed_overhead_seconds']:.1f} |")
    lines += ["", "pairs/s and tokens/s: timed window (wall time of the timed steps). Per-step median: the "
              "median over the timed steps of each run, then over runs (less sensitive to a burst of load "
              "from other users). End-to-end: the whole call (prefdata: `train()`, which loads the model and "
              "measures before and after; TRL: model load + `DPOTrainer(...)` + `train()`; bare: load + steps); "
              "fixed overhead = end-to-end minus its steps at the median step time.", "", "## Memory", ""]
    if cuda:
        lines += ["| side | peak GPU memory allocated, whole call (MB) | timed window (MB) |", "|---|---|---|"]
        lines += [f"| {names[k]} | {v['peak_mb']:.0f} | {v['window_peak_mb']:.0f} |" for k, v in s.items()]
    else:
        lines += ["Peak RSS above the worker's RSS after imports (every side imports the same modules first). "
                  "Whole call: ru_maxrss. Phases: RSS sampled every 10 ms (workers run with "
                  "MALLOC_MMAP_THRESHOLD_=1048576 so freed tensors leave RSS).", "",
                  "| side | whole call (MB) | before the timed window | timed window | after it |",
                  "|---|---|---|---|---|"]
        fmt = lambda x: "-" if x is None else f"{x:.0f}"  # noqa: E731
        lines += [f"| {names[k]} | {v['peak_mb']:.0f} | {fmt(v['before_window_peak_mb'])} | "
                  f"{fmt(v['window_peak_mb'])} | {fmt(v['after_window_peak_mb'])} |" for k, v in s.items()]
    lines += [
        "", "## Ratios (medians)", "",
        f"- ours / TRL pairs/s: **{r['ours_over_trl_pairs_per_s']:.2f}x** (tokens/s "
        f"{r['ours_over_trl_tokens_per_s']:.2f}x; per-step medians {r['ours_over_trl_pairs_per_s_per_step_medians']:.2f}x)",
        f"- ours / TRL peak memory: **{r['ours_over_trl_peak_memory']:.2f}** whole call, "
        f"{r['ours_over_trl_window_peak_memory']:.2f} in the timed window",
    ]
    if "bare_reference" in r:
        lines += [
            f"- ours / bare tokens/s: **{r['ours_over_bare_tokens_per_s']:.2f}** (against {r['bare_reference']}, "
            f"the faster bare layout; per-step medians {r['ours_over_bare_tokens_per_s_per_step_medians']:.2f})"
            + "".join(f"; vs {k[len('ours_over_'):-len('_tokens_per_s')]}: {v:.2f}"
                      for k, v in r.items() if k in ("ours_over_bare_padded_tokens_per_s",
                                                   "ours_over_bare_packed_tokens_per_s")),
            f"- TRL / bare tokens/s: {r['trl_over_bare_tokens_per_s']:.2f}"]
    if "ours_over_trl_defaults_pairs_per_s" in r:
        lines += [f"- ours / TRL with its own bf16 and checkpointing defaults: pairs/s "
                  f"**{r['ours_over_trl_defaults_pairs_per_s']:.2f}x**, peak memory "
                  f"{r['ours_over_trl_defaults_peak_memory']:.2f}"
                  + (f"; that TRL / bare tokens/s: {r['trl_defaults_over_bare_tokens_per_s']:.3f}"
                     if "trl_defaults_over_bare_tokens_per_s" in r else "")]
    lines += ["", "## Goals", ""] + [f"- {name}: **{'PASS' if ok else 'FAIL'}**" for name, ok in g.items()]
    lines += ["", "## Machine", "",
              f"{m['cpu']}, {m['cpus']} CPUs{', ' + m['gpu'] if 'gpu' in m else ''}; Python {m['python']}, torch "
              f"{m['torch']}, transformers {m['transformers']}, trl {m['trl']}. Load average (1/5/15 min) "
              f"before / after: {report['loadavg_before']} / {report['loadavg_after']} (shared machine; the "
              f"sides alternate, so they share its load). Whole benchmark: {report['bench_seconds']:.0f} s."]
    code = report["code"]
    lines += ["", f"Trainer code measured: HEAD {code['head'][:10]}" + (
        f" plus uncommitted changes to {', '.join(code['uncommitted'])} (sha256 prefixes in the JSON)"
        if code["uncommitted"] else "") + "."]
    rc = report.get("row_length_check")
    if rc:
        (e_now, e_new), (t_now, t_new) = rc["eval_all_pairs_seconds"].items(), rc["train_step_seconds"].items()
        lines += ["", "## Packing row length (`--row-length-check`)", "",
                  "prefdata packs training micro-batches into rows of `max_length` tokens and scoring/measurement "
                  "batches into rows of `eval_batch_tokens` (4096); with position-id packing transformers builds "
                  "a dense block-diagonal mask, so attention work and mask memory grow with the row length. "
                  "Same sequences, same model, rows of the longest sequence instead (median seconds):", "",
                  f"- train step ({rc['pairs_per_step']} pairs): {t_now[0]} {t_now[1]:.3f} s -> {t_new[0]} "
                  f"{t_new[1]:.3f} s ({t_now[1] / t_new[1]:.2f}x)",
                  f"- eval pass over all {rc['sequences']} sequences (Table 1 after training): {e_now[0]} "
                  f"{e_now[1]:.3f} s -> {e_new[0]} {e_new[1]:.3f} s ({e_now[1] / e_new[1]:.2f}x)"]
    if report.get("notes"):
        lines += ["", "## Notes", ""] + [f"- {n}" for n in report["notes"]]
    path.write_text("\n".join(lines) + "\n")


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", choices=("cpu", "cuda"), default="cpu")
    parser.add_argument("--model-shape", choices=sorted(SHAPES), default=None,
                        help="default: bench-small on CPU, qwen2-0.5b on CUDA")
    parser.add_argument("--pairs", type=int, default=64, help="pairs in the dataset")
    parser.add_argument("--pairs-per-step", type=int, default=None, help="default 16 on CPU, 32 on CUDA")
    parser.add_argument("--max-length", type=int, default=512)
    parser.add_argument("--steps", type=int, default=4, help="timed optimizer steps per run")
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--threads", type=int, default=1, help="torch intra-op threads, every side")
    parser.add_argument("--gradient-checkpointing", choices=("off", "on"), default="off",
                        help="activation checkpointing for every side (prefdata's default is off, TRL's is on)")
    parser.add_argument("--row-length-check", action="store_true",
                        help="after the comparison, time prefdata's packing at its row lengths vs rows of the longest "
                             "sequence (train step and eval pass); written under row_length_check")
    parser.add_argument("--tag", default="", help="suffix of the result files: train_<device><tag>.json")
    parser.add_argument("--sides", default=",".join(SIDES),
                        help=f"comma-separated, from {', '.join(SIDES + EXTRA_SIDES)}")
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results")
    parser.add_argument("--workdir", type=Path, default=None, help="default: a temporary directory")
    parser.add_argument("--note", action="append", default=[], help="a line for the report's notes")
    parser.add_argument("--worker", nargs=3, metavar=("SIDE", "SPEC", "OUT"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        return worker(*args.worker)
    args.model_shape = args.model_shape or ("bench-small" if args.device == "cpu" else "qwen2-0.5b")
    args.pairs_per_step = args.pairs_per_step or (16 if args.device == "cpu" else 32)
    sides = args.sides.split(",")

    import torch

    torch.set_num_threads(args.threads)
    env = dict(os.environ, OMP_NUM_THREADS=str(args.threads), MKL_NUM_THREADS=str(args.threads),
               TOKENIZERS_PARALLELISM="false", TQDM_DISABLE="1", HF_HUB_OFFLINE="1", HF_DATASETS_OFFLINE="1",
               TRANSFORMERS_OFFLINE="1", MALLOC_MMAP_THRESHOLD_="1048576", PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    loadavg_before = [round(x, 2) for x in os.getloadavg()]
    with tempfile.TemporaryDirectory(prefix="bench-train-") as tmp:
        work = args.workdir or Path(tmp)
        work.mkdir(parents=True, exist_ok=True)
        env["HF_DATASETS_CACHE"] = str(work / "hf-datasets-cache")
        t0 = time.perf_counter()
        model_dir = build_model_dir(args.model_shape, work / "model")
        ws, trl_data = build_workspace(work, model_dir, args.pairs, args.device)
        pairs = ws.read("pairs").to_pydict()
        prompt_tokens = [len(x) for x in __import__("prefdata.score", fromlist=["x"]).encode_prompts(
            __import__("transformers").AutoTokenizer.from_pretrained(model_dir), pairs["prompt"], pairs["messages"])]
        mean_tokens = statistics.mean(2 * p + c + r for p, c, r in
                                      zip(prompt_tokens, pairs["chosen_tokens"], pairs["rejected_tokens"]))
        from transformers import AutoConfig

        cfg = AutoConfig.from_pretrained(model_dir)
        with torch.device("meta"):
            n_params = sum(p.numel() for p in __import__("transformers").AutoModelForCausalLM.from_config(cfg)
                           .parameters())
        print(f"setup {time.perf_counter() - t0:.1f}s: {args.model_shape} ({n_params / 1e6:.1f}M params), "
              f"{args.pairs} scored pairs, {mean_tokens:.0f} tokens/pair", flush=True)
        results: dict[str, list[dict]] = {s: [] for s in sides}
        for rep in range(args.reps):
            order = sides[rep % len(sides):] + sides[:rep % len(sides)]  # a different side first each time
            for side in order:
                spec = {"model_dir": str(model_dir), "ws": str(ws.root), "trl_data": str(trl_data),
                        "device": args.device, "threads": args.threads, "pairs_per_step": args.pairs_per_step,
                        "max_length": args.max_length, "warmup": args.warmup, "steps": args.steps,
                        "gradient_checkpointing": args.gradient_checkpointing == "on",
                        "run_dir": str(work / f"run-{side}-{rep}")}
                spec_path, out_path = work / f"spec-{side}-{rep}.json", work / f"result-{side}-{rep}.json"
                spec_path.write_text(json.dumps(spec))
                started = time.perf_counter()
                proc = subprocess.run([sys.executable, str(Path(__file__).resolve()), "--worker", side,
                                       str(spec_path), str(out_path)], env=env, cwd=ROOT,
                                      capture_output=True, text=True)
                if proc.returncode != 0:
                    sys.stderr.write(proc.stdout[-3000:] + proc.stderr[-6000:])
                    raise SystemExit(f"{side} (rep {rep}) failed with exit code {proc.returncode}")
                run = json.loads(out_path.read_text())
                results[side].append(run)
                print(f"rep {rep} {side:12s} {run['pairs_per_s']:7.2f} pairs/s {run['tokens_per_s']:8.0f} tok/s "
                      f"peak {run.get('peak_cuda_mb', run['peak_delta_mb']):7.0f} MB "
                      f"(window {run.get('window_peak_cuda_mb', run.get('window_peak_delta_mb')) or 0:7.0f}) "
                      f"e2e {run['e2e_seconds']:.1f}s, process {time.perf_counter() - started:.1f}s",
                      flush=True)
        row_check = (row_length_check(model_dir, ws.root, args.pairs_per_step, args.max_length, args.threads)
                     if args.row_length_check and args.device == "cpu" else None)
    report = {
        "benchmark": "train", "argv": argv if argv is not None else sys.argv[1:], "machine": machine(args.device),
        "bench_seconds": round(time.perf_counter() - t0, 1), "code": code_state(), "loadavg_before": loadavg_before, "loadavg_after": [round(x, 2) for x in os.getloadavg()],
        "settings": {"device": args.device, "model_shape": args.model_shape, "parameters": n_params,
                     "n_pairs": args.pairs, "pairs_per_step": args.pairs_per_step, "max_length": args.max_length,
                     "steps": args.steps, "warmup": args.warmup, "reps": args.reps, "threads": args.threads,
                     "gradient_checkpointing": args.gradient_checkpointing,
                     "mean_tokens_per_pair": mean_tokens, "beta": BETA, "lr": LR,
                     "precision": "fp32" if args.device == "cpu" else "bf16 autocast"},
        "summary": summarise(results, args) if {"ours", "trl"} <= set(sides) else None,
        "notes": args.note, "row_length_check": row_check, "runs": results,
    }
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / f"train_{args.device}{args.tag}.json").write_text(json.dumps(report, indent=2) + "\n")
    if report["summary"]:
        write_markdown(args.out / f"train_{args.device}{args.tag}.md", report)
        print(json.dumps({"ratios": report["summary"]["ratios"], "goals": report["summary"]["goals"]}, indent=2))


if __name__ == "__main__":
    main()
