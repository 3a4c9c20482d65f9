"""`prefdata iterate`: iterative on-policy DPO — sample, judge, pair, score, train, and again.

Round r runs the build pipeline with the policy set to round r-1's trained model
(round 1: the base policy), stores the pairs as dataset `<name>-r<r>`, scores
them under the reference (the base policy, or with `reference="previous"` the
model the round starts from), trains that starting model, and measures it.
Each round reads a fresh, disjoint slice of the source's prompts
(`source.offset` = (r-1) * prompts_per_round) unless `reuse_prompts`.

Where a round's rows are: candidates carry the generating model's `model_hash`
(state.json maps round -> hash), pairs carry `dataset = <name>-r<r>`, and the
trained model is `runs/<name>/round-<r>/model` (Hugging Face format). Rounds are
not a schema column: the dataset name and the model hash already identify them.

Resume: `runs/<name>/state.json` (written atomically) lists each round's finished
stages — build, score, train. A rerun skips them; a stage killed half-way
resumes by its own mechanism (build shards, score parts, train checkpoints).
"""

from __future__ import annotations

import copy
import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable

from prefdata import pause
from prefdata.config import build_config, resolve_model, set_path
from prefdata.errors import PrefdataError
from prefdata.fields import at_least, check_instance, one_of
from prefdata.paths import exclusive_lock
from prefdata.store import atomic_write_bytes

STAGES = ("build", "score", "train")


@dataclass(frozen=True)
class IterateConfig:
    rounds: int = field(default=3, metadata=at_least(1))
    prompts_per_round: int = field(default=64, metadata=at_least(1))
    reuse_prompts: bool = False  # every round on the same prompts instead of fresh slices
    reference: str = field(default="base", metadata=one_of("base", "previous"))
    name: str = "iter"  # datasets <name>-r<r>, run folder runs/<name>
    loss: str = "dpo"
    beta: float = field(default=0.1, metadata=at_least(0, open=True))
    lr: float = field(default=1e-4, metadata=at_least(0, open=True))
    epochs: int = field(default=2, metadata=at_least(1))
    batch_size: int = field(default=8, metadata=at_least(1))
    eval_every: int = field(default=5, metadata=at_least(0))
    eval_pairs: int = field(default=256, metadata=at_least(1))  # pairs whose log-probs Table 1 tracks
    heldout_prompts: int = field(default=64, metadata=at_least(0))
    seed: int = field(default=0, metadata=at_least(0))
    device: str | None = None  # None: CUDA when present (bf16 there), else CPU

    def __post_init__(self):
        check_instance(self)

    def identity(self) -> dict:
        """What a resumed run must share with the run it continues (more rounds may be asked for)."""
        return {k: v for k, v in asdict(self).items() if k not in ("rounds", "device")}


def run_dir(workspace: Path, name: str) -> Path:
    return Path(workspace) / "runs" / name


def run_iterate(workspace: Path, raw: dict, cfg: IterateConfig, log: Callable[[str], None] = print) -> dict:
    """Run (or resume) `cfg.rounds` rounds of the pipeline `raw` (a TOML dict, as `build` takes);
    returns the report dict (also written as runs/<name>/rounds.{json,txt,png})."""
    from prefdata.train.loss_config import LossConfig

    LossConfig(cfg.loss, beta=cfg.beta)  # a bad --loss fails before any model work
    base = resolve_model(raw.get("policy", {}).get("model", "toy:policy"))
    source = raw.get("source", {})
    first_offset = source.get("offset", 0) if isinstance(source, dict) else 0
    for r in (1, cfg.rounds):  # every round's config is checked before the first model loads
        _round_config(raw, cfg, r, base, first_offset)
    from prefdata.check import refuse_if_damaged
    from prefdata.store import Workspace

    refuse_if_damaged(Path(workspace))
    ws = Workspace.create(workspace)
    with ws.writer():  # the manifest first: a folder holding only runs/ is not a workspace
        ws.write_manifest(f"iterate:{cfg.name}", {"config": asdict(cfg), "pipeline": raw})
    root = run_dir(workspace, cfg.name)
    root.mkdir(parents=True, exist_ok=True)
    with exclusive_lock(root, f"{root} is being iterated by another process",
                        "wait for it to finish, or pick another --name"):
        state = _load_state(root, cfg, raw, base)
        for r in range(1, cfg.rounds + 1):
            _run_round(Path(workspace), root, state, raw, cfg, r, first_offset, log)
        report = round_report(state)
        write_round_report(root, report)
    log(report["text"])
    return report


def _round_config(raw: dict, cfg: IterateConfig, r: int, start: str, first_offset: int):
    raw = copy.deepcopy(raw)
    set_path(raw, "name", f"{cfg.name}-r{r}")
    set_path(raw, "policy.model", start)
    set_path(raw, "source.limit", cfg.prompts_per_round)
    set_path(raw, "source.offset", first_offset + (0 if cfg.reuse_prompts else (r - 1) * cfg.prompts_per_round))
    return build_config(raw)


def _load_state(root: Path, cfg: IterateConfig, raw: dict, base: str) -> dict:
    from prefdata.score import model_hash

    path = root / "state.json"
    fresh = {"config": cfg.identity(), "pipeline": raw, "base_model": base, "base_model_hash": model_hash(base),
             "rounds": {}}
    if not path.is_file():
        _save_state(root, fresh)
        return fresh
    state = json.loads(path.read_text())
    for key in ("config", "pipeline", "base_model_hash"):
        if json.dumps(state.get(key), sort_keys=True) != json.dumps(fresh[key], sort_keys=True):
            raise PrefdataError(f"{root} holds an iterate run with a different {key.replace('_', ' ')}",
                                "give the same options to resume it, or pick another --name")
    return state


def _save_state(root: Path, state: dict, recorded: str | None = None) -> None:
    atomic_write_bytes(root / "state.json", (json.dumps(state, indent=2) + "\n").encode())
    if recorded:  # a named point, so crash tests can kill right after a stage is on disk
        pause.enter_stage("iterate")
        pause.point(f"recorded:{recorded}")


def _run_round(workspace: Path, root: Path, state: dict, raw: dict, cfg: IterateConfig, r: int,
               first_offset: int, log) -> None:
    from prefdata.build import build
    from prefdata.score import model_hash, score_pairs
    from prefdata.store import Workspace
    from prefdata.train.config import TrainConfig
    from prefdata.train.loop import train
    from prefdata.train.loss_config import LossConfig

    rec = state["rounds"].setdefault(str(r), {"round": r, "dataset": f"{cfg.name}-r{r}", "stages": []})
    if rec["stages"] == list(STAGES):
        log(f"== round {r}: finished earlier, skipped")
        return
    start = state["base_model"] if r == 1 else state["rounds"][str(r - 1)]["model"]
    reference = state["base_model"] if cfg.reference == "base" else start
    rec.update(start_model=start, reference_model=reference)
    dataset = rec["dataset"]
    if "build" not in rec["stages"]:
        log(f"== round {r}: sample from {start}, judge, pair -> {dataset}")
        summary = build(workspace, _round_config(raw, cfg, r, start, first_offset), log=log)
        rec["build"] = {"prompts": summary["prompts"]["rows_kept"], "pairs": summary["pairs"][dataset],
                        "generation": summary.get("generation", {})}
        rec["stages"].append("build")
        _save_state(root, state, recorded="build")
    ws = Workspace.open(workspace)
    if "score" not in rec["stages"]:
        log(f"== round {r}: reference log-probs under {reference}")
        score_pairs(ws, reference, dataset=dataset, device=cfg.device, progress=log)
        rec["stages"].append("score")
        _save_state(root, state, recorded="score")
    log(f"== round {r}: train {start} on {dataset}")
    train_cfg = TrainConfig(dataset=dataset, model_path=start, reference_path=None if reference == start else reference,
                            loss=LossConfig(cfg.loss, beta=cfg.beta), lr=cfg.lr, epochs=cfg.epochs,
                            batch_size=cfg.batch_size, eval_every=cfg.eval_every, eval_pairs=cfg.eval_pairs,
                            heldout_prompts=cfg.heldout_prompts, seed=cfg.seed, device=cfg.device,
                            output_dir=str(root / f"round-{r}"))
    result = train(ws, train_cfg, progress=log)
    model = root / f"round-{r}" / "model"
    rec.update(model=str(model), model_hash=model_hash(model), result={
        k: result[k] for k in ("pairs", "steps", "table1", "eval_subset", "accuracy", "device", "bf16", "seconds")})
    rec["stages"].append("train")
    _save_state(root, state, recorded="train")


# -- the report ---------------------------------------------------------------------------------
def round_report(state: dict) -> dict:
    """Per finished round: Table 1 (chosen/rejected log-prob per token under the round's starting
    model and after its training, on the tracked pairs) and Table 2 (held-out accuracy)."""
    rows = []
    for key in sorted(state["rounds"], key=int):
        rec = state["rounds"][key]
        if "result" not in rec:
            continue
        res = rec["result"]
        rows.append({"round": rec["round"], "dataset": rec["dataset"], "pairs": res["pairs"],
                     "generator_hash": rec["build"]["generation"].get("policy", {}).get("model_hash"),
                     "model": rec["model"], "model_hash": rec["model_hash"], "tracked_pairs": res["eval_subset"]["pairs"],
                     "chosen": res["eval_subset"]["chosen"], "rejected": res["eval_subset"]["rejected"],
                     "reference": {"chosen": res["table1"]["chosen"]["before"],
                                   "rejected": res["table1"]["rejected"]["before"]},
                     "accuracy": res["accuracy"]})
    return {"name": state["config"]["name"], "config": state["config"], "base_model": state["base_model"],
            "rounds": rows, "text": format_rounds(state["config"]["name"], rows)}


def _f(x) -> str:
    return "-" if x is None else f"{x:.3f}"


def format_rounds(name: str, rows: list[dict]) -> str:
    lines = [f"iterate {name}: Table 1, mean per-token log-prob of the round's pairs, under the model the "
             "round started from -> after its training", "",
             f"{'round':<6}{'dataset':<14}{'pairs':>6}{'tracked':>8}  {'chosen before':>14}{'after':>9}"
             f"  {'rejected before':>16}{'after':>9}  {'ref chosen':>11}{'ref rejected':>13}"]
    for row in rows:
        lines.append(f"{row['round']:<6}{row['dataset']:<14}{row['pairs']:>6}{row['tracked_pairs']:>8}  "
                     f"{_f(row['chosen']['before']):>14}{_f(row['chosen']['after']):>9}  "
                     f"{_f(row['rejected']['before']):>16}{_f(row['rejected']['after']):>9}  "
                     f"{_f(row['reference']['chosen']):>11}{_f(row['reference']['rejected']):>13}")
    lines += ["", f"iterate {name}: Table 2, held-out accuracy (greedy, verifier) before -> after the round", "",
              f"{'round':<6}{'dataset':<14}{'prompts':>8}{'before':>9}{'after':>9}"]
    for row in rows:
        a = row["accuracy"]
        lines.append(f"{row['round']:<6}{row['dataset']:<14}{a['prompts']:>8}{_f(a['before']):>9}{_f(a['after']):>9}")
    return "\n".join(lines)


def write_round_report(root: Path, report: dict) -> None:
    atomic_write_bytes(root / "rounds.json", (json.dumps(report, indent=2) + "\n").encode())
    atomic_write_bytes(root / "rounds.txt", (report["text"] + "\n").encode())
    if report["rounds"]:
        _plot(report, root / "rounds.png")


def _plot(report: dict, path: Path) -> None:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    rows = report["rounds"]
    rounds = [row["round"] for row in rows]
    fig = Figure(figsize=(11, 4.5), tight_layout=True)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot(1, 2, 1)
    # x = 0 is the base policy (round 1's "before"); x = r the model after round r
    ax.plot([0] + rounds, [rows[0]["accuracy"]["before"]] + [row["accuracy"]["after"] for row in rows], "-o")
    ax.set(title="held-out accuracy", xlabel="round (0 = base policy)", ylabel="accuracy", xticks=[0] + rounds)
    ax = fig.add_subplot(1, 2, 2)
    for side, color in (("chosen", "tab:blue"), ("rejected", "tab:red")):
        ax.plot(rounds, [row[side]["before"] for row in rows], "--o", color=color, label=f"{side} before")
        ax.plot(rounds, [row[side]["after"] for row in rows], "-s", color=color, label=f"{side} after")
    ax.set(title="mean per-token log-prob of the round's pairs", xlabel="round", ylabel="log-prob / token",
           xticks=rounds)
    ax.legend()
    fig.suptitle(f"iterate {report['name']}")
    fig.savefig(path, dpi=100)


def iterate_texts(workspace: Path) -> list[str]:
    """The round tables of every iterate run of the workspace (for `prefdata report`)."""
    return [json.loads(p.read_text())["text"] for p in sorted((Path(workspace) / "runs").glob("*/rounds.json"))]
