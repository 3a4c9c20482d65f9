"""The `prefdata` command: parses options, builds a typed config, calls the library.

Heavy modules (pyarrow, polars, duckdb, torch, vllm) are imported inside the
commands so that `prefdata --help` and `prefdata --version` answer instantly.
"""

from __future__ import annotations

import os
import sys
from enum import Enum
from pathlib import Path
from typing import Optional

import typer

from prefdata import __version__
from prefdata.errors import PrefdataError

app = typer.Typer(
    name="prefdata",
    help="Build on-policy, off-policy and mixed preference-pair datasets (the four scenarios of "
         "'3D-Properties: Identifying Challenges in DPO'), query them with DuckDB, and train DPO/IPO on them.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
toy_app = typer.Typer(help="The embedded toy world: tiny policy/other models and an arithmetic task.",
                      no_args_is_help=True)
app.add_typer(toy_app, name="toy")

DEFAULT_WORKSPACE = Path("prefdata-workspace")


class OutputFormat(str, Enum):
    table = "table"
    csv = "csv"
    json = "json"
    parquet = "parquet"


def _version(value: bool) -> None:
    if value:
        typer.echo(f"prefdata {__version__}")
        raise typer.Exit()


@app.callback()
def _root(version: bool = typer.Option(False, "--version", callback=_version, is_eager=True,
                                       help="Print the version and exit.")) -> None:
    pass


@app.command()
def build(
    workspace: Path = typer.Argument(DEFAULT_WORKSPACE, help="Workspace directory (created if missing)."),
    scenario: Optional[int] = typer.Option(None, "--scenario", "-s", help="Build scenario 1-4 (loads pipelines/scenarioN.toml)."),
    mix: Optional[str] = typer.Option(None, "--mix", help="Blend scenarios by proportion, e.g. 1=0.5,4=0.5 (seeded)."),
    config: Optional[Path] = typer.Option(None, "--config", "-c", help="Your own pipeline TOML (see pipelines/)."),
    source: Optional[str] = typer.Option(None, "--source", help="Prompts: JSONL/JSON/Parquet/CSV file, folder, HF dataset, or 'toy'."),
    format: Optional[str] = typer.Option(None, "--format", help="Source format: auto, jsonl, json, parquet, csv, hf."),
    split: Optional[str] = typer.Option(None, "--split", help="Source split (default train)."),
    limit: Optional[int] = typer.Option(None, "--limit", help="Use at most this many prompts."),
    sample: Optional[int] = typer.Option(None, "--sample", help="Seeded random sample of this many prompts."),
    preset: Optional[str] = typer.Option(None, "--preset", help="Column preset: gsm8k, math, chat, plain."),
    prompt_column: Optional[str] = typer.Option(None, "--prompt-column", help="Column holding the prompt."),
    solution_column: Optional[str] = typer.Option(None, "--solution-column", help="Column holding the reference solution."),
    answer_column: Optional[str] = typer.Option(None, "--answer-column", help="Column holding the reference answer."),
    messages_column: Optional[str] = typer.Option(None, "--messages-column", help="Column holding chat messages."),
    policy_model: Optional[str] = typer.Option(None, "--policy-model", help="Policy model directory (default: the toy policy)."),
    other_model: Optional[str] = typer.Option(None, "--other-model", help="Other model directory (default: the toy other model)."),
    backend: Optional[str] = typer.Option(None, "--backend", help="Generation backend (policy, other model and llm judge): auto, vllm, transformers, openai."),
    n: Optional[int] = typer.Option(None, "--n", help="Policy samples per prompt (the study used 8)."),
    m: Optional[int] = typer.Option(None, "--m", help="Other-model samples per prompt."),
    temperature: Optional[float] = typer.Option(None, "--temperature", help="Sampling temperature for both models."),
    max_tokens: Optional[int] = typer.Option(None, "--max-tokens", help="Max new tokens per sample."),
    judge: Optional[str] = typer.Option(None, "--judge", help="Judge: verifier, llm or reward_model."),
    judge_model: Optional[str] = typer.Option(None, "--judge-model", help="Model for the llm / reward_model judge."),
    min_margin: Optional[float] = typer.Option(None, "--min-margin", help="Minimum chosen-minus-rejected score."),
    seed: Optional[int] = typer.Option(None, "--seed", help="Seed for sampling, source sampling and mixes."),
    set_: list[str] = typer.Option([], "--set", help="Override any pipeline field: --set policy.sampling.top_p=0.9"),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress bars or step log."),
) -> None:
    """Build a preference dataset: prompts -> candidates -> judgments -> pairs.

    With no options besides --scenario it builds from the embedded toy world, offline, on CPU.
    Policy samples are generated and judged once per workspace and reused by every scenario.

    Examples: prefdata build --scenario 2;  prefdata build ws --mix 1=0.5,4=0.5;
    prefdata build gsm --scenario 1 --source ../shared/data/gsm8k --limit 100
    """
    from prefdata.build import build as run_build
    from prefdata.build import format_summary
    from prefdata.config import build_config, load_toml, scenario_pipeline, set_path

    chosen = [x for x in (scenario is not None, mix is not None, config is not None) if x]
    if len(chosen) != 1:
        raise PrefdataError("give exactly one of --scenario N, --mix SPEC or --config FILE",
                            "e.g. prefdata build --scenario 2")
    if config is not None:
        raw = load_toml(config)
    elif mix is not None:
        raw = scenario_pipeline(1)
        raw.pop("scenarios", None)
        raw.pop("name", None)
        raw["mix"] = mix
    else:
        raw = scenario_pipeline(scenario)
    flags = {
        "source.path_or_name": source, "source.format": format, "source.split": split, "source.limit": limit,
        "source.sample": sample, "source.preset": preset, "source.prompt_column": prompt_column,
        "source.solution_column": solution_column, "source.answer_column": answer_column,
        "source.messages_column": messages_column, "policy.model": policy_model, "other.model": other_model,
        "policy.backend": backend, "other.backend": backend, "judge.backend": backend, "policy.sampling.n": n, "other.sampling.n": m,
        "policy.sampling.temperature": temperature, "other.sampling.temperature": temperature,
        "policy.sampling.max_tokens": max_tokens, "other.sampling.max_tokens": max_tokens,
        "judge.kind": judge, "judge.model": judge_model, "select.min_margin": min_margin,
        "seed": seed, "source.seed": seed, "policy.sampling.seed": seed, "other.sampling.seed": seed,
    }
    if sample is not None and limit is None:
        flags["source.limit"] = None
        raw.get("source", {}).pop("limit", None)
    for dotted, value in flags.items():
        if value is not None:
            set_path(raw, dotted, value)
    for item in set_:
        key, sep, value = item.partition("=")
        if not sep:
            raise PrefdataError(f"--set {item!r} is not KEY=VALUE", "e.g. --set policy.sampling.top_p=0.9")
        set_path(raw, key.strip(), _parse_value(value.strip()))
    if quiet:
        raw["quiet"] = True
    cfg = build_config(raw)
    summary = run_build(workspace, cfg, log=(lambda _msg: None) if quiet else typer.echo)
    typer.echo(format_summary(summary))


def _parse_value(text: str):
    """A --set value: TOML scalar syntax (numbers, true/false, quoted strings), else a bare string."""
    import tomllib

    try:
        return tomllib.loads(f"v = {text}")["v"]
    except tomllib.TOMLDecodeError:
        return text


@app.command()
def export(
    workspace: Path = typer.Argument(..., help="Workspace directory."),
    out: Path = typer.Option(..., "--out", "-o", help="Output directory (one Parquet file per dataset)."),
    format: str = typer.Option("trl", "--format", help="trl (prompt/chosen/rejected for TRL's DPOTrainer) or parquet (raw pairs)."),
    dataset: Optional[str] = typer.Option(None, "--dataset", help="Export only this dataset (e.g. scenario2)."),
    conversational: bool = typer.Option(False, "--conversational", help="TRL conversational form (lists of messages)."),
    keep_provenance: bool = typer.Option(False, "--keep-provenance", help="Keep ids, origins, scores and log-probs as extra columns."),
) -> None:
    """Export pairs for an external trainer (TRL's DPOTrainer accepts the files as they are)."""
    from prefdata.export import export_pairs
    from prefdata.store import Workspace

    result = export_pairs(Workspace.open(workspace), out, format=format, dataset=dataset,
                          conversational=conversational, keep_provenance=keep_provenance)
    for name, info in result.items():
        typer.echo(f"{name}: {info}")


def _dataset_name(scenario: Optional[int], dataset: Optional[str]) -> Optional[str]:
    if scenario is not None and dataset is not None:
        raise PrefdataError("give --scenario or --dataset, not both", "e.g. --scenario 2 or --dataset mix-1x0.5-4x0.5")
    if scenario is not None:
        if scenario not in (1, 2, 3, 4):
            raise PrefdataError(f"unknown scenario {scenario}", "use --scenario 1, 2, 3 or 4")
        return f"scenario{scenario}"
    return dataset


@app.command()
def score(
    workspace: Path = typer.Argument(..., help="Workspace directory."),
    model: str = typer.Option("toy:policy", "--model", "-m", help="Reference model directory (the policy you will train)."),
    scenario: Optional[int] = typer.Option(None, "--scenario", "-s", help="Score only this scenario's pairs."),
    dataset: Optional[str] = typer.Option(None, "--dataset", help="Score only this dataset (e.g. a mix)."),
    batch_tokens: int = typer.Option(4096, "--batch-tokens", help="Tokens per packed forward pass."),
    device: Optional[str] = typer.Option(None, "--device", help="cpu, cuda, cuda:1 (default: cuda if available)."),
) -> None:
    """Store reference log-probs (summed and per-token) of every pair's chosen and rejected response."""
    from prefdata.config import resolve_model
    from prefdata.score import score_pairs
    from prefdata.store import Workspace

    ws = Workspace.open(workspace)
    summary = score_pairs(ws, resolve_model(model), dataset=_dataset_name(scenario, dataset),
                          batch_tokens=batch_tokens, device=device, progress=typer.echo)
    typer.echo(" ".join(f"{k}={v}" for k, v in summary.items()))


@app.command()
def train(
    workspace: Path = typer.Argument(..., help="Workspace directory."),
    scenario: Optional[int] = typer.Option(None, "--scenario", "-s", help="Train on this scenario's pairs."),
    dataset: Optional[str] = typer.Option(None, "--dataset", help="Train on this dataset (e.g. a mix)."),
    model: str = typer.Option("toy:policy", "--model", "-m", help="Model to train (also the DPO reference)."),
    loss: str = typer.Option("dpo", "--loss", help="dpo, ipo, cdpo, flex_dpo, dpo_sft or slic."),
    beta: Optional[float] = typer.Option(None, "--beta", help="DPO beta (loss default if unset)."),
    beta_chosen: Optional[float] = typer.Option(None, "--beta-chosen", help="Flex-DPO beta of the chosen term."),
    beta_rejected: Optional[float] = typer.Option(None, "--beta-rejected", help="Flex-DPO beta of the rejected term."),
    label_smoothing: Optional[float] = typer.Option(None, "--label-smoothing", help="cDPO label smoothing."),
    sft_weight: Optional[float] = typer.Option(None, "--sft-weight", help="Weight of the SFT term (dpo_sft, slic)."),
    lr: Optional[float] = typer.Option(None, "--lr", help="Peak learning rate (AdamW); default 1e-4 for the toy models, else 5e-6."),
    epochs: int = typer.Option(1, "--epochs", help="Passes over the pairs."),
    max_steps: Optional[int] = typer.Option(None, "--max-steps", help="Optimizer steps (wins over --epochs)."),
    batch_size: int = typer.Option(8, "--batch-size", help="Pairs per micro-batch."),
    grad_accum: int = typer.Option(1, "--grad-accum", help="Micro-batches per optimizer step."),
    max_length: int = typer.Option(1024, "--max-length", help="Max prompt+completion tokens; longer pairs are left out."),
    bf16: Optional[bool] = typer.Option(None, "--bf16/--no-bf16", help="bf16 autocast (default: on for GPU)."),
    seed: int = typer.Option(0, "--seed", help="Seed for data order and initialisation of any randomness."),
    checkpoint_every: int = typer.Option(50, "--checkpoint-every", help="Steps between resumable checkpoints."),
    eval_every: int = typer.Option(10, "--eval-every", help="Steps between trajectory measurements."),
    device: Optional[str] = typer.Option(None, "--device", help="cpu, cuda, cuda:1 (default: cuda if available)."),
    output_dir: Optional[Path] = typer.Option(None, "--output-dir", help="Run directory (default WORKSPACE/runs/<dataset>-<loss>)."),
) -> None:
    """Train DPO/IPO/... on one dataset; one model in memory (stored reference log-probs).

    Scores the pairs first if they lack reference log-probs of this model. Resumes from the
    newest checkpoint of the run directory. Writes a Hugging Face model and the report.
    """
    from prefdata.config import resolve_model
    from prefdata.score import score_pairs
    from prefdata.store import Workspace
    from prefdata.train.config import TrainConfig
    from prefdata.train.loop import train as run_train
    from prefdata.train.losses import LossConfig

    name = _dataset_name(scenario, dataset)
    if name is None:
        raise PrefdataError("no dataset to train on", "pass --scenario N or --dataset NAME")
    ws = Workspace.open(workspace)
    if output_dir is not None and output_dir.exists() and not output_dir.is_dir():
        raise PrefdataError(f"output directory {output_dir} is a file", "give --output-dir a directory path")
    model_path = resolve_model(model)
    if lr is None:  # the tiny toy models need a far larger step than real LLMs to move visibly
        lr = 1e-4 if model.startswith("toy:") else 5e-6
    options = {"beta": beta, "beta_chosen": beta_chosen, "beta_rejected": beta_rejected,
               "label_smoothing": label_smoothing, "sft_weight": sft_weight}
    try:
        loss_cfg = LossConfig(loss, **{k: v for k, v in options.items() if v is not None})
    except ValueError as err:  # unknown loss, beta <= 0 or NaN, ...
        raise PrefdataError(f"bad loss settings: {err}", "see `prefdata train --help` for the losses and their options"
                            ) from None
    cfg = TrainConfig(dataset=name, model_path=model_path, loss=loss_cfg, lr=lr, epochs=epochs,
                      max_steps=max_steps, batch_size=batch_size, grad_accum=grad_accum, max_length=max_length,
                      bf16=bf16, seed=seed, checkpoint_every=checkpoint_every, eval_every=eval_every,
                      device=device, output_dir=str(output_dir) if output_dir else None)
    from prefdata.train.distributed import rank_zero_first

    # Under torchrun only rank 0 scores (it takes the workspace writer lock); the other
    # ranks wait at a barrier and then read the pairs it scored.
    with rank_zero_first(device) as ctx:
        if ctx.main:
            score_pairs(ws, model_path, dataset=name, device=device, progress=typer.echo)
    run_train(ws, cfg, progress=typer.echo)  # prints the per-run report at the end


@app.command()
def report(workspace: Path = typer.Argument(..., help="Workspace directory.")) -> None:
    """Lay all trained runs of a workspace side by side (the study's Table 1 form)."""
    from prefdata.store import Workspace
    from prefdata.train.report import combined_report

    typer.echo(combined_report(Workspace.open(workspace))["text"])


@app.command()
def study(
    workspace: Path = typer.Argument(Path("prefdata-study"), help="Study directory; one workspace per seed inside."),
    seeds: str = typer.Option("0", "--seeds", help="Comma-separated seeds, e.g. 0,1,2: each draws the toy problems, "
                              "sampling, selection draws, pair order and training; tables show mean ± 95% CI."),
    losses: str = typer.Option("dpo", "--losses", help="Comma-separated losses trained side by side on every "
                               "scenario: dpo, flex_dpo (separate beta for the rejected side), dpo_sft."),
    limit: int = typer.Option(256, "--limit", help="Training prompts per scenario."),
    heldout: int = typer.Option(256, "--heldout", help="Held-out test-split prompts for accuracy."),
    n: int = typer.Option(8, "--n", help="Policy samples per prompt (the study's N)."),
    m: int = typer.Option(4, "--m", help="Other-model samples per prompt."),
    backend: str = typer.Option("auto", "--backend", help="Generation backend: auto, vllm, transformers."),
    pairing: str = typer.Option("best_vs_worst", "--pairing", help="Scenario 1's pairing: best_vs_worst, "
                                "mean_minus_2std, random_correct_incorrect or all_pairs."),
    epochs: int = typer.Option(1, "--epochs",
                               help="Training epochs per run (default from the sweep in docs/study.md)."),
    lr: float = typer.Option(1e-5, "--lr", help="Peak learning rate (default from the sweep in docs/study.md)."),
    beta: float = typer.Option(0.1, "--beta", help="DPO beta (flex_dpo: the chosen side's)."),
    beta_rejected: float = typer.Option(0.05, "--beta-rejected", help="flex_dpo's beta for the rejected side."),
    sft_weight: float = typer.Option(1.0, "--sft-weight", help="dpo_sft's weight of the SFT (chosen NLL) term."),
    jobs: int = typer.Option(1, "--jobs", help="Seeds run at once in worker processes (results do not change)."),
) -> None:
    """Run the whole study on the toy world per seed: build scenarios 1-4, score, train each loss, report.

    Prints the analogues of the study's Table 1 (chosen/rejected log-probs before and after
    training) and Table 2 (held-out accuracy before and after) as mean ± 95% confidence interval
    over the seeds, and saves them as WORKSPACE/study.txt, study.json and study.png.

    Example: prefdata study --seeds 0,1,2 --losses dpo,flex_dpo,dpo_sft
    """
    from prefdata.study import StudyConfig, run_study

    def numbers(text: str, what: str, kind=int) -> tuple:
        try:
            return tuple(kind(x) for x in text.split(",") if x.strip())
        except ValueError:
            raise PrefdataError(f"--{what} {text!r} is not a comma-separated list", f"e.g. --{what} 0,1,2") from None

    cfg = StudyConfig(seeds=numbers(seeds, "seeds"), losses=numbers(losses, "losses", lambda x: x.strip()),
                      limit=limit, heldout=heldout, n=n, m=m, backend=backend, pairing=pairing, epochs=epochs,
                      lr=lr, beta=beta, beta_rejected=beta_rejected, sft_weight=sft_weight)
    if jobs < 1:
        raise PrefdataError(f"--jobs {jobs}", "use --jobs 1 or more")
    result = run_study(workspace, cfg, log=typer.echo, jobs=jobs)
    typer.echo("\n" + result["tables"])
    typer.echo(f"\n{result['seconds']:.0f} s; tables, JSON and plot in {workspace}/study.txt, .json, .png")


@app.command()
def query(
    workspace: Path = typer.Argument(..., help="Workspace directory."),
    sql: str = typer.Argument(..., help="SQL over the views prompts, candidates, judgments, pairs."),
    format: OutputFormat = typer.Option(OutputFormat.table, "--format", "-f",
                                        help="table (readable), csv, json (JSON Lines) or parquet."),
    output: Optional[Path] = typer.Option(None, "--output", "-o", help="Write to this file instead of stdout."),
) -> None:
    """Run read-only DuckDB SQL over a workspace's tables.

    Only SELECT (and EXPLAIN SELECT) runs, and DuckDB is confined to the workspace's table
    parts: other files, extensions, ATTACH, COPY and settings changes are refused (see
    docs/security.md). --output must lie outside the workspace.

    Example: prefdata query ws "SELECT scenario, count(*) FROM pairs GROUP BY 1"
    """
    from prefdata.query import output_path, run_query, write_result
    from prefdata.store import Workspace

    ws = Workspace.open(workspace)
    target = output_path(ws, output) if output is not None else None
    text = write_result(run_query(ws, sql), format.value, target)
    if text is not None:
        typer.echo(text, nl=not text.endswith("\n"))


@app.command()
def info(
    workspace: Path = typer.Argument(..., help="Workspace directory."),
    json_out: bool = typer.Option(False, "--json", help="Print JSON instead of text."),
) -> None:
    """Summarise a workspace: tables, row counts, scenarios and provenance."""
    import json

    from prefdata.info import format_info, workspace_info
    from prefdata.store import Workspace

    summary = workspace_info(Workspace.open(workspace))
    typer.echo(json.dumps(summary, indent=2, default=str) if json_out else format_info(summary))


@toy_app.command("train")
def toy_train(
    out: Path = typer.Option(..., "--out", help="Directory that gets policy/ and other/."),
    seed: int = typer.Option(0, "--seed", help="Seed: the same seed gives the same weights."),
    quiet: bool = typer.Option(False, "--quiet", "-q"),
) -> None:
    """Train the toy policy and other model from a seed (the shipped weights came from seed 0)."""
    from prefdata.toy.train import train_toy_models

    for role, path in train_toy_models(out, seed=seed, quiet=quiet).items():
        typer.echo(f"{role}: {path}")


@toy_app.command("measure")
def toy_measure(
    n: int = typer.Option(200, "--n", help="Held-out problems."),
    seed: int = typer.Option(0, "--seed", help="Sampling seed."),
    policy: Optional[Path] = typer.Option(None, "--policy", help="Policy dir (default: shipped)."),
    other: Optional[Path] = typer.Option(None, "--other", help="Other model dir (default: shipped)."),
) -> None:
    """Accuracy of both toy models and the on/off-policy log-prob gap under the policy."""
    from prefdata.toy.measure import format_report, measure

    typer.echo(format_report(measure(policy, other, n=n, seed=seed)))


@toy_app.command("data")
def toy_data(
    out: Path = typer.Option(..., "--out", help="JSONL file to write (GSM8K fields question/answer)."),
    split: str = typer.Option("train", "--split", help="train or test."),
    n: int = typer.Option(1000, "--n", help="Problems."),
    seed: int = typer.Option(0, "--seed"),
) -> None:
    """Write toy problems as GSM8K-style JSONL (usable as a --source)."""
    from prefdata.toy.task import write_split

    if split not in ("train", "test"):
        raise PrefdataError(f"unknown split {split!r}", "use --split train or --split test")
    typer.echo(str(write_split(out, split, n, seed=seed)))


def main() -> None:
    """Entry point: turns PrefdataError into one line on stderr and its exit code.

    Usage errors (unknown option, missing argument) are click's and exit with 2.
    """
    # transformers logs advisory warnings to stderr (e.g. about a config's model type) that would
    # break the one-line error contract; its errors still show. TRANSFORMERS_VERBOSITY=warning restores them.
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    try:
        app()
    except PrefdataError as err:
        if os.environ.get("PREFDATA_DEBUG"):
            raise
        typer.echo(f"error: {err}", err=True)
        sys.exit(err.exit_code)
    except KeyboardInterrupt:
        typer.echo("interrupted; re-run the same command to resume", err=True)
        sys.exit(130)


if __name__ == "__main__":
    main()
