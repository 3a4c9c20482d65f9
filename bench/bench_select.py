"""Benchmark: pair selection + filtering on 1,000,000 judged candidates.

Runs `prefdata.select.select_pairs` (Polars expressions) and `python_select`, a
straightforward per-row Python implementation (dicts and loops) of the same
rules, side by side in one process on the same synthetic data (125,000 prompts
x 8 policy samples, rubric scores 1-5, some empty / truncated / duplicate
texts). Checks both return the same pairs and drop counts, repeats each, and
writes medians to bench/results/select.json and select.md.

    python bench/bench_select.py                 # full size (~1-2 min)
    python bench/bench_select.py --prompts 2000  # quick

`python_select` is also the oracle tests/test_select.py cross-checks against.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import time
from pathlib import Path

import numpy as np
import polars as pl

ROLES = {1: (("policy", "best"), ("policy", "worst")), 2: (("reference", "best"), ("policy", "worst")),
         3: (("policy", "best"), ("other", "worst")), 4: (("reference", "best"), ("other", "worst"))}


def make_candidates(n_prompts: int, n_policy: int = 8, n_other: int = 0, with_reference: bool = False,
                    seed: int = 0) -> pl.DataFrame:
    """Synthetic judged candidates; rubric scores with per-prompt difficulty, vectorised."""
    rng = np.random.default_rng(seed)
    origins = ["policy"] * n_policy + ["other"] * n_other + (["reference"] if with_reference else [])
    k = len(origins)
    n = n_prompts * k
    prompt_idx = np.repeat(np.arange(n_prompts), k)
    origin = np.tile(np.array(origins), n_prompts)
    skill = np.repeat(rng.beta(1.2, 1.2, n_prompts), k)  # per-prompt chance of a right answer
    right = rng.random(n) < np.where(origin == "reference", 0.97, skill)
    score = np.where(right, rng.choice([4.0, 5.0], n, p=[0.3, 0.7]), rng.choice([1.0, 2.0, 3.0], n))
    correct = pl.Series(np.where(score >= 4, 1, np.where(score <= 2, 0, -1))).replace_strict(
        {1: True, 0: False, -1: None}, return_dtype=pl.Boolean)
    # few distinct texts per prompt (each naming its prompt, so texts differ across
    # prompts as real ones do), so duplicates (up to whitespace) really occur
    variant = rng.integers(0, 12, n)
    spaces = np.where(rng.random(n) < 0.1, "  ", " ")
    empty = rng.random(n) < 0.01
    truncated = rng.random(n) < 0.02
    df = pl.DataFrame({
        "prompt_id": pl.Series(prompt_idx).cast(pl.String).str.zfill(7),
        "origin": origin,
        # ids shaped like the schema's (sha256[:16] hex)
        "candidate_id": [f"{x:016x}" for x in rng.integers(0, 2**64, n, dtype=np.uint64).tolist()],
        "v": variant, "sp": spaces, "score": score, "correct": correct,
        "finish_reason": np.where(truncated, "length", "stop"), "empty": empty,
    })
    df = df.with_columns(
        pl.concat_str([pl.lit("p"), pl.col("prompt_id")]).alias("prompt_id"),
    ).with_columns(
        pl.concat_str([pl.lit("Question "), pl.col("prompt_id"), pl.lit("?")]).alias("prompt"),
        pl.when(pl.col("empty")).then(pl.lit(""))
        .otherwise(pl.concat_str([pl.lit("For "), pl.col("prompt_id"), pl.lit(" step"), pl.col("sp"),
                                  pl.col("v").cast(pl.String), pl.lit(" gives"),
                                  pl.col("sp"), pl.col("score").cast(pl.Int64).cast(pl.String), pl.lit(".")]))
        .alias("text"),
        pl.lit("verifier").alias("judge_name"),
    )
    return df.drop("v", "sp", "empty")


# -- the straightforward per-row implementation ------------------------------------
def _norm(text: str) -> str:
    return " ".join(text.split())


def python_select(rows: list[dict], scenario: int, min_margin: float = 0.0):
    """Same rules as select_pairs with the default SelectConfig (other_pick='worst').

    Returns ({prompt_id: (chosen_id, rejected_id, margin)}, drop counts).
    """
    (c_origin, _), (r_origin, _) = ROLES[scenario]
    counts: dict[str, int] = {}

    def drop(reason):
        counts[reason] = counts.get(reason, 0) + 1

    prompts: dict[str, list[dict]] = {}
    for row in rows:
        prompts.setdefault(row["prompt_id"], [])
        if row["origin"] not in (c_origin, r_origin):
            continue
        if not row["text"] or not row["text"].strip():
            drop("empty")
        elif row["finish_reason"] == "length":
            drop("truncated")
        elif row["score"] is None:
            drop("unscored")
        else:
            prompts[row["prompt_id"]].append(row)
    pairs = {}
    for prompt_id, cands in prompts.items():
        first_copy: dict[tuple, dict] = {}
        for row in cands:
            key = (row["origin"], _norm(row["text"]))
            if key not in first_copy or row["candidate_id"] < first_copy[key]["candidate_id"]:
                first_copy[key] = row
        kept = []
        for row in cands:
            if first_copy[(row["origin"], _norm(row["text"]))] is row:
                kept.append(row)
            else:
                drop("duplicate")

        def pick(origin, how):
            best = None
            for row in kept:
                if row["origin"] != origin:
                    continue
                if best is None:
                    best = row
                    continue
                better = row["score"] > best["score"] if how == "best" else row["score"] < best["score"]
                if better or (row["score"] == best["score"] and row["candidate_id"] < best["candidate_id"]):
                    best = row
            return best

        chosen, rejected = pick(c_origin, "best"), pick(r_origin, "worst")
        if chosen is None:
            drop(f"no_{c_origin}")
            continue
        if rejected is None:
            drop(f"no_{r_origin}")
            continue
        if c_origin == "reference" and chosen["correct"] is False:
            drop("reference_incorrect")
            continue
        if scenario == 1:
            known = [r["correct"] for r in kept if r["origin"] == "policy" and r["correct"] is not None]
            if known and (all(known) or not any(known)):
                drop("uniform")
                continue
        margin = chosen["score"] - rejected["score"]
        if margin == 0:
            drop("tie")
        elif margin < 0:
            drop("inverted")
        elif min_margin > 0 and margin < min_margin:
            drop("below_margin")
        elif _norm(chosen["text"]) == _norm(rejected["text"]):
            drop("same_text")
        else:
            pairs[prompt_id] = (chosen["candidate_id"], rejected["candidate_id"], margin)
    return pairs, counts


# -- the benchmark -------------------------------------------------------------------
def _polars_run(df, scenario, min_margin):
    from prefdata.select import SelectConfig, select_pairs

    return select_pairs(df, scenario, SelectConfig(min_margin=min_margin))


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--prompts", type=int, default=125_000)
    parser.add_argument("--samples", type=int, default=8)
    parser.add_argument("--reps", type=int, default=5)
    parser.add_argument("--py-reps", type=int, default=3)
    parser.add_argument("--min-margin", type=float, default=1.0)
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results")
    args = parser.parse_args(argv)

    load_before = os.getloadavg()
    df = make_candidates(args.prompts, args.samples)
    rows = df.to_dicts()  # the per-row version's natural input; built once, untimed
    scenario = 1
    polars_times, python_times = [], []
    # interleaved, so a change in the shared machine's load hits both sides alike
    for i in range(max(args.reps, args.py_reps)):
        if i < args.reps:
            start = time.perf_counter()
            pairs, counts = _polars_run(df, scenario, args.min_margin)
            polars_times.append(time.perf_counter() - start)
        if i < args.py_reps:
            start = time.perf_counter()
            py_pairs, py_counts = python_select(rows, scenario, args.min_margin)
            python_times.append(time.perf_counter() - start)
    ours = {r[0]: (r[1], r[2], r[3]) for r in pairs.select(
        "prompt_id", "chosen_candidate_id", "rejected_candidate_id", "margin").iter_rows()}
    same = ours == py_pairs and counts == py_counts
    if not same:
        raise SystemExit(f"MISMATCH: polars {len(ours)} pairs {counts}; python {len(py_pairs)} pairs {py_counts}")
    med_pl, med_py = statistics.median(polars_times), statistics.median(python_times)
    load = {"before": [round(x, 2) for x in load_before], "after": [round(x, 2) for x in os.getloadavg()]}
    result = {
        "benchmark": "select_pairs scenario 1 (best-vs-worst policy) with all filters",
        "candidates": df.height, "prompts": args.prompts, "samples_per_prompt": args.samples,
        "min_margin": args.min_margin, "pairs": pairs.height, "drop_counts": counts,
        "same_pairs_and_counts": same,
        "polars_seconds": polars_times, "python_seconds": python_times,
        "polars_median_s": round(med_pl, 4), "python_median_s": round(med_py, 4),
        "speedup_median": round(med_py / med_pl, 2),
        "target": "polars median < 5 s and >= 20x faster than per-row Python",
        "meets_target": med_pl < 5 and med_py / med_pl >= 20,
        "load_average_1_5_15min": load,
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version(), "polars": pl.__version__,
                    "platform": platform.platform()},
    }
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "select.json").write_text(json.dumps(result, indent=2) + "\n")
    (args.out / "select.md").write_text(
        "# Pair selection benchmark\n\n"
        f"`python bench/bench_select.py` on {df.height:,} judged candidates ({args.prompts:,} prompts x "
        f"{args.samples}), scenario 1 with every filter (empty, truncated, unscored, duplicate, uniform, "
        f"tie, min_margin={args.min_margin:g}, same_text); {os.cpu_count()} CPUs, polars {pl.__version__}.\n\n"
        "| implementation | runs | median (s) |\n|---|---|---|\n"
        f"| prefdata `select_pairs` (Polars expressions) | {args.reps} | {med_pl:.3f} |\n"
        f"| per-row Python (dicts and loops) | {args.py_reps} | {med_py:.3f} |\n\n"
        f"Speed-up (median / median): **{med_py / med_pl:.1f}x**. Same pairs and drop counts: {same}. "
        f"Pairs kept: {pairs.height:,}. Drops: {counts}.\n\n"
        f"Load average (1/5/15 min) before/after: {load['before']} / {load['after']} on {os.cpu_count()} CPUs "
        "(the machine is shared; both implementations run interleaved, in one process, under the same load).\n")
    print(json.dumps({k: result[k] for k in ("polars_median_s", "python_median_s", "speedup_median",
                                             "pairs", "meets_target")}))
    return result


if __name__ == "__main__":
    main()
