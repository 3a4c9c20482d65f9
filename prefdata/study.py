"""`prefdata study`: the whole study on one workspace — build scenarios 1-4, score, train, report.

It prints the analogues of the study's two tables:

* Table 1: mean per-token log-prob of chosen and rejected responses under the
  base model and after DPO, per scenario (on-policy 1, mixed 2/3, off-policy 4);
* Table 2: held-out accuracy (greedy decoding, verifier) before and after DPO.

On the toy world every number is real: real samples, real verdicts, real
training; only the models are tiny.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from prefdata.config import SCENARIOS, build_config, resolve_model, scenario_pipeline, set_path
from prefdata.fields import at_least, check_instance, one_of


@dataclass(frozen=True)
class StudyConfig:
    limit: int = field(default=256, metadata=at_least(1))  # training prompts per scenario build
    n: int = field(default=8, metadata=at_least(1))  # policy samples per prompt (the study's N)
    m: int = field(default=4, metadata=at_least(1))  # other-model samples per prompt
    backend: str = field(default="auto", metadata=one_of("auto", "vllm", "transformers", "openai"))
    policy_model: str = "toy:policy"
    other_model: str = "toy:other"
    loss: str = "dpo"
    beta: float = field(default=0.1, metadata=at_least(0, open=True))
    lr: float = field(default=1e-4, metadata=at_least(0, open=True))
    epochs: int = field(default=2, metadata=at_least(1))
    batch_size: int = field(default=8, metadata=at_least(1))
    eval_every: int = field(default=5, metadata=at_least(0))
    seed: int = field(default=0, metadata=at_least(0))

    def __post_init__(self):
        check_instance(self)  # before the first build: a bad --lr must not cost four builds


def run_study(workspace: Path, cfg: StudyConfig = StudyConfig(), log: Callable[[str], None] = print) -> dict:
    from prefdata.build import build
    from prefdata.score import score_pairs
    from prefdata.store import Workspace
    from prefdata.train.config import TrainConfig
    from prefdata.train.loop import train
    from prefdata.train.losses import LossConfig
    from prefdata.train.report import combined_report

    builds = {}
    for scenario in SCENARIOS:
        raw = scenario_pipeline(scenario)
        for dotted, value in (("source.limit", cfg.limit), ("policy.sampling.n", cfg.n), ("other.sampling.n", cfg.m),
                              ("policy.backend", cfg.backend), ("other.backend", cfg.backend),
                              ("policy.model", cfg.policy_model), ("other.model", cfg.other_model),
                              ("seed", cfg.seed), ("quiet", True)):
            set_path(raw, dotted, value)
        log(f"== build scenario {scenario}")
        builds[scenario] = build(workspace, build_config(raw), log=log)
    ws = Workspace.open(workspace)
    policy = resolve_model(cfg.policy_model)
    runs = {}
    for scenario in SCENARIOS:
        dataset = f"scenario{scenario}"
        log(f"== score and train {dataset}")
        score_pairs(ws, policy, dataset=dataset, progress=log)
        train_cfg = TrainConfig(dataset=dataset, model_path=policy, loss=LossConfig(cfg.loss, beta=cfg.beta),
                                lr=cfg.lr, epochs=cfg.epochs, batch_size=cfg.batch_size,
                                eval_every=cfg.eval_every, seed=cfg.seed)
        runs[scenario] = train(ws, train_cfg, progress=log)
    combined = combined_report(ws)
    return {"builds": builds, "runs": runs, "tables": study_tables(runs), "combined": combined}


def study_tables(runs: dict[int, dict]) -> str:
    """The Table 1 and Table 2 analogues as text."""
    from prefdata.card import SCENARIO_RULES

    def f(x) -> str:
        return "   n/a" if x is None else f"{x:8.3f}"

    lines = ["Table 1: mean per-token log-prob under the policy, before -> after DPO", "",
             f"{'scenario':<10}{'kind':<12}{'pairs':>6}  {'chosen before':>14}{'after':>9}"
             f"  {'rejected before':>16}{'after':>9}"]
    for scenario, r in sorted(runs.items()):
        t = r["table1"]
        lines.append(f"{scenario:<10}{SCENARIO_RULES[scenario][0]:<12}{r['pairs']:>6}  "
                     f"{f(t['chosen']['before']):>14}{f(t['chosen']['after']):>9}"
                     f"  {f(t['rejected']['before']):>16}{f(t['rejected']['after']):>9}")
    lines += ["", "Table 2: held-out accuracy (greedy, verifier) before -> after DPO", "",
              f"{'scenario':<10}{'kind':<12}{'prompts':>8}{'before':>9}{'after':>9}"]
    for scenario, r in sorted(runs.items()):
        a = r["accuracy"]
        lines.append(f"{scenario:<10}{SCENARIO_RULES[scenario][0]:<12}{a['prompts']:>8}"
                     f"{f(a['before']):>9}{f(a['after']):>9}")
    return "\n".join(lines)
