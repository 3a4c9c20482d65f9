"""The report's figures: one PNG per training run, and one across all runs of a workspace.

Chosen and rejected share a panel as their change since the first step, so
both moves are visible even when their levels are nats apart; the unpaired responses
(dispersion: responses to the trained prompts that are in no pair, typically
several nats per token lower) get their own panel, so their level never
squashes the chosen/rejected curves. Every axis is labelled and each title
carries the data's kind, the loss, beta and the learning rate.

Figures are drawn on a `Figure` with the Agg canvas: no pyplot global state,
no display needed.
"""

from __future__ import annotations

from pathlib import Path

KIND = {1: "on-policy", 2: "mixed", 3: "mixed", 4: "off-policy"}
CAPTION = ("chosen / rejected: mean per-token log-prob of the trained pairs' responses under the model. "
           "unpaired: responses to the same prompts that are in no pair (other samples, unused and held-out "
           "reference solutions); if chosen and rejected both fall, this shows where the probability goes.")
COLORS = {"chosen": "tab:green", "rejected": "tab:red", "unpaired": "tab:gray", "before": "tab:blue",
          "after": "tab:orange"}


def run_kind(result: dict) -> str:
    """The kind of data a run trained on: its pairs' kinds, else guessed from a scenarioN name."""
    kinds = result.get("kinds")
    if kinds:
        return "+".join(kinds)
    name = str(result.get("dataset", ""))
    return KIND.get(int(name[-1]), "?") if name.startswith("scenario") and name[-1:].isdigit() else "?"


def run_title(result: dict) -> str:
    loss = result["loss"]
    beta = loss.get("beta")
    if beta is None and "beta_chosen" in loss:
        beta = f"{loss['beta_chosen']}/{loss['beta_rejected']}"
    lr = result.get("config", {}).get("lr")
    lr = format(lr, "g") if isinstance(lr, (int, float)) else lr
    return f"{result['run']}: {run_kind(result)} data, loss {loss['name']}, beta {beta}, lr {lr}"


def _figure(width: float, height: float):
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def _values(rows: list[dict], key: str) -> list:
    return [r.get(key) for r in rows]


def _before_after(ax, labels: list[str], before: list, after: list, ylabel: str, title: str, fmt: str) -> None:
    """Grouped before/after bars with their values written on them."""
    xs = range(len(labels))
    for offset, when, values in ((-0.2, "before", before), (0.2, "after", after)):
        heights = [0.0 if v is None else v for v in values]
        bars = ax.bar([x + offset for x in xs], heights, width=0.4, label=when, color=COLORS[when])
        ax.bar_label(bars, labels=["n/a" if v is None else format(v, fmt) for v in values], fontsize=8)
    ax.set_xticks(list(xs), labels)
    ax.set(ylabel=ylabel, title=title)
    ax.legend(fontsize=8)


def _changes(ax, trajectory: list[dict], fontsize: int = 8) -> None:
    """Chosen and rejected as their change since step 0, so both moves show on one scale even
    when their levels are nats apart; the starting levels are in the legend."""
    steps = _values(trajectory, "step")
    for key in ("chosen", "rejected"):
        values = _values(trajectory, key)
        if not values or values[0] is None:
            continue
        ax.plot(steps, [None if v is None else v - values[0] for v in values], "-o", markersize=3,
                color=COLORS[key], label=f"{key} (starts at {values[0]:.2f})")
    ax.axhline(0, color="black", linewidth=0.8)
    ax.set(xlabel="optimizer step", ylabel="change of mean log-prob per token")
    ax.legend(fontsize=fontsize)


def plot_run(result: dict, path: Path):
    """Six panels: chosen/rejected trajectory, unpaired trajectory, Table 1 change, held-out
    accuracy, gradient norms, training loss and reward accuracy."""
    fig = _figure(15, 9)
    axes = fig.subplots(2, 3)
    trajectory = result["trajectory"]
    steps = _values(trajectory, "step")

    _changes(axes[0, 0], trajectory)
    axes[0, 0].set_title(f"chosen vs rejected ({result['eval_subset']['pairs']} eval pairs)")

    ax = axes[0, 1]
    unpaired = _values(trajectory, "dispersion")
    if any(v is not None for v in unpaired):
        ax.plot(steps, unpaired, "--o", markersize=3, color=COLORS["unpaired"], label="unpaired")
        ax.legend(fontsize=8)
    else:
        ax.text(0.5, 0.5, "no unpaired responses", ha="center", va="center", transform=ax.transAxes)
    ax.set(title=f"unpaired responses ({result['dispersion']['responses']})", xlabel="optimizer step",
           ylabel="mean log-prob per token")

    ax = axes[0, 2]
    cells = [result["table1"]["chosen"], result["table1"]["rejected"], result["dispersion"]]
    deltas = [c["delta"] for c in cells]
    bars = ax.bar(["chosen", "rejected", "unpaired"], [0.0 if d is None else d for d in deltas],
                  color=[COLORS["chosen"], COLORS["rejected"], COLORS["unpaired"]])
    ax.bar_label(bars, labels=[f"{c['before']:.2f} -> {c['after']:.2f}" if c["delta"] is not None else "n/a"
                               for c in cells], fontsize=8)
    ax.axhline(0, color="black", linewidth=0.8)
    ax.set(title=f"Table 1: change over training ({result['pairs']} pairs)", xlabel="response",
           ylabel="after - before, log-prob per token")

    ax = axes[1, 0]
    acc = result["accuracy"]
    _before_after(ax, ["held-out"], [acc["before"]], [acc["after"]], "accuracy (greedy, verifier)",
                  f"held-out accuracy ({acc['prompts']} prompts)", ".3f")
    ax.set_ylim(0, 1.1)
    ax.set_xlabel("test-split prompts")

    ax = axes[1, 1]
    grads = result["gradients"]
    for side in ("chosen", "rejected"):
        ax.plot(_values(grads, "step"), _values(grads, side), "-o", markersize=3, label=f"through {side}",
                color=COLORS[side])
    ax.set(title="loss-gradient norm per side (probe batch)", xlabel="optimizer step",
           ylabel="L2 norm of the gradient", yscale="log")
    ax.legend(fontsize=8)

    ax = axes[1, 2]
    train = result["train"]
    ax.plot(_values(train, "step"), _values(train, "loss"), color="tab:purple", label="loss")
    ax.set(title="training", xlabel="optimizer step", ylabel=f"{result['loss']['name']} loss")
    right = ax.twinx()
    right.plot(_values(train, "step"), _values(train, "reward_accuracy"), color="tab:olive", alpha=0.7,
               label="reward accuracy")
    right.set(ylabel="reward accuracy (chosen reward > rejected)", ylim=(-0.05, 1.05))
    handles = ax.get_legend_handles_labels()[0] + right.get_legend_handles_labels()[0]
    ax.legend(handles, [h.get_label() for h in handles], fontsize=8, loc="center right")

    fig.suptitle(run_title(result))
    fig.text(0.5, -0.01, CAPTION, ha="center", va="top", wrap=True, fontsize=9)
    fig.savefig(path, dpi=100, bbox_inches="tight")
    return fig


def plot_runs(results: list[dict], path: Path):
    """All runs side by side: the change of chosen, rejected and unpaired, held-out accuracy
    before/after, and each run's chosen/rejected trajectory."""
    fig = _figure(max(12, 3.2 * len(results) + 6), 9)
    top = fig.subfigures(2, 1)
    axes = top[0].subplots(1, 2)
    names = [f"{r['run']}\n({run_kind(r)})" for r in results]
    xs = range(len(results))
    ax = axes[0]
    for offset, key, cell in ((-0.27, "chosen", ("table1", "chosen")), (0.0, "rejected", ("table1", "rejected")),
                              (0.27, "unpaired", ("dispersion",))):
        deltas = []
        for r in results:
            value = r
            for part in cell:
                value = value[part]
            deltas.append(value["delta"])
        bars = ax.bar([x + offset for x in xs], [0.0 if d is None else d for d in deltas], width=0.27,
                      label=key, color=COLORS[key])
        ax.bar_label(bars, labels=["n/a" if d is None else f"{d:+.2f}" for d in deltas], fontsize=7)
    ax.axhline(0, color="black", linewidth=0.8)
    ax.set_xticks(list(xs), names, fontsize=8)
    ax.set(title="Table 1: change of mean log-prob per token over training", xlabel="run",
           ylabel="after - before, log-prob per token")
    ax.legend(fontsize=8)
    _before_after(axes[1], names, [r["accuracy"]["before"] for r in results],
                  [r["accuracy"]["after"] for r in results], "accuracy (greedy, verifier)",
                  "Table 2: held-out accuracy", ".2f")
    axes[1].set_ylim(0, 1.1)
    axes[1].set_xlabel("run")
    axes[1].tick_params(axis="x", labelsize=8)

    lower = top[1].subplots(1, len(results), squeeze=False)[0]
    for ax, r in zip(lower, results):
        _changes(ax, r["trajectory"], fontsize=7)
        ax.set_title(run_title(r).replace(": ", ":\n", 1), fontsize=8)
    fig.suptitle(f"All runs ({len(results)})")
    fig.text(0.5, -0.01, CAPTION, ha="center", va="top", wrap=True, fontsize=9)
    fig.savefig(path, dpi=100, bbox_inches="tight")
    return fig
