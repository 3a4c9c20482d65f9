"""The GPU check: one command, end to end in under 8 minutes on one GPU, results as JSON.

    python scripts/gpu_check.py --out "$OUT"                  # on the GPU machine, from the repo root
    python scripts/gpu_check.py --cpu-smoke --out /tmp/gpu-check   # the same wiring on CPU, tiny sizes

Parts, each in its own subprocess with a time limit (a part that fails or times out is
recorded and the next one still runs; the exit code is 1 if any part failed):

1. ``tests``: pytest over the test modules that hold `gpu`-marked tests, `-m gpu`
   (bf16 training through `train()` on a tiny model; shared-prefix packing on CUDA:
   sdpa with its one mask per forward, and FlexAttention's BlockMask, forward and
   backward, against the unshared layout).
2. ``bench``: bench/bench_train.py on a random-init model of Qwen2-0.5B's shape (24
   layers, hidden 896, 14/2 heads, 151,936-row vocabulary), long-prompt workload, bf16
   autocast: prefdata `train()` with shared-prefix packing (the default: sdpa's
   memory-efficient kernel with one additive bf16 mask per forward, rows as wide as the
   longest pair, no mask per layer), `train()` unshared, TRL's DPOTrainer on the same
   pairs (in memory, no workspace export) and the bare loop; pairs/s, tokens/s, peak GPU
   memory. This is the bf16 training run and the trainer-vs-TRL comparison.

Writes ``OUT/gpu_check.json`` (environment, per part: status, seconds, summary; the
bench's own train_cuda_long_prompt.{json,md} and the pytest junit XML beside it).

Packages. The device machine has torch and transformers (so numpy, tokenizers,
safetensors, jinja2, pyyaml, huggingface_hub). Beyond those this needs, from PyPI, for
the device's Python version:

- ``pyarrow`` -- every part (the workspace is Parquet);
- ``pytest`` -- part 1 (brings iniconfig, pluggy, pygments);
- ``trl``, ``datasets``, ``accelerate`` -- the TRL side of part 2 (they bring pandas,
  dill, multiprocess, xxhash, fsspec, psutil, python-dateutil, tzdata; trl==1.16.0 is
  what the CPU results used).

Without TRL, part 2 runs without its TRL side (recorded under ``missing``); without
pytest, part 1 is skipped (recorded). matplotlib is optional (report.png is then
not written, with a warning). Nothing here needs polars, duckdb, typer, vllm or the
network. For example, on a machine with the network and the same Python:
``pip download --only-binary=:all: -d wheels pyarrow pytest trl==1.16.0 datasets accelerate``,
then on the device ``pip install --no-index --find-links wheels pyarrow pytest trl datasets accelerate``.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import platform
import subprocess
import sys
import time
import xml.etree.ElementTree as ET
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
NEEDED = {"tests": ("pyarrow", "pytest"), "bench": ("pyarrow",), "bench_trl": ("trl", "datasets", "accelerate")}


def importable(name: str) -> bool:
    return importlib.util.find_spec(name) is not None


def environment() -> dict:
    import torch
    import transformers

    info = {"python": platform.python_version(), "torch": torch.__version__, "transformers": transformers.__version__,
            "cuda": torch.cuda.is_available(), "packages": {}}
    if torch.cuda.is_available():
        info["gpu"] = torch.cuda.get_device_name(0)
        info["gpu_memory_gb"] = round(torch.cuda.get_device_properties(0).total_memory / 2**30, 1)
    for name in ("pyarrow", "pytest", "trl", "datasets", "accelerate", "psutil", "matplotlib"):
        info["packages"][name] = _version(name) if importable(name) else None
    return info


def _version(name: str) -> str:
    import importlib.metadata

    try:
        return importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
        return "importable"


def run_part(name: str, cmd: list[str], timeout: float, env: dict, log: Path) -> dict:
    started = time.perf_counter()
    print(f"[gpu_check] {name}: {' '.join(cmd)} (limit {timeout:.0f}s)", flush=True)
    try:
        proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout)
        status, rc, out = ("ok" if proc.returncode == 0 else "failed"), proc.returncode, proc.stdout + proc.stderr
    except subprocess.TimeoutExpired as err:
        status, rc = "timed_out", None
        out = (err.stdout or b"").decode(errors="replace") + (err.stderr or b"").decode(errors="replace")
    log.write_text(out)
    seconds = round(time.perf_counter() - started, 1)
    print(f"[gpu_check] {name}: {status} in {seconds}s", flush=True)
    return {"status": status, "returncode": rc, "seconds": seconds, "log": log.name, "tail": out[-2000:]}


def junit_counts(path: Path) -> dict:
    if not path.is_file():
        return {}
    root = ET.parse(path).getroot()
    suite = root if root.tag == "testsuite" else root.find("testsuite")
    cases = [{"test": f"{c.get('classname')}::{c.get('name')}", "seconds": float(c.get("time", 0)),
              "outcome": next((child.tag for child in c if child.tag in ("failure", "error", "skipped")), "passed")}
             for c in suite.iter("testcase")]
    return {k: int(suite.get(k, 0)) for k in ("tests", "failures", "errors", "skipped")} | {"cases": cases}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=Path(os.environ.get("OUT", "gpu-check")),
                        help="result directory (default: $OUT, else ./gpu-check)")
    parser.add_argument("--cpu-smoke", action="store_true",
                        help="run every part on CPU with tiny sizes: checks the wiring, not the GPU")
    parser.add_argument("--budget", type=float, default=450, help="seconds for the whole check (default 450)")
    args = parser.parse_args(argv)
    started = time.perf_counter()
    out = args.out.resolve()
    out.mkdir(parents=True, exist_ok=True)
    env = dict(os.environ, PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""),
               HF_HUB_OFFLINE="1", HF_DATASETS_OFFLINE="1", TRANSFORMERS_OFFLINE="1", TOKENIZERS_PARALLELISM="false",
               TQDM_DISABLE="1")
    report = {"check": "gpu", "cpu_smoke": args.cpu_smoke, "environment": environment(), "parts": {}}
    if not args.cpu_smoke and not report["environment"]["cuda"]:
        report["error"] = "no CUDA device visible; use --cpu-smoke to test the wiring on CPU"
    else:
        # 1. the gpu-marked tests (on CPU they report themselves skipped: the wiring is what is checked)
        missing = [m for m in NEEDED["tests"] if not importable(m)]
        if missing:
            report["parts"]["tests"] = {"status": "skipped", "missing": missing}
        else:
            files = sorted(str(p.relative_to(ROOT)) for p in (ROOT / "tests").rglob("test_*.py")
                           if "mark.gpu" in p.read_text())
            xml = out / "gpu_tests.xml"
            part = run_part("tests", [sys.executable, "-m", "pytest", "-m", "gpu", "-q", "-rs", "-p", "no:cacheprovider",
                                      f"--junitxml={xml}", *files], 170 if not args.cpu_smoke else 300, env,
                            out / "gpu_tests.log")
            report["parts"]["tests"] = {**part, "files": files, **junit_counts(xml)}
        # 2. bf16 training and the trainer-vs-TRL comparison, on Qwen2-0.5B's shape
        missing = [m for m in NEEDED["bench"] if not importable(m)]
        if missing:
            report["parts"]["bench"] = {"status": "skipped", "missing": missing}
        else:
            no_trl = [m for m in NEEDED["bench_trl"] if not importable(m)]
            sides = ["ours", "ours_unshared", "bare"] + ([] if no_trl else ["trl"])
            left = args.budget - (time.perf_counter() - started)
            size = (["--device", "cpu", "--model-shape", "bench-small", "--pairs", "16", "--pairs-per-step", "4",
                     "--steps", "2", "--reps", "1"] if args.cpu_smoke else
                    ["--device", "cuda", "--model-shape", "qwen2-0.5b", "--pairs", "64", "--pairs-per-step", "16",
                     "--steps", "6", "--reps", "3", "--time-budget", str(max(60, left - 150))])
            cmd = [sys.executable, "bench/bench_train.py", "--workload", "long-prompt", *size,
                   "--sides", ",".join(sides), "--out", str(out), "--note", "run by scripts/gpu_check.py"]
            part = run_part("bench", cmd, max(60, left - 20), env, out / "bench.log")
            result = out / f"train_{'cpu' if args.cpu_smoke else 'cuda'}_long_prompt.json"
            if result.is_file():
                bench = json.loads(result.read_text())
                part["summary"] = bench["summary"]
                part["settings"] = bench["settings"]
                part["result_files"] = [result.name, result.with_suffix(".md").name]
            report["parts"]["bench"] = {**part, "sides": sides, "missing": no_trl}
    report["seconds"] = round(time.perf_counter() - started, 1)
    report["ok"] = "error" not in report and all(p["status"] in ("ok", "skipped") for p in report["parts"].values())
    (out / "gpu_check.json").write_text(json.dumps(report, indent=2) + "\n")
    print(f"[gpu_check] {'OK' if report['ok'] else 'FAILED'} in {report['seconds']}s; wrote {out / 'gpu_check.json'}")
    return 0 if report["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
