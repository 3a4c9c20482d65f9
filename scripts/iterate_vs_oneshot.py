"""docs/iterate.md's experiment: `prefdata iterate` on the toy world next to one-shot
scenario 1 and scenario 2 trained on the same total number of pairs.

    python scripts/iterate_vs_oneshot.py WS [--rounds 3] [--prompts-per-round 64] [--n 4]

1. iterate: K rounds of scenario 1 (fresh prompt slices), base policy as reference;
2. one-shot: scenario 1 and scenario 2 built once from the base policy on the same K * P
   prompts, each cut to the iterate run's total pair count (a seeded subset, `mix_pairs`
   with one scenario), scored and trained with the same loss settings;
3. writes WS/runs/iterate_vs_oneshot.{json,txt} (the numbers the doc quotes).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from pathlib import Path


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("workspace", type=Path)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--prompts-per-round", type=int, default=64)
    ap.add_argument("--n", type=int, default=4)
    ap.add_argument("--epochs", type=int, default=2)
    ap.add_argument("--backend", default="transformers")
    args = ap.parse_args()

    from prefdata.build import build
    from prefdata.config import build_config, scenario_pipeline, set_path
    from prefdata.iterate import IterateConfig, run_iterate
    from prefdata.mix import mix_pairs
    from prefdata.score import score_pairs
    from prefdata.store import Workspace
    from prefdata.train.config import TrainConfig
    from prefdata.train.loop import train
    from prefdata.train.loss_config import LossConfig

    started, load = time.time(), os.getloadavg()
    raw = scenario_pipeline(1)
    for key, value in (("policy.sampling.n", args.n), ("policy.backend", args.backend), ("quiet", True)):
        set_path(raw, key, value)
    cfg = IterateConfig(rounds=args.rounds, prompts_per_round=args.prompts_per_round, epochs=args.epochs)
    report = run_iterate(args.workspace, raw, cfg)
    total = sum(row["pairs"] for row in report["rounds"])

    ws = Workspace.open(args.workspace)
    base = report["base_model"]
    oneshot = {}
    for scenario in (1, 2):
        raw = scenario_pipeline(scenario)
        for key, value in (("policy.sampling.n", args.n), ("policy.backend", args.backend), ("quiet", True),
                           ("source.limit", args.rounds * args.prompts_per_round)):
            set_path(raw, key, value)
        build(args.workspace, build_config(raw), log=print)
        import polars as pl

        pairs = ws.read_polars("pairs").filter(pl.col("dataset") == f"scenario{scenario}")
        name = f"oneshot-s{scenario}"
        cut = mix_pairs({scenario: pairs}, {scenario: 1.0}, seed=0, total=min(total, pairs.height), dataset=name)
        with ws.writer():
            ws.write_part("pairs", name, cut.to_arrow())
        score_pairs(ws, base, dataset=name)
        result = train(ws, TrainConfig(dataset=name, model_path=base, loss=LossConfig(cfg.loss, beta=cfg.beta),
                                       lr=cfg.lr, epochs=cfg.epochs, batch_size=cfg.batch_size,
                                       eval_every=cfg.eval_every, eval_pairs=cfg.eval_pairs,
                                       heldout_prompts=cfg.heldout_prompts, seed=cfg.seed), progress=print)
        oneshot[name] = {"built_pairs": pairs.height, "pairs": result["pairs"], "steps": result["steps"],
                         "table1": result["table1"], "accuracy": result["accuracy"]}
    lines = [report["text"], "", f"one-shot baselines (base policy, {total} pairs each where available)", "",
             f"{'dataset':<14}{'pairs':>6}{'steps':>6}  {'chosen before':>14}{'after':>9}"
             f"  {'rejected before':>16}{'after':>9}  {'acc before':>11}{'after':>8}"]
    f = lambda x: "-" if x is None else f"{x:.3f}"  # noqa: E731
    for name, r in oneshot.items():
        t, a = r["table1"], r["accuracy"]
        lines.append(f"{name:<14}{r['pairs']:>6}{r['steps']:>6}  {f(t['chosen']['before']):>14}"
                     f"{f(t['chosen']['after']):>9}  {f(t['rejected']['before']):>16}{f(t['rejected']['after']):>9}"
                     f"  {f(a['before']):>11}{f(a['after']):>8}")
    machine = {"cpus": os.cpu_count(), "loadavg_at_start": load, "loadavg_at_end": os.getloadavg(),
               "python": platform.python_version(), "seconds": round(time.time() - started)}
    lines += ["", f"machine: {machine}"]
    text = "\n".join(lines)
    out = Path(args.workspace) / "runs"
    (out / "iterate_vs_oneshot.json").write_text(json.dumps(
        {"args": vars(args) | {"workspace": str(args.workspace)}, "iterate": report["rounds"],
         "iterate_total_pairs": total, "oneshot": oneshot, "machine": machine}, indent=2, default=str) + "\n")
    (out / "iterate_vs_oneshot.txt").write_text(text + "\n")
    print(text)


if __name__ == "__main__":
    main()
