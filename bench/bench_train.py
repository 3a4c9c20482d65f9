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
import time
from pathlib import Path

from train_sides import (BETA, LR, SHAPES, WORKLOADS, Meter, build_model_dir, build_workspace, run_bare,
                         run_ours, run_trl)

ROOT = Path(__file__).resolve().parents[1]
SIDES = ("ours", "ours_unshared", "trl", "bare")
# Not run by default: TRL with its own DPOConfig defaults for precision and checkpointing (bf16 autocast
# even on CPU, gradient checkpointing on) -- what a TRL user gets without setting them.
EXTRA_SIDES = ("trl_defaults",)


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
