"""Benchmark: `prefdata import` of 1,000,000 candidate rows and of 1,000,000 pairs, from Parquet.

Synthetic, vectorised data (seeded): candidates are 125,000 GSM8K-shaped prompts
x 8 responses (~150-byte multi-line solutions ending in "#### N", a model name,
a reference answer and a 0/1 score column, which becomes imported judgments);
pairs are 1,000,000 prompt/chosen/rejected rows in TRL's standard form with
scores. Each import runs as the command line does (`prefdata.importing.import_file`)
in a fresh Python process into a fresh workspace, so its peak resident memory
(`ru_maxrss` of that process, read by itself at the end) is its own; it is timed inside the
process (file read to manifest written) and as the whole process (interpreter
and imports included). A re-import of the same file into the filled workspace
(which must add nothing) is timed too. As a floor, the time `pyarrow` alone
takes to read the same file is measured in the same way.

    python bench/bench_import.py               # full size, 3 runs each (~3 min)
    python bench/bench_import.py --rows 20000 --runs 1   # quick check

Writes bench/results/import.json and import.md (medians over all runs, with min and max).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import polars as pl

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "bench" / "results"

CHILD = """
import json, sys, time
t0 = time.perf_counter()
from prefdata.importing import ImportSpec, import_file
kind, ws, path = sys.argv[1:4]
spec = ImportSpec(path, kind, origin="policy", model_name="bench", dataset="bench" if kind == "pairs" else None)
import resource
def cpu():
    u = resource.getrusage(resource.RUSAGE_SELF)
    return u.ru_utime + u.ru_stime
t1, c1 = time.perf_counter(), cpu()
summary = import_file(ws, spec)
t2, c2 = time.perf_counter(), cpu()
print(json.dumps({"import_s": t2 - t1, "cpu_s": c2 - c1, "startup_s": t1 - t0, "kept": summary["kept"],
                  "added": summary["added"], "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))
"""

FLOOR = """
import json, sys, time
import pyarrow.parquet as pq
import resource
def cpu():
    u = resource.getrusage(resource.RUSAGE_SELF)
    return u.ru_utime + u.ru_stime
t, c = time.perf_counter(), cpu(); n = pq.read_table(sys.argv[1]).num_rows
print(json.dumps({"import_s": time.perf_counter() - t, "cpu_s": cpu() - c, "startup_s": 0.0, "kept": n, "added": {},
                  "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))
"""


def make_candidates(rows: int, seed: int = 0) -> pl.DataFrame:
    rng = np.random.default_rng(seed)
    n_prompts = rows // 8
    p = np.repeat(np.arange(n_prompts), 8)
    a, b = rng.integers(10, 999, n_prompts)[p], rng.integers(2, 99, n_prompts)[p]
    right = rng.random(rows) < 0.6
    answer = np.where(right, a + b, a + b + rng.integers(1, 9, rows))
    frame = pl.DataFrame({"p": p, "a": a, "b": b, "ans": answer, "ok": right.astype(np.int64),
                          "m": rng.integers(0, 3, rows), "k": np.tile(np.arange(8), n_prompts)})
    return frame.select(
        pl.format("Problem {}: a shop has {} apples and receives {} more boxes of one apple each. "
                  "How many apples does it have now?", "p", "a", "b").alias("prompt"),
        pl.format("Attempt {}. The shop starts with {} apples.\nIt receives {} more.\n{} + {} = {}\n#### {}",
                  "k", "a", "b", "a", "b", "ans", "ans").alias("response"),
        pl.format("policy-{}", "m").alias("model"),
        (pl.col("a") + pl.col("b")).cast(pl.String).alias("reference_answer"),
        pl.col("ok").alias("score"))


def make_pairs(rows: int, seed: int = 1) -> pl.DataFrame:
    rng = np.random.default_rng(seed)
    a, b, off = rng.integers(10, 9999, rows), rng.integers(2, 999, rows), rng.integers(1, 9, rows)
    frame = pl.DataFrame({"i": np.arange(rows), "a": a, "b": b, "w": a + b + off, "s": a + b})
    return frame.select(
        pl.format("Question {}: what is {} plus {}? Show your work and end with the final answer.",
                  "i", "a", "b").alias("prompt"),
        pl.format("We add the two numbers.\n{} + {} = {}\nThe answer is {}.", "a", "b", "s", "s").alias("chosen"),
        pl.format("Adding them gives {}.\nThe answer is {}.", "w", "w").alias("rejected"),
        pl.lit(1.0).alias("score_chosen"), pl.lit(0.0).alias("score_rejected"))


def run_child(code: str, args: list[str]) -> dict:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
    start = time.perf_counter()
    proc = subprocess.Popen([sys.executable, "-c", code, *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            env=env, text=True)
    out, err = proc.communicate()
    wall = time.perf_counter() - start
    if proc.returncode != 0:
        raise RuntimeError(f"child failed: {err[-2000:]}")
    result = json.loads(out.strip().splitlines()[-1])
    result["wall_s"] = wall
    return result


def measure(code: str, args_of, runs: int) -> list[dict]:
    """Each run in a fresh process (its peak RSS is its own)."""
    return [run_child(code, args_of(i)) for i in range(runs)]


def _stats(values: list[float]) -> dict:
    return {"median": round(statistics.median(values), 3), "min": round(min(values), 3),
            "max": round(max(values), 3), "runs": len(values)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="bench-import-"))
    try:
        files = {"candidates": tmp / "candidates.parquet", "pairs": tmp / "pairs.parquet"}
        make_candidates(args.rows).write_parquet(files["candidates"])
        make_pairs(args.rows).write_parquet(files["pairs"])
        report = {"rows": args.rows, "runs": args.runs, "cpus": os.cpu_count(), "python": platform.python_version(),
                  "polars": pl.__version__, "load_before": os.getloadavg(), "results": {}}
        for kind, path in files.items():
            floor = measure(FLOOR, lambda i: [str(path)], args.runs)
            fresh = measure(CHILD, lambda i: [kind, str(tmp / f"ws-{kind}-{i}"), str(path)], args.runs)
            again = measure(CHILD, lambda i: [kind, str(tmp / f"ws-{kind}-{i}"), str(path)], args.runs)
            assert all(sum(r["added"].values()) == 0 for r in again), "a re-import added rows"
            report["results"][kind] = {
                "file_mb": round(path.stat().st_size / 1e6, 1), "kept": fresh[0]["kept"],
                "added": fresh[0]["added"],
                "import_s": _stats([r["import_s"] for r in fresh]),
                "import_cpu_s": _stats([r["cpu_s"] for r in fresh]),
                "process_wall_s": _stats([r["wall_s"] for r in fresh]),
                "peak_rss_mb": _stats([r["peak_rss_mb"] for r in fresh]),
                "pyarrow_read_peak_rss_mb": _stats([r["peak_rss_mb"] for r in floor]),
                "reimport_s": _stats([r["import_s"] for r in again]),
                "pyarrow_read_s": _stats([r["import_s"] for r in floor]),
                "pyarrow_read_cpu_s": _stats([r["cpu_s"] for r in floor]),
                "workspace_mb": round(sum(f.stat().st_size for f in (tmp / f"ws-{kind}-0").rglob("*")
                                          if f.is_file()) / 1e6, 1)}
            for i in range(args.runs):
                shutil.rmtree(tmp / f"ws-{kind}-{i}", ignore_errors=True)
        report["load_after"] = os.getloadavg()
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "import.json").write_text(json.dumps(report, indent=2) + "\n")
    (RESULTS / "import.md").write_text(markdown(report))
    print(markdown(report))


def markdown(r: dict) -> str:
    lines = ["# Import benchmark", "",
             f"`python bench/bench_import.py` on {r['rows']:,} rows per file, {r['runs']} runs each, every run a fresh "
             f"process into a fresh workspace; {r['cpus']} CPUs, Python {r['python']}, polars {r['polars']}. "
             "Medians, with min-max.", "",
             "| import | file | kept | import, wall (s) | import, CPU user+sys (s) | whole process, wall (s) "
             "| peak RSS (MB) | re-import, adds 0 (s) | pyarrow read alone, wall / CPU (s) | workspace |",
             "|---|---|---|---|---|---|---|---|---|---|"]

    def cell(s: dict) -> str:
        return f"{s['median']:.2f} ({s['min']:.2f}-{s['max']:.2f})" if s.get("runs") else "-"

    for kind, x in r["results"].items():
        lines.append(f"| {kind} (Parquet) | {x['file_mb']} MB | {x['kept']:,} | **{cell(x['import_s'])}** | "
                     f"{cell(x['import_cpu_s'])} | {cell(x['process_wall_s'])} | {cell(x['peak_rss_mb'])} | "
                     f"{cell(x['reimport_s'])} | {cell(x['pyarrow_read_s'])} / {cell(x['pyarrow_read_cpu_s'])} | "
                     f"{x['workspace_mb']} MB |")
    lines += ["", "CPU time (user + system, all threads, from `getrusage` in the importing process) does not "
              "grow with the other processes on a shared machine the way wall time does; on an idle machine "
              "a run's wall time is about its CPU time or less (two cores working at once), plus any wait "
              "for the disk (every part is fsynced). The load average below says how shared it was.",
              "", "Rows added by the first import: " + "; ".join(
        f"{k}: {v['added']}" for k, v in r["results"].items()) + ".", "",
        f"Load average (1/5/15 min) before/after: {[round(x, 2) for x in r['load_before']]} / "
        f"{[round(x, 2) for x in r['load_after']]} (the machine is shared).", ""]
    return "\n".join(lines)


if __name__ == "__main__":
    main()
