"""The sides and workloads of bench/bench_train.py: each side trains the same scored pairs.

`build_model_dir` and `build_workspace` make the model and the workspace of scored
pairs every side reads (toy or long-prompt workload); `Meter` times optimizer steps
and samples memory; `run_ours`, `run_trl` and `run_bare` are the sides, each run in
its own worker process by bench_train.py, which describes what each measures.
"""

from __future__ import annotations

import statistics
import threading
import time
from pathlib import Path

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
