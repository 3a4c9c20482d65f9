"""The small recipe sweep behind `prefdata study`'s default lr, beta and epochs (docs/study.md).

Reduced on purpose (CPU is scarce): one seed, on-policy scenario 1 only, plain DPO, six
recipes; every recipe trains the same pairs from the same policy and is measured on the
same held-out prompts. The goal it checks: on-policy DPO must not lower held-out accuracy.
Among the recipes that keep it (change >= 0) the one whose training moved the chosen/rejected
margin most is recommended; with none, the table says so.

    PYTHONPATH=. .venv/bin/python scripts/study_sweep.py STUDY_DIR/seed-0

Writes docs/study-sweep.json and docs/study-sweep.md (results are written by this script only).
"""

from __future__ import annotations

import json
import os
import platform
import sys
import time
from pathlib import Path

# (lr, beta, epochs): the previous default, shorter and smaller steps, a larger beta, the paper's 5e-7
RECIPES = ((1e-4, 0.1, 2), (1e-4, 0.1, 1), (3e-5, 0.1, 1), (1e-5, 0.1, 1), (1e-5, 0.5, 1), (5e-7, 0.1, 1))


def main(workspace: Path, seed: int = 0, scenario: int = 1) -> dict:
    from prefdata.store import atomic_write_bytes
    from prefdata.study import StudyConfig, build_and_score, train_config
    from prefdata.train.loop import train

    started, load_start = time.time(), os.getloadavg()
    ws = build_and_score(workspace, StudyConfig(seeds=(seed,), scenarios=(scenario,)), seed, log=lambda _m: None)
    rows, base_accuracy = [], {}
    for lr, beta, epochs in RECIPES:
        cfg = StudyConfig(seeds=(seed,), lr=lr, beta=beta, epochs=epochs)
        name = f"lr{lr:g}-beta{beta:g}-ep{epochs}"
        t = time.time()
        r = train(ws, train_config(cfg, scenario, "dpo", seed, output_dir=str(Path(workspace) / "sweep" / name),
                                   resume=False), progress=None, base_accuracy=base_accuracy)
        rows.append({"recipe": name, "lr": lr, "beta": beta, "epochs": epochs, "pairs": r["pairs"],
                     "steps": r["steps"], "prompts": r["accuracy"]["prompts"],
                     "accuracy_before": r["accuracy"]["before"], "accuracy_after": r["accuracy"]["after"],
                     "accuracy_delta": r["accuracy"]["delta"], "chosen_delta": r["table1"]["chosen"]["delta"],
                     "rejected_delta": r["table1"]["rejected"]["delta"], "margin_delta": r["table1"]["margin"]["delta"],
                     "reward_accuracy_last": r["train"][-1]["reward_accuracy"], "seconds": round(time.time() - t, 1)})
        print(json.dumps(rows[-1]), flush=True)
    keep = [r for r in rows if r["accuracy_delta"] is not None and r["accuracy_delta"] >= 0]
    best = max(keep, key=lambda r: r["margin_delta"])["recipe"] if keep else None
    out = {"seed": seed, "scenario": scenario, "loss": "dpo", "recipes": rows, "recommended": best,
           "machine": {"cpus": os.cpu_count(), "platform": platform.platform(), "python": sys.version.split()[0],
                       "loadavg_start": load_start, "loadavg_end": os.getloadavg()},
           "seconds": round(time.time() - started, 1)}
    docs = Path(__file__).resolve().parents[1] / "docs"
    atomic_write_bytes(docs / "study-sweep.json", (json.dumps(out, indent=2) + "\n").encode())
    atomic_write_bytes(docs / "study-sweep.md", (_markdown(out) + "\n").encode())
    return out


def _markdown(out: dict) -> str:
    f = lambda v, spec=".3f": "-" if v is None else format(v, spec)  # noqa: E731
    lines = [f"Recipe sweep: scenario {out['scenario']}, {out['loss']}, seed {out['seed']}, "
             f"{out['recipes'][0]['pairs']} pairs, {out['recipes'][0]['prompts']} held-out prompts "
             f"({out['seconds']:.0f} s; {out['machine']['cpus']} CPUs, load average "
             f"{out['machine']['loadavg_start'][0]:.1f} at the start, "
             f"{out['machine']['loadavg_end'][0]:.1f} at the end)",
             "", "| lr | beta | epochs | steps | accuracy before | after | change | chosen logp/token change "
             "| rejected change | margin change | reward accuracy (last step) |",
             "|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in out["recipes"]:
        lines.append(f"| {r['lr']:g} | {r['beta']:g} | {r['epochs']} | {r['steps']} | {f(r['accuracy_before'])} "
                     f"| {f(r['accuracy_after'])} | {f(r['accuracy_delta'], '+.3f')} | {f(r['chosen_delta'], '+.4f')} "
                     f"| {f(r['rejected_delta'], '+.4f')} | {f(r['margin_delta'], '+.4f')} "
                     f"| {f(r['reward_accuracy_last'], '.2f')} |")
    lines += ["", f"Recommended (keeps held-out accuracy, largest margin change): {out['recommended'] or 'none'}"]
    return "\n".join(lines)


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit("usage: scripts/study_sweep.py STUDY_DIR/seed-0")
    main(Path(sys.argv[1]))
