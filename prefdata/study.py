"""`prefdata study`: the whole study, over several seeds — build scenarios 1-4, score, train, report.

Per seed it builds its own workspace ``DIR/seed-<s>`` (the seed drives the toy world's problems,
policy and other-model sampling, pair selection draws, the training data order and the eval
subsets), scores the pairs,
and trains every requested loss on every scenario from the same policy. Then it prints the
analogues of the study's two tables, each cell the mean over seeds ± the half-width of a 95%
Student-t confidence interval (mean ± t(0.975, n−1)·s/√n; "n/a" with one seed):

* Table 1: mean per-token log-prob of chosen and rejected responses under the base model and
  after training, per scenario (on-policy 1, mixed 2/3, off-policy 4) and loss;
* Table 2: held-out accuracy (greedy decoding, verifier) before and after, and the change.

It writes ``DIR/study.txt`` (the tables as printed), ``DIR/study.json`` (every seed's numbers
and the summaries) and ``DIR/study.png`` (bars with 95% intervals). On the toy world every
number is real: real samples, real verdicts, real training; only the models are tiny.
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable

from prefdata.config import SCENARIOS, build_config, resolve_model, scenario_pipeline, set_path
from prefdata.errors import PrefdataError
from prefdata.fields import at_least, check_instance, one_of

STUDY_LOSSES = ("dpo", "flex_dpo", "dpo_sft")
# two-sided 95% Student-t quantiles by degrees of freedom; the normal 1.96 beyond 30
_T975 = (12.706, 4.303, 3.182, 2.776, 2.571, 2.447, 2.365, 2.306, 2.262, 2.228, 2.201, 2.179, 2.160, 2.145,
         2.131, 2.120, 2.110, 2.101, 2.093, 2.086, 2.080, 2.074, 2.069, 2.064, 2.060, 2.056, 2.052, 2.048,
         2.045, 2.042)


@dataclass(frozen=True)
class StudyConfig:
    """The study's settings; the training recipe (lr, beta, epochs) comes from the sweep in docs/study.md."""

    limit: int = field(default=256, metadata=at_least(1))  # training prompts per scenario build
    n: int = field(default=8, metadata=at_least(1))  # policy samples per prompt (the study's N)
    m: int = field(default=4, metadata=at_least(1))  # other-model samples per prompt
    heldout: int = field(default=256, metadata=at_least(1))  # held-out (test split) prompts for accuracy
    backend: str = field(default="auto", metadata=one_of("auto", "vllm", "transformers", "openai"))
    policy_model: str = "toy:policy"
    other_model: str = "toy:other"
    losses: tuple[str, ...] = ("dpo",)
    beta: float = field(default=0.1, metadata=at_least(0, open=True))
    beta_rejected: float = 0.05   # flex_dpo's rejected-side beta (beta for the chosen side)
    sft_weight: float = 1.0       # dpo_sft's alpha
    lr: float = field(default=1e-5, metadata=at_least(0, open=True))
    epochs: int = field(default=1, metadata=at_least(1))
    batch_size: int = field(default=8, metadata=at_least(1))
    eval_every: int = field(default=5, metadata=at_least(0))
    generate_batch: int = field(default=256, metadata=at_least(1))  # held-out prompts decoded at once
    seeds: tuple[int, ...] = (0,)
    scenarios: tuple[int, ...] = SCENARIOS
    pairing: str = "best_vs_worst"  # scenario 1's pairing strategy (prefdata.pairing)
    select: dict = field(default_factory=dict)  # other [select] fields for every build

    def __post_init__(self):
        check_instance(self)  # before the first build: a bad --lr must not cost hours of builds
        if not self.seeds or len(set(self.seeds)) != len(self.seeds):
            raise PrefdataError(f"seeds {list(self.seeds)} must be distinct and at least one", "e.g. --seeds 0,1,2")
        unknown = [x for x in self.losses if x not in STUDY_LOSSES]
        if not self.losses or unknown:
            raise PrefdataError(f"losses {list(self.losses)} are not study losses",
                                f"choose from {', '.join(STUDY_LOSSES)}, e.g. --losses dpo,flex_dpo,dpo_sft")
        if self.heldout < 1:
            raise PrefdataError(f"heldout={self.heldout}", "use at least 1 held-out prompt (the study uses 256)")
        for loss in STUDY_LOSSES:  # a bad beta or weight fails here, before hours of building
            try:
                self.loss_config(loss)
            except ValueError as err:
                raise PrefdataError(f"study loss {loss}: {err}", "use betas > 0 and sft_weight >= 0") from None
        from prefdata.pairing import check

        check(self.pairing, 1, "worst", self.select.get("max_pairs_per_prompt", 4))

    def loss_config(self, name: str):
        from prefdata.train.loss_config import LossConfig

        extra = {"flex_dpo": {"beta_chosen": self.beta, "beta_rejected": self.beta_rejected},
                 "dpo_sft": {"sft_weight": self.sft_weight}}.get(name, {})
        return LossConfig(name, beta=self.beta, **extra)


def build_and_score(directory: Path, cfg: StudyConfig, seed: int, log: Callable[[str], None] = print):
    """Build the scenarios for one seed into ``directory`` and score their pairs; returns the workspace."""
    from prefdata.build import build
    from prefdata.score import score_pairs
    from prefdata.store import Workspace

    for scenario in cfg.scenarios:
        raw = scenario_pipeline(scenario)
        for dotted, value in (("source.limit", cfg.limit), ("policy.sampling.n", cfg.n), ("other.sampling.n", cfg.m),
                              ("policy.backend", cfg.backend), ("other.backend", cfg.backend),
                              ("policy.model", cfg.policy_model), ("other.model", cfg.other_model),
                              ("seed", seed), ("heldout", cfg.heldout), ("quiet", True)):
            set_path(raw, dotted, value)
        raw["select"] = {**raw.get("select", {}), **cfg.select,
                         **({"pairing": cfg.pairing} if scenario == 1 and cfg.pairing != "best_vs_worst" else {})}
        log(f"== seed {seed}: build scenario {scenario}")
        build(directory, build_config(raw), log=log)
    ws = Workspace.open(directory)
    for scenario in cfg.scenarios:
        score_pairs(ws, resolve_model(cfg.policy_model), dataset=f"scenario{scenario}", progress=log)
    return ws


def train_config(cfg: StudyConfig, scenario: int, loss: str, seed: int, **changes):
    from prefdata.train.config import TrainConfig

    return TrainConfig(dataset=f"scenario{scenario}", model_path=resolve_model(cfg.policy_model),
                       loss=cfg.loss_config(loss), lr=cfg.lr, epochs=cfg.epochs, batch_size=cfg.batch_size,
                       eval_every=cfg.eval_every, heldout_prompts=cfg.heldout, generate_batch=cfg.generate_batch,
                       seed=seed, **changes)


def run_seed(directory: Path, cfg: StudyConfig, seed: int, log: Callable[[str], None] = print) -> list[dict]:
    """One seed's workspace: build, score, train every scenario and loss; the study's numbers per run."""
    from prefdata.train.loop import train
    from prefdata.train.report_files import combined_report

    ws = build_and_score(directory / f"seed-{seed}", cfg, seed, log)
    base_accuracy: dict = {}  # the base model's held-out accuracy, decoded once per seed
    runs = []
    for scenario in cfg.scenarios:
        for loss in cfg.losses:
            log(f"== seed {seed}: train scenario{scenario} with {loss}")
            result = train(ws, train_config(cfg, scenario, loss, seed), progress=log, base_accuracy=base_accuracy)
            runs.append({"seed": seed, "scenario": scenario, "loss": loss, **_numbers(result)})
    combined_report(ws)
    return runs


def _say(seed: int, message: str) -> None:
    print(f"[seed {seed}] {message}", flush=True)


def run_study(directory: Path, cfg: StudyConfig = StudyConfig(), log: Callable[[str], None] = print,
              jobs: int = 1) -> dict:
    """Every seed, scenario and loss; returns {"runs", "summary", "tables", "seconds"} and writes the files.

    ``jobs`` > 1 runs that many seeds at once in worker processes (seeds are independent: their
    results do not depend on ``jobs``); their progress lines carry the seed.
    """
    started = time.time()
    directory = Path(directory)
    if jobs > 1 and len(cfg.seeds) > 1:
        import functools
        import multiprocessing
        from concurrent.futures import ProcessPoolExecutor

        # spawn: a fresh interpreter per worker, never a fork of a process holding torch threads
        with ProcessPoolExecutor(min(jobs, len(cfg.seeds)), mp_context=multiprocessing.get_context("spawn")) as pool:
            futures = [pool.submit(run_seed, directory, cfg, seed, functools.partial(_say, seed)) for seed in cfg.seeds]
            runs = [run for future in futures for run in future.result()]
    else:
        runs = [run for seed in cfg.seeds for run in run_seed(directory, cfg, seed, log)]
    summary = summarise(runs)
    out = {"config": {**asdict(cfg)}, "jobs": jobs, "runs": runs, "summary": summary,
           "tables": study_tables(summary, len(cfg.seeds)), "seconds": round(time.time() - started, 1)}
    write_study(directory, out)
    return out


def _numbers(result: dict) -> dict:
    """What the study keeps of one run's report."""
    t, a, g = result["table1"], result["accuracy"], result["gradients"][-1]
    return {"pairs": result["pairs"], "prompts": a["prompts"],
            "chosen_before": t["chosen"]["before"], "chosen_after": t["chosen"]["after"],
            "rejected_before": t["rejected"]["before"], "rejected_after": t["rejected"]["after"],
            "chosen_delta": t["chosen"]["delta"], "rejected_delta": t["rejected"]["delta"],
            "accuracy_before": a["before"], "accuracy_after": a["after"], "accuracy_delta": a["delta"],
            "grad_ratio_last": g["ratio"], "log10_dprob_ratio_last": g.get("log10_dprob_ratio")}


def mean_ci(values: list[float]) -> dict:
    """Mean, sample std and the 95% Student-t half-width over seeds (None where undefined).

    >>> round(mean_ci([0.5, 0.7, 0.6])["ci95"], 4)  # 4.303 * 0.1 / sqrt(3)
    0.2484
    """
    xs = [v for v in values if v is not None]
    if not xs:
        return {"mean": None, "std": None, "ci95": None, "n": 0}
    mean = sum(xs) / len(xs)
    if len(xs) < 2:
        return {"mean": mean, "std": None, "ci95": None, "n": len(xs)}
    std = math.sqrt(sum((x - mean) ** 2 for x in xs) / (len(xs) - 1))
    t = _T975[len(xs) - 2] if len(xs) - 1 <= len(_T975) else 1.96
    return {"mean": mean, "std": std, "ci95": t * std / math.sqrt(len(xs)), "n": len(xs)}


_METRICS = ("pairs", "prompts", "chosen_before", "chosen_after", "rejected_before", "rejected_after",
            "chosen_delta", "rejected_delta",
            "accuracy_before", "accuracy_after", "accuracy_delta", "grad_ratio_last", "log10_dprob_ratio_last")


def summarise(runs: list[dict]) -> list[dict]:
    """One row per (scenario, loss): every metric as mean_ci over the seeds."""
    keys = sorted({(r["scenario"], r["loss"]) for r in runs}, key=lambda k: (k[0], STUDY_LOSSES.index(k[1])))
    rows = []
    for scenario, loss in keys:
        mine = [r for r in runs if (r["scenario"], r["loss"]) == (scenario, loss)]
        rows.append({"scenario": scenario, "loss": loss, "seeds": [r["seed"] for r in mine],
                     **{m: mean_ci([r[m] for r in mine]) for m in _METRICS}})
    return rows


def _cell(stat: dict, spec: str = ".3f") -> str:
    if stat["mean"] is None:
        return "n/a"
    half = "n/a" if stat["ci95"] is None else format(stat["ci95"], spec)
    return f"{format(stat['mean'], spec)} ± {half}"


def study_tables(summary: list[dict], n_seeds: int) -> str:
    """The Table 1 and Table 2 analogues as text: mean ± 95% CI half-width over the seeds."""
    from prefdata.card import SCENARIO_RULES

    ci = f"mean ± 95% CI over {n_seeds} seed{'s' if n_seeds != 1 else ''}"
    head = f"{'scenario':<9}{'kind':<12}{'loss':<10}"
    lines = [f"Table 1: mean per-token log-prob under the policy, before -> after training ({ci})", "",
             f"{head}{'pairs':>7}{'chosen before':>20}{'after':>20}{'rejected before':>20}{'after':>20}"]
    for r in summary:
        lines.append(f"{r['scenario']:<9}{SCENARIO_RULES[r['scenario']][0]:<12}{r['loss']:<10}"
                     f"{r['pairs']['mean']:>7.0f}" + "".join(f"{_cell(r[k]):>20}" for k in (
                         "chosen_before", "chosen_after", "rejected_before", "rejected_after")))
    lines += ["", f"Table 2: held-out accuracy (greedy, verifier) before -> after training ({ci})", "",
              f"{head}{'prompts':>8}{'before':>18}{'after':>18}{'change':>18}"]
    for r in summary:
        lines.append(f"{r['scenario']:<9}{SCENARIO_RULES[r['scenario']][0]:<12}{r['loss']:<10}"
                     f"{r['prompts']['mean']:>8.0f}" + "".join(f"{_cell(r[k]):>18}" for k in (
                         "accuracy_before", "accuracy_after", "accuracy_delta")))
    return "\n".join(lines)


def write_study(directory: Path, out: dict) -> None:
    """study.txt, study.json and study.png in ``directory``, each written atomically."""
    from prefdata.store import atomic_write_bytes

    atomic_write_bytes(directory / "study.txt", (out["tables"] + "\n").encode())
    atomic_write_bytes(directory / "study.json", (json.dumps(out, indent=2) + "\n").encode())
    plot_study(out["summary"], directory / "study.png")


def plot_study(summary: list[dict], path: Path) -> None:
    """Bars per scenario and loss with 95% interval whiskers: Table 1's change in chosen and rejected
    log-prob/token (after − before: the two scales differ a hundredfold between on- and off-policy
    responses, their direction is the study's point) and Table 2's accuracy after, the base model dashed."""
    import io

    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    from prefdata.store import atomic_write_bytes

    losses = [x for x in STUDY_LOSSES if any(r["loss"] == x for r in summary)]
    scenarios = sorted({r["scenario"] for r in summary})
    width = 0.8 / len(losses)
    fig = Figure(figsize=(14, 4.5), tight_layout=True)
    FigureCanvasAgg(fig)
    panels = (("chosen_delta", "Table 1: change in chosen log-prob/token"),
              ("rejected_delta", "Table 1: change in rejected log-prob/token"),
              ("accuracy_after", "Table 2: held-out accuracy after"))
    for k, (metric, title) in enumerate(panels):
        ax = fig.add_subplot(1, len(panels), k + 1)
        for j, loss in enumerate(losses):
            rows = {r["scenario"]: r[metric] for r in summary if r["loss"] == loss}
            xs = [i + (j - (len(losses) - 1) / 2) * width for i in range(len(scenarios))]
            means = [rows[s]["mean"] if s in rows and rows[s]["mean"] is not None else 0.0 for s in scenarios]
            # symmetric log scale below: the on-policy changes are small, the off-policy ones large
            errs = [rows[s]["ci95"] or 0.0 if s in rows else 0.0 for s in scenarios]
            ax.bar(xs, means, width=width, yerr=errs, capsize=3, label=loss)
        if metric == "accuracy_after":  # the base model's accuracy, the bar DPO should not go below
            before = [r["accuracy_before"]["mean"] for r in summary if r["accuracy_before"]["mean"] is not None]
            if before:
                ax.axhline(sum(before) / len(before), color="k", linestyle="--", linewidth=1, label="before")
        if metric != "accuracy_after":
            ax.set_yscale("symlog", linthresh=0.01)
            ax.axhline(0.0, color="k", linewidth=0.8)
        ax.set_xticks(range(len(scenarios)), [f"scenario {s}" for s in scenarios])
        ax.set(title=title)
        ax.legend(fontsize=8)
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=100)
    atomic_write_bytes(path, buffer.getvalue())
