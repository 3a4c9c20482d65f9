"""The report's files: one run's report.txt/.json/.png, and all runs side by side.

Per run, in `WORKSPACE/runs/<dataset>-<loss>/`: report.json (everything
`prefdata.train.report.assemble` gathered), report.txt (Table 1, dispersion,
held-out accuracy and the gradient measures as a table) and report.png
(`prefdata.train.plots`). `combined_report(ws)` writes runs/combined.txt,
.json and .png across every finished run. Every file is written to a temp
name and renamed, so a reader never sees half of one.
"""

from __future__ import annotations

import json
from pathlib import Path

from prefdata.errors import PrefdataError
from prefdata.train import plots


def _fmt(value, spec=".4f") -> str:
    return "-" if value is None else format(value, spec)


_ROWS = (("chosen logp/token", ("table1", "chosen")), ("rejected logp/token", ("table1", "rejected")),
         ("margin (chosen - rejected)", ("table1", "margin")), ("unpaired logp/token", ("dispersion",)),
         ("held-out accuracy", ("accuracy",)))


def _get(result: dict, path: tuple) -> dict:
    for key in path:
        result = result[key]
    return result


def format_run(result: dict) -> str:
    """The report of one run as a text table."""
    loss = ", ".join(f"{k}={v}" for k, v in result["loss"].items() if k != "name")
    lines = [f"{result['run']}: {result['loss']['name']} ({loss}), {result['pairs']} pairs, {result['steps']} steps",
             f"{'':28s}{'before':>10s}{'after':>10s}{'delta':>10s}"]
    for label, path in _ROWS:
        cell = _get(result, path)
        lines.append(f"{label:28s}{_fmt(cell['before']):>10s}{_fmt(cell['after']):>10s}{_fmt(cell['delta']):>10s}")
    for origin, cell in result["dispersion"]["by_origin"].items():
        lines.append(f"{'  unpaired ' + origin:28s}{_fmt(cell['before']):>10s}{_fmt(cell['after']):>10s}"
                     f"{_fmt(cell['delta']):>10s}")
    g0, g1 = result["gradients"][0], result["gradients"][-1]
    lines.append(f"{'grad norm chosen / rejected':28s}{'first':>10s}{'last':>10s}")
    for side in ("chosen", "rejected", "ratio"):
        lines.append(f"{'  ' + side:28s}{_fmt(g0[side], '.3g'):>10s}{_fmt(g1[side], '.3g'):>10s}")
    lines += format_probability_gradients(g0, g1)
    return "\n".join(lines)


def format_probability_gradients(first: dict, last: dict) -> list[str]:
    """Report lines for `probability_gradients` at the first and last probe (absent in old reports)."""
    if "log10_dprob_chosen" not in first:
        return []
    rows = [("|dl/dlog pi| chosen", "dlogp_chosen", ".3g"), ("|dl/dlog pi| rejected", "dlogp_rejected", ".3g"),
            ("log10 |dl/dpi| chosen", "log10_dprob_chosen", ".1f"),
            ("log10 |dl/dpi| rejected", "log10_dprob_rejected", ".1f"),
            ("log10 ratio rej/chosen", "log10_dprob_ratio", ".1f")]
    return [f"{'loss grad wrt sequence prob':28s}{'first':>10s}{'last':>10s}"] + [
        f"{'  ' + label:28s}{_fmt(first.get(key), spec):>10s}{_fmt(last.get(key), spec):>10s}"
        for label, key, spec in rows]


def write_report(run_dir: Path, result: dict) -> None:
    from prefdata.store import atomic_write_bytes

    run_dir = Path(run_dir)
    atomic_write_bytes(run_dir / "report.json", (json.dumps(result, indent=2) + "\n").encode())
    atomic_write_bytes(run_dir / "report.txt", (format_run(result) + "\n").encode())
    try:
        _write_png(run_dir / "report.png", lambda path: plots.plot_run(result, path))
    except ModuleNotFoundError as err:  # the numbers are in report.json/.txt; only the picture needs matplotlib
        if err.name != "matplotlib" and not str(err.name).startswith("matplotlib."):
            raise
        import warnings

        warnings.warn("report.png not written: matplotlib is not installed (pip install matplotlib)", stacklevel=2)


def _write_png(path: Path, draw) -> None:
    """Draw into a temp file, then rename: a reader never sees half a PNG."""
    import os

    temp = path.with_name(f".{path.name}.{os.getpid()}.tmp.png")
    try:
        draw(temp)
        os.replace(temp, path)
    finally:
        temp.unlink(missing_ok=True)


def combined_report(ws) -> dict:
    """All finished runs of the workspace side by side; writes runs/combined.{txt,json,png}.

    Returns {"runs": [per-run summary], "text": the table, "files": the paths written}.
    """
    from prefdata.store import atomic_write_bytes

    runs_dir = Path(ws.root) / "runs"
    results = [json.loads(p.read_text()) for p in sorted(runs_dir.glob("*/report.json"))]
    if not results:
        raise PrefdataError(f"no finished training runs in {runs_dir}", "train a dataset first")
    width = max(12, *(len(r["run"]) + 2 for r in results))
    lines = [f"{'':36s}" + "".join(f"{r['run']:>{width}s}" for r in results)]
    summary = [{"run": r["run"], "dataset": r["dataset"], "loss": r["loss"], "pairs": r["pairs"],
                "steps": r["steps"]} for r in results]
    for label, path in _ROWS:
        for when in ("before", "after"):
            lines.append(f"{label + ' ' + when:36s}" + "".join(
                f"{_fmt(_get(r, path)[when]):>{width}s}" for r in results))
    lines.append(f"{'grad norm ratio rejected/chosen':36s}" + "".join(
        f"{_fmt(r['gradients'][-1]['ratio'], '.3g'):>{width}s}" for r in results))
    for s, r in zip(summary, results):
        s.update({"table1": r["table1"], "dispersion": {k: r["dispersion"][k] for k in ("before", "after", "delta")},
                  "accuracy": r["accuracy"], "grad_ratio_last": r["gradients"][-1]["ratio"]})
    text = "\n".join(lines)
    atomic_write_bytes(runs_dir / "combined.json", (json.dumps({"runs": summary}, indent=2) + "\n").encode())
    atomic_write_bytes(runs_dir / "combined.txt", (text + "\n").encode())
    _write_png(runs_dir / "combined.png", lambda path: plots.plot_runs(results, path))
    files = [runs_dir / f"combined.{ext}" for ext in ("txt", "json", "png")]
    return {"runs": summary, "text": text, "files": files}
