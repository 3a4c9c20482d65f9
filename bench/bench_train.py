"""Benchmark: prefdata's DPO trainer vs TRL's `DPOTrainer` vs a bare forward+backward loop.

Sides, same model, same scored pairs, same pairs per optimizer step, same max length,
same precision, same torch thread count, run side by side in alternating order (a
different side first in each repetition), each repetition of each side in a fresh
subprocess so that its peak memory is its own:

* ``ours``   `prefdata.train.loop.train` on a workspace with scored pairs (the public
             function, unmodified, its defaults: shared-prefix packing, each prompt computed
             once per pair; its step times come from its own `on_step` callback);
* ``ours_unshared``  the same with `shared_prefix=False` (prompt computed once per response);
* ``trl``    TRL's `DPOTrainer.train()` on the same pairs in TRL's conversational form (what
             `prefdata export --format trl --conversational` writes, built in memory), so TRL
             renders the same chat template; `precompute_ref_log_probs=True` so it, like ours, holds one model and
             reads fixed reference log-probs;
* ``bare``   the ceiling for the unshared tokens: for the same pairs (ours' batches, in ours'
             order) the 2 x pairs sequences prompt+chosen and prompt+rejected packed into rows
             as wide as the longest sequence, with restarting position ids; the model body,
             the output head on the completion positions only, cross-entropy, backward, and
             the optimizer prefdata uses (fused AdamW).

Two workloads (`--workload`): ``toy`` (the toy task's short questions, prompts shorter than
the responses) and ``long-prompt`` (a chat prompt of worked examples, about 3x the length of
the responses, as in chat data).

Measured per run: wall time of a fixed number of optimizer steps after one warm-up
step (timestamps taken after each optimizer step; model load, dataset preparation,
TRL's reference precompute and prefdata's start/end measurements fall outside the
window), pairs/s, non-padding tokens/s (prompt + completion tokens of chosen and of
rejected, i.e. the unshared token count, the same for every side; the tokens each side
actually computes are recorded too), peak memory (CPU: peak RSS of the worker process
minus its RSS after imports, both for the whole train call and -- sampled every 10 ms --
before, inside and after the timed window; GPU: `torch.cuda.max_memory_allocated`), and
the end-to-end time of the whole call. Every headline figure is the median over all runs,
with the spread (min-max) beside it.

    python bench/bench_train.py --workload long-prompt   # writes train_cpu_long_prompt.{json,md}
    python bench/bench_train.py                          # toy workload: train_cpu.{json,md}
    python bench/bench_train.py --steps 2 --reps 1 --out /tmp/smoke   # smoke run
    python bench/bench_train.py --device cuda --model-shape qwen2-0.5b   # on a GPU machine

Writes bench/results/train_<device>[_long_prompt]<tag>.json and .md (`--out` to change).
"""

from __future__ import annotations

import argparse
import contextlib
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
SIDES = ("ours", "ours_unshared", "trl", "bare")
# Not run by default: TRL with its own DPOConfig defaults for precision and checkpointing (bf16 autocast
# even on CPU, gradient checkpointing on) -- what a TRL user gets without setting them.
EXTRA_SIDES = ("trl_defaults",)
DATASET = "bench"
# prompt length relative to the responses: the toy task's own short questions, or chat-style prompts
WORKLOADS = {"toy": None, "long-prompt": 3.0}
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
# setup: model directory, workspace with scored pairs
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


def few_shot_messages(problems, prompt_ratio: float) -> list[list[dict]]:
    """Chat prompts about `prompt_ratio` times as long as the pair's responses (the long-prompt
    workload): a system turn of worked examples (other problems' reference solutions) before
    the question, as chat data carries instructions and context. The toy tokenizer is one
    token per character, so lengths are counted in characters."""
    out = []
    for i, p in enumerate(problems):
        wrong = p.policy_solution.replace(f"is {p.answer}.", f"is {p.answer + 1}.")
        target = prompt_ratio * (len(p.reference_solution) + len(wrong) + 2) / 2
        shots, k = [], 1
        while len(p.question) + sum(map(len, shots)) + 16 < target:
            q = problems[(i + k) % len(problems)]
            shots.append(f"Q: {q.question}\nA: {q.reference_solution}\n")
            k += 1
        text = "Solve the problem step by step, as in these examples.\n" + "".join(shots)
        out.append([{"role": "system", "content": text[:max(0, int(target) - len(p.question) - 8)]},
                    {"role": "user", "content": p.question}])
    return out


def build_workspace(root: Path, model_dir: Path, n_pairs: int, device: str, workload: str = "toy") -> tuple:
    """A workspace whose `bench` dataset holds `n_pairs` toy-task pairs scored by `model_dir`;
    `workload="long-prompt"` gives every pair a chat prompt ~3x its responses' length."""
    import pyarrow as pa

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
    if workload == "long-prompt":
        pairs["messages"] = few_shot_messages(problems, WORKLOADS[workload])
    with ws.writer():
        ws.write_part("prompts", "bench", pa.Table.from_pylist(prompts))
        ws.write_part("candidates", "bench", pa.Table.from_pylist(candidates))
        ws.write_part("pairs", DATASET, pa.table(pairs))
    score_pairs(ws, model_dir, device=device)
    return ws


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
        self.device = device
        try:  # RSS on CPU; on a GPU machine without it (no TRL, whose accelerate needs it) CUDA memory suffices
            import psutil
        except ModuleNotFoundError:
            if device != "cuda":
                raise
            psutil = None
        self.proc = psutil.Process() if psutil else None
        self.baseline_rss = self.proc.memory_info().rss if psutil else 0
        self.marks: list[float] = []        # time after each optimizer step
        self.tokens: list[int] = []         # non-padding tokens of each optimizer step
        self.pending = 0                    # tokens seen since the last step mark
        self.computed: list[int] = []       # tokens each step actually ran through the model
        self.pending_computed = 0
        self.phase = 0                      # 0 before the timed window, 1 in it, 2 after it
        self.phase_peak = [0, 0, 0]
        self.window_peak_cuda = 0
        self._stop = False
        self._sampler = threading.Thread(target=self._sample, daemon=True)
        self._sampler.start()

    def _sample(self):
        while not self._stop and self.proc is not None:
            rss = self.proc.memory_info().rss
            self.phase_peak[self.phase] = max(self.phase_peak[self.phase], rss)
            time.sleep(0.01)

    def add_tokens(self, n: int, computed: int | None = None):
        """`n` non-padding tokens of the unshared sequences; `computed` of them actually run
        (fewer when prompts are shared; default all)."""
        self.pending += n
        self.pending_computed += n if computed is None else computed

    def step_done(self, warmup: int, steps: int):
        import torch

        if self.device == "cuda":
            torch.cuda.synchronize()
        self.marks.append(time.perf_counter())
        self.tokens.append(self.pending)
        self.computed.append(self.pending_computed)
        self.pending = self.pending_computed = 0
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
               "computed_tokens": sum(self.computed[warmup:warmup + steps]),
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


def run_ours(spec: dict, meter: Meter, shared_prefix: bool = True) -> None:
    import prefdata.score as score
    import prefdata.train.packing as packing
    from prefdata.store import Workspace
    from prefdata.train.config import TrainConfig
    from prefdata.train.loop import train
    from prefdata.train.loss_config import LossConfig

    warmup, steps = spec["warmup"], spec["steps"]
    # Count the tokens the loop packs: `train` imports its packers from their modules when it is
    # called, so wrapping the module attributes sees every training micro-batch.
    real_unshared, real_shared = score.packed_batch, packing.pair_batch

    def unshared(sequences, *args, **kwargs):
        meter.add_tokens(sum(len(p) + len(c) for p, c in sequences))
        return real_unshared(sequences, *args, **kwargs)

    def shared(pairs, *args, **kwargs):
        meter.add_tokens(sum(2 * len(p) + len(c) + len(r) for p, c, r in pairs),
                         computed=sum(len(p) + len(c) + len(r) for p, c, r in pairs))
        return real_shared(pairs, *args, **kwargs)

    score.packed_batch, packing.pair_batch = unshared, shared
    # eval/checkpoint only at the end (after the timed window); one step more than timed so that the
    # final step's measurement, checkpoint and report land after the last timestamp
    cfg = TrainConfig(dataset=DATASET, model_path=spec["model_dir"], loss=LossConfig("dpo", beta=BETA), lr=LR,
                      batch_size=spec["pairs_per_step"], max_steps=warmup + steps + 1,
                      max_length=spec["max_length"], checkpoint_every=0, eval_every=0, eval_pairs=8,
                      probe_pairs=2, heldout_responses=0, heldout_prompts=0, max_new_tokens=8,
                      gradient_checkpointing=spec["gradient_checkpointing"], shared_prefix=shared_prefix,
                      device=spec["device"], output_dir=spec["run_dir"], resume=False)
    started = time.perf_counter()

    def on_step(step, _record):
        meter.step_done(warmup, steps)

    meter.pending = meter.pending_computed = 0
    train(Workspace.open(spec["ws"]), cfg, on_step=on_step)
    meter.e2e = time.perf_counter() - started
    meter.e2e_steps = warmup + steps + 1


def trl_rows(ws_root: str) -> list[dict]:
    """The pairs in TRL's conversational form, in memory (as `prefdata export --format trl
    --conversational` writes them, without needing polars on a bare GPU machine): the chat
    prompt (the pair's messages, or its prompt as one user turn) and one assistant turn each."""
    from prefdata.store import Workspace

    pairs = Workspace.open(ws_root).read("pairs", ["prompt", "messages", "chosen", "rejected"]).to_pylist()
    return [{"prompt": p["messages"] or [{"role": "user", "content": p["prompt"]}],
             "chosen": [{"role": "assistant", "content": p["chosen"]}],
             "rejected": [{"role": "assistant", "content": p["rejected"]}]} for p in pairs]


def run_trl(spec: dict, meter: Meter, own_defaults: bool = False) -> None:
    import torch
    import trl
    from datasets import Dataset
    from transformers import AutoModelForCausalLM, AutoTokenizer, TrainerCallback
    warmup, steps = spec["warmup"], spec["steps"]
    cuda = spec["device"] == "cuda"
    started = time.perf_counter()
    tokenizer = AutoTokenizer.from_pretrained(spec["model_dir"])
    model = AutoModelForCausalLM.from_pretrained(spec["model_dir"], dtype=torch.float32)
    dataset = Dataset.from_list(trl_rows(spec["ws"]))

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
    meter.pending = meter.pending_computed = 0
    trainer.train()
    meter.e2e = time.perf_counter() - started
    meter.e2e_steps = warmup + steps


def run_bare(spec: dict, meter: Meter) -> None:
    """The model body, the head at completion positions only, cross-entropy, backward, fused AdamW,
    over ours' batches in the unshared layout: the ceiling for the same (unshared) tokens."""
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
    optimizer = torch.optim.AdamW(model.parameters(), lr=LR, weight_decay=0.0, fused=True)  # as prefdata's loop
    head = model.get_output_embeddings()
    model.train()
    per_epoch = math.ceil(n / b)

    def batch_at(step):  # the same seeded order as prefdata's loop (seed 0), so the same pairs per step
        epoch, j = divmod(step, per_epoch)
        order = torch.randperm(n, generator=torch.Generator().manual_seed(epoch))
        return order[j * b:(j + 1) * b].tolist()

    def inputs(idx):
        seqs = [(prompts[i], chosen[i]) for i in idx] + [(prompts[i], rejected[i]) for i in idx]
        lengths = [len(p) + len(c) for p, c in seqs]
        meter.add_tokens(sum(lengths))
        rows = pack(lengths, max(lengths))  # rows as wide as the longest sequence: least masked work
        width = max(sum(lengths[i] for i in row) for row in rows)
        ids = torch.full((len(rows), width), pad, dtype=torch.long)
        pos = torch.zeros((len(rows), width), dtype=torch.long)
        source, targets = [], []
        for r, row in enumerate(rows):
            at = 0
            for i in row:
                p, c = seqs[i]
                ids[r, at:at + len(p) + len(c)] = torch.tensor(p + c)
                pos[r, at:at + len(p) + len(c)] = torch.arange(len(p) + len(c))
                first = r * width + at + len(p) - 1  # completion token j is predicted one position before it
                source.extend(range(first, first + len(c)))
                targets.extend(c)
                at += len(p) + len(c)
            pos[r, at:] = torch.arange(width - at)
        as_long = dict(dtype=torch.long, device=device)
        return ids.to(device), pos.to(device), torch.tensor(source, **as_long), torch.tensor(targets, **as_long)

    for step in range(warmup + steps):
        ids, pos, source, targets = inputs(batch_at(step))
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=cuda):
            hidden = model.base_model(input_ids=ids, position_ids=pos, use_cache=False).last_hidden_state
            logits = head(hidden.reshape(-1, hidden.shape[-1]).index_select(0, source))
        loss = F.cross_entropy(logits.float(), targets)
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
    with contextlib.suppress(ModuleNotFoundError):  # optional on a bare GPU machine (psutil: RSS; matplotlib: plots)
        import psutil  # noqa: F401
        import matplotlib.backends.backend_agg  # noqa: F401
        import matplotlib.figure  # noqa: F401
    import pyarrow.parquet  # noqa: F401
    from transformers import (AutoModelForCausalLM, AutoTokenizer, LlamaForCausalLM,  # noqa: F401
                              Qwen2ForCausalLM, Trainer, TrainerCallback)

    if "trl" in spec["sides"]:  # a GPU machine may lack TRL; then no side imports it
        import datasets  # noqa: F401
        from trl import DPOConfig, DPOTrainer  # noqa: F401
    import prefdata.score  # noqa: F401
    import prefdata.store  # noqa: F401
    import prefdata.train.loop  # noqa: F401
    import prefdata.train.report  # noqa: F401

    if spec["device"] == "cuda":
        torch.cuda.init()
        torch.cuda.reset_peak_memory_stats()
    meter = Meter(spec["device"])
    if side in ("ours", "ours_unshared"):
        run_ours(spec, meter, shared_prefix=side == "ours")
    elif side in ("trl", "trl_defaults"):
        run_trl(spec, meter, own_defaults=side == "trl_defaults")
    else:
        run_bare(spec, meter)
    result = meter.result(spec["warmup"], spec["steps"], spec["pairs_per_step"])
    result.update(e2e_seconds=meter.e2e, e2e_steps=meter.e2e_steps, threads=torch.get_num_threads())
    Path(out_path).write_text(json.dumps(result))


# ------------------------------------------------------------------------------------------------
# driver
# ------------------------------------------------------------------------------------------------
def machine(device: str) -> dict:
    import torch
    import transformers

    cpu = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                if line.startswith("model name")), platform.processor())
    info = {"cpu": cpu, "cpus": os.cpu_count(), "python": platform.python_version(), "torch": torch.__version__,
            "transformers": transformers.__version__, "trl": _version("trl"), "platform": platform.platform()}
    if device == "cuda":
        info["gpu"] = torch.cuda.get_device_name(0)
    return info


def _version(package: str) -> str | None:
    import importlib.metadata

    try:
        return importlib.metadata.version(package)
    except importlib.metadata.PackageNotFoundError:
        return None


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


SHARED_MACHINE_NOTE = ("measured on a machine shared with other jobs (load average before/after below); "
                       "the sides alternate and every figure is a median over runs, with the spread beside it")
NAMES = {"ours": "prefdata `train()` (shared prefix, default)", "ours_unshared": "prefdata `train()`, unshared",
         "trl": "TRL `DPOTrainer.train()`", "trl_defaults": "TRL `DPOTrainer.train()`, its own bf16/checkpointing "
         "defaults", "bare": "bare loop (body + head at completions + fused AdamW)"}


def spread(runs: list[dict], key: str) -> dict:
    """Median over all runs, with the range."""
    values = [r[key] for r in runs if r.get(key) is not None]
    if not values:
        return {"median": None, "min": None, "max": None}
    return {"median": statistics.median(values), "min": min(values), "max": max(values)}


def ratio(a: dict, b: dict) -> dict:
    """a / b of two spreads: the ratio of the medians, and the widest range the runs allow."""
    return {"median": a["median"] / b["median"], "min": a["min"] / b["max"], "max": a["max"] / b["min"]}


def summarise(results: dict, args) -> dict:
    cuda = args.device == "cuda"
    sides = {}
    for side, runs in results.items():
        for r in runs:
            r["computed_tokens_per_s"] = r["computed_tokens"] / r["seconds"]
            r["step_mean_seconds"] = r["seconds"] / args.steps
        v = {"runs": len(runs), "e2e_steps": runs[0]["e2e_steps"]}
        for key in ("pairs_per_s", "tokens_per_s", "computed_tokens_per_s", "median_step_pairs_per_s",
                    "step_mean_seconds", "e2e_seconds"):
            v[key] = spread(runs, key)
        v["tokens_per_step"] = statistics.median(r["tokens"] for r in runs) / args.steps
        v["computed_tokens_per_step"] = statistics.median(r["computed_tokens"] for r in runs) / args.steps
        v["peak_mb"] = spread(runs, "peak_cuda_mb" if cuda else "peak_delta_mb")
        phases = ("window",) if cuda else ("before_window", "window", "after_window")
        for phase in phases:
            v[f"{phase}_peak_mb"] = spread(runs, "window_peak_cuda_mb" if cuda else f"{phase}_peak_delta_mb")
        sides[side] = v
    ratios, goals = {}, {}
    for a, b in (("ours", "trl"), ("ours", "ours_unshared"), ("ours", "bare"), ("ours_unshared", "bare"),
                 ("trl", "bare"), ("ours", "trl_defaults")):
        if a in sides and b in sides:
            ratios[f"{a}_over_{b}_pairs_per_s"] = ratio(sides[a]["pairs_per_s"], sides[b]["pairs_per_s"])
            ratios[f"{a}_over_{b}_peak_memory"] = ratio(sides[a]["peak_mb"], sides[b]["peak_mb"])
            ratios[f"{a}_over_{b}_window_peak_memory"] = ratio(sides[a]["window_peak_mb"], sides[b]["window_peak_mb"])
    if "ours_over_trl_pairs_per_s" in ratios:
        goals["throughput >= 2x TRL (pairs/s, medians)"] = ratios["ours_over_trl_pairs_per_s"]["median"] >= 2.0
        goals["peak memory <= TRL (whole train call, medians)"] = ratios["ours_over_trl_peak_memory"]["median"] <= 1.0
    return {"sides": sides, "ratios": ratios, "goals": goals}


def _cell(v: dict, fmt: str = ".2f") -> str:
    if v["median"] is None:
        return "-"
    return f"{v['median']:{fmt}} [{v['min']:{fmt}}-{v['max']:{fmt}}]"


def write_markdown(path: Path, report: dict) -> None:
    s, r, g, st, m = report["summary"]["sides"], report["summary"]["ratios"], report["summary"]["goals"], \
        report["settings"], report["machine"]
    cuda = st["device"] == "cuda"
    lines = [
        f"# Training throughput, {st['workload']} workload: prefdata vs TRL DPOTrainer vs a bare loop "
        f"({st['device'].upper()})", "",
        "Written by `python bench/bench_train.py" + "".join(f" {a}" if " " not in a else " '...'"
                                                           for a in report["argv"]) + "`.", "",
        f"Model: random-init `{st['model_shape']}` ({st['parameters'] / 1e6:.1f}M parameters, "
        f"{'fp32 weights + bf16 autocast' if cuda else 'fp32'}); {st['n_pairs']} toy-task pairs (scenario 2 shape: "
        f"chosen = reference solution, rejected = wrong policy-style answer), character tokenizer; per pair on "
        f"average {st['mean_prompt_tokens']:.0f} prompt tokens and {st['mean_response_tokens']:.0f} tokens per "
        f"response ({st['mean_tokens_per_pair']:.0f} non-padding tokens with the prompt counted for chosen and for "
        f"rejected, {st['mean_shared_tokens_per_pair']:.0f} with it counted once); {st['pairs_per_step']} pairs per "
        f"optimizer step (one micro-batch), max_length {st['max_length']}, DPO sigmoid beta={BETA}, AdamW "
        f"lr={LR}, grad clip 1.0 (ours, TRL); torch threads = {st['threads']} and activation checkpointing "
        f"{st['gradient_checkpointing']} for every side. Each run: {st['warmup']} warm-up step, then "
        f"{st['steps']} timed steps; {st['reps']} runs per side, alternating order, each in a fresh subprocess. "
        "Every figure: median over all runs [min-max].", "",
        "## Throughput", "",
        "| side | runs | pairs/s | non-pad tokens/s | tokens computed/s | per-step median pairs/s | s/step | "
        "end-to-end s (steps) |", "|---|---|---|---|---|---|---|---|",
    ]
    for side, v in s.items():
        lines.append(f"| {NAMES[side]} | {v['runs']} | {_cell(v['pairs_per_s'])} | {_cell(v['tokens_per_s'], '.0f')} | "
                     f"{_cell(v['computed_tokens_per_s'], '.0f')} | {_cell(v['median_step_pairs_per_s'])} | "
                     f"{_cell(v['step_mean_seconds'], '.3f')} | {_cell(v['e2e_seconds'], '.1f')} ({v['e2e_steps']}) |")
    lines += ["", "pairs/s and tokens/s over the timed window. Non-pad tokens: prompt + completion of chosen and of "
              "rejected (the unshared count, the same work for every side); tokens computed: what the side ran "
              "through the model (ours shares each prompt between its two responses). End-to-end: the whole call "
              "(prefdata: `train()`, which loads the model and measures before and after; TRL: model load + "
              "`DPOTrainer(...)` + `train()`; bare: load + steps).", "", "## Memory", ""]
    if cuda:
        lines += ["| side | peak GPU memory allocated, whole call (MB) | timed window (MB) |", "|---|---|---|"]
        lines += [f"| {NAMES[k]} | {_cell(v['peak_mb'], '.0f')} | {_cell(v['window_peak_mb'], '.0f')} |"
                  for k, v in s.items()]
    else:
        lines += ["Peak RSS above the worker's RSS after imports (every side imports the same modules first). "
                  "Whole call: ru_maxrss. Phases: RSS sampled every 10 ms (workers run with "
                  "MALLOC_MMAP_THRESHOLD_=1048576 so freed tensors leave RSS).", "",
                  "| side | whole call (MB) | before the timed window | timed window | after it |",
                  "|---|---|---|---|---|"]
        lines += [f"| {NAMES[k]} | {_cell(v['peak_mb'], '.0f')} | {_cell(v['before_window_peak_mb'], '.0f')} | "
                  f"{_cell(v['window_peak_mb'], '.0f')} | {_cell(v['after_window_peak_mb'], '.0f')} |"
                  for k, v in s.items()]
    lines += ["", "## Ratios", "", "Ratio of the medians [the widest range the runs allow: min/max to max/min].", ""]
    for key, v in r.items():
        lines.append(f"- {key.replace('_over_', ' / ').replace('_', ' ')}: **{v['median']:.2f}** "
                     f"[{v['min']:.2f}-{v['max']:.2f}]")
    lines += ["", "## Goals", ""] + [f"- {name}: **{'PASS' if ok else 'FAIL'}**" for name, ok in g.items()]
    lines += ["", "## Machine", "",
              f"{m['cpu']}, {m['cpus']} CPUs{', ' + m['gpu'] if 'gpu' in m else ''}; Python {m['python']}, torch "
              f"{m['torch']}, transformers {m['transformers']}, trl {m['trl']}. Load average (1/5/15 min) "
              f"before / after: {report['loadavg_before']} / {report['loadavg_after']}. Whole benchmark: "
              f"{report['bench_seconds']:.0f} s."]
    code = report["code"]
    lines += ["", f"Trainer code measured: HEAD {code['head'][:10]}" + (
        f" plus uncommitted changes to {', '.join(code['uncommitted'])} (sha256 prefixes in the JSON)"
        if code["uncommitted"] else "") + "."]
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
    parser.add_argument("--workload", choices=sorted(WORKLOADS), default="toy",
                        help="toy: the toy task's short prompts; long-prompt: chat prompts ~3x the responses")
    parser.add_argument("--time-budget", type=float, default=None,
                        help="seconds for the runs: no new repetition starts that would likely exceed it")
    parser.add_argument("--tag", default="", help="suffix of the result files: train_<device>[_long_prompt]<tag>.json")
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
        ws = build_workspace(work, model_dir, args.pairs, args.device, args.workload)
        pairs = ws.read("pairs").to_pydict()
        prompt_tokens = [len(x) for x in __import__("prefdata.score", fromlist=["x"]).encode_prompts(
            __import__("transformers").AutoTokenizer.from_pretrained(model_dir), pairs["prompt"], pairs["messages"])]
        lengths = list(zip(prompt_tokens, pairs["chosen_tokens"], pairs["rejected_tokens"]))
        mean_tokens = statistics.mean(2 * p + c + r for p, c, r in lengths)
        token_stats = {"mean_prompt_tokens": statistics.mean(p for p, _, _ in lengths),
                       "mean_response_tokens": statistics.mean((c + r) / 2 for _, c, r in lengths),
                       "mean_shared_tokens_per_pair": statistics.mean(p + c + r for p, c, r in lengths)}
        from transformers import AutoConfig

        cfg = AutoConfig.from_pretrained(model_dir)
        with torch.device("meta"):
            n_params = sum(p.numel() for p in __import__("transformers").AutoModelForCausalLM.from_config(cfg)
                           .parameters())
        print(f"setup {time.perf_counter() - t0:.1f}s: {args.model_shape} ({n_params / 1e6:.1f}M params), "
              f"{args.pairs} scored pairs, {mean_tokens:.0f} tokens/pair", flush=True)
        results: dict[str, list[dict]] = {s: [] for s in sides}
        reps_started = time.perf_counter()
        for rep in range(args.reps):
            spent = time.perf_counter() - reps_started
            if args.time_budget and rep and spent + spent / rep > args.time_budget:
                print(f"stopping after {rep} reps: another would exceed --time-budget {args.time_budget:.0f}s")
                break
            order = sides[rep % len(sides):] + sides[:rep % len(sides)]  # a different side first each time
            for side in order:
                spec = {"model_dir": str(model_dir), "ws": str(ws.root), "sides": sides,
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
    report = {
        "benchmark": "train", "argv": argv if argv is not None else sys.argv[1:], "machine": machine(args.device),
        "bench_seconds": round(time.perf_counter() - t0, 1), "code": code_state(), "loadavg_before": loadavg_before, "loadavg_after": [round(x, 2) for x in os.getloadavg()],
        "settings": {"device": args.device, "model_shape": args.model_shape, "parameters": n_params,
                     "n_pairs": args.pairs, "pairs_per_step": args.pairs_per_step, "max_length": args.max_length,
                     "steps": args.steps, "warmup": args.warmup, "reps": min(len(r) for r in results.values()), "threads": args.threads,
                     "gradient_checkpointing": args.gradient_checkpointing,
                     "workload": args.workload, "mean_tokens_per_pair": mean_tokens, **token_stats,
                     "beta": BETA, "lr": LR,
                     "precision": "fp32" if args.device == "cpu" else "bf16 autocast"},
        "summary": summarise(results, args),
        "notes": [SHARED_MACHINE_NOTE] + args.note, "runs": results,
    }
    args.out.mkdir(parents=True, exist_ok=True)
    stem = f"train_{args.device}{'_long_prompt' if args.workload == 'long-prompt' else ''}{args.tag}"
    (args.out / f"{stem}.json").write_text(json.dumps(report, indent=2) + "\n")
    if report["summary"]:
        write_markdown(args.out / f"{stem}.md", report)
        print(json.dumps({"ratios": report["summary"]["ratios"], "goals": report["summary"]["goals"]}, indent=2))


if __name__ == "__main__":
    main()
