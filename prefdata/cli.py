"""The `prefdata` command: parses options, builds a typed config, calls the library.

Heavy modules (pyarrow, polars, duckdb, torch, vllm) are imported inside the
commands so that `prefdata --help` and `prefdata --version` answer instantly. The
commands that make and train datasets are here; those that import, inspect, export and
maintain a workspace are in `prefdata.cli_data`; the app itself is in `prefdata.cli_base`.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Optional

import typer

from prefdata.cli_base import (DEFAULT_WORKSPACE, VERBOSE_HELP, _dataset_name, _library_logs, _refresh_card,
                               app, toy_app)
from prefdata.errors import PrefdataError

__all__ = ["app", "main", "toy_app"]


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
    judge: Optional[str] = typer.Option(None, "--judge", help="Judge: verifier, llm, reward_model, or imported:<column> (ratings from `prefdata import`)."),
    judge_model: Optional[str] = typer.Option(None, "--judge-model", help="Model for the llm / reward_model judge."),
    min_margin: Optional[float] = typer.Option(None, "--min-margin", help="Minimum chosen-minus-rejected score."),
    decontaminate: list[str] = typer.Option([], "--decontaminate", help="Evaluation set (repeatable; a file, folder or hub id as for --source, its test split): prompts sharing a run of select.decontaminate_n words (default 13) with one of its items are dropped as contaminated. The workspace's held-out prompts are always checked. Adds to select.decontaminate."),
    seed: Optional[int] = typer.Option(None, "--seed", help="Seed for sampling, source sampling and mixes."),
    set_: list[str] = typer.Option([], "--set", help="Override any pipeline field: --set policy.sampling.top_p=0.9"),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="Print only errors and the final summary."),
    verbose: bool = typer.Option(False, "--verbose", "-v", help=VERBOSE_HELP),
) -> None:
    """Build a preference dataset: prompts -> candidates -> judgments -> pairs.

    With no options besides --scenario it builds from the embedded toy world, offline, on CPU.
    Policy samples are generated and judged once per workspace and reused by every scenario.

    Examples: prefdata build --scenario 2;  prefdata build ws --mix 1=0.5,4=0.5;
    prefdata build gsm --scenario 1 --source ../shared/data/gsm8k --limit 100
    """
    from prefdata.build import build as run_build
    from prefdata.build import format_summary
    from prefdata.config import build_config, origin_of, parse_set_value, pipeline_raw, set_path

    raw, origin_label = pipeline_raw(scenario, mix, config)
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
    labels = {}  # dotted key -> the flag that set it, so an error names the flag
    for dotted, value in flags.items():
        if value is not None:
            set_path(raw, dotted, value)
            labels[dotted] = _flag_of(dotted)
    for item in set_:
        key, sep, value = item.partition("=")
        if not sep:
            raise PrefdataError(f"--set {item!r} is not KEY=VALUE", "e.g. --set policy.sampling.top_p=0.9")
        key = key.strip()
        set_path(raw, key, parse_set_value(key, value.strip()))
        labels[key] = "--set"
    if decontaminate:
        listed = raw.get("select", {}).get("decontaminate", [])
        set_path(raw, "select.decontaminate", [*(listed if isinstance(listed, list) else [listed]), *decontaminate])
        labels["select.decontaminate"] = "--decontaminate"
    if quiet:
        raw["quiet"] = True
    cfg = build_config(raw, origin_of(labels, origin_label))
    with _library_logs(workspace, "build", verbose, quiet):
        summary = run_build(workspace, cfg, log=(lambda _msg: None) if quiet else typer.echo)
    typer.echo(format_summary(summary))



_BUILD_FLAGS = {"source.path_or_name": "--source", "source.format": "--format", "policy.model": "--policy-model",
                "other.model": "--other-model", "policy.sampling.n": "--n", "other.sampling.n": "--m",
                "select.min_margin": "--min-margin", "judge.kind": "--judge", "judge.model": "--judge-model"}


def _flag_of(dotted: str) -> str:
    """The build option that set `dotted` (`--temperature` for policy.sampling.temperature)."""
    if dotted in _BUILD_FLAGS:
        return _BUILD_FLAGS[dotted]
    leaf = dotted.rsplit(".", 1)[-1]
    return "--" + leaf.replace("_", "-")



@app.command()
def score(
    workspace: Path = typer.Argument(..., help="Workspace directory."),
    model: str = typer.Option("toy:policy", "--model", "-m", help="Reference model directory (the policy you will train)."),
    scenario: Optional[int] = typer.Option(None, "--scenario", "-s", help="Score only this scenario's pairs."),
    dataset: Optional[str] = typer.Option(None, "--dataset", help="Score only this dataset (e.g. a mix)."),
    batch_tokens: int = typer.Option(4096, "--batch-tokens", help="Tokens per packed forward pass."),
    device: Optional[str] = typer.Option(None, "--device", help="cpu, cuda, cuda:1 (default: cuda if available)."),
    shared_prefix: bool = typer.Option(True, "--shared-prefix/--no-shared-prefix",
                                       help="Compute each pair's prompt once for both responses (one packed "
                                            "segment prompt|chosen|rejected, same log-probs); off: twice."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="Print only errors and the final summary."),
    verbose: bool = typer.Option(False, "--verbose", "-v", help=VERBOSE_HELP),
) -> None:
    """Store reference log-probs (summed and per-token) of every pair's chosen and rejected response."""
    from prefdata.config import resolve_model
    from prefdata.score import format_score_summary, score_pairs
    from prefdata.store import Workspace

    ws = Workspace.open(workspace)
    with _library_logs(workspace, "score", verbose, quiet):
        summary = score_pairs(ws, resolve_model(model), dataset=_dataset_name(scenario, dataset),
                              batch_tokens=batch_tokens, device=device, progress=None if quiet else typer.echo,
                              shared_prefix=shared_prefix)
    _refresh_card(ws)
    typer.echo(format_score_summary(summary))


@app.command()
def train(
    workspace: Path = typer.Argument(..., help="Workspace directory."),
    scenario: Optional[int] = typer.Option(None, "--scenario", "-s", help="Train on this scenario's pairs."),
    dataset: Optional[str] = typer.Option(None, "--dataset", help="Train on this dataset (e.g. a mix)."),
    model: str = typer.Option("toy:policy", "--model", "-m", help="Model to train (also the DPO reference)."),
    loss: str = typer.Option("dpo", "--loss", "--loss_type",
                             help="dpo, ipo, cdpo, flex_dpo, dpo_sft or slic (TRL's --loss_type sigmoid = dpo)."),
    beta: Optional[float] = typer.Option(None, "--beta", help="DPO beta (loss default if unset)."),
    beta_chosen: Optional[float] = typer.Option(None, "--beta-chosen", help="Flex-DPO beta of the chosen term."),
    beta_rejected: Optional[float] = typer.Option(None, "--beta-rejected", help="Flex-DPO beta of the rejected term."),
    label_smoothing: Optional[float] = typer.Option(None, "--label-smoothing", "--label_smoothing",
                                                    help="cDPO label smoothing."),
    sft_weight: Optional[float] = typer.Option(None, "--sft-weight", help="Weight of the SFT term (dpo_sft, slic)."),
    lr: Optional[float] = typer.Option(None, "--lr", "--learning_rate",
                                       help="Peak learning rate (AdamW); default 1e-4 for the toy models, else 5e-6."),
    epochs: int = typer.Option(1, "--epochs", "--num_train_epochs", help="Passes over the pairs."),
    max_steps: Optional[int] = typer.Option(None, "--max-steps", "--max_steps", help="Optimizer steps (wins over --epochs)."),
    batch_size: int = typer.Option(8, "--batch-size", "--per_device_train_batch_size", help="Pairs per micro-batch."),
    grad_accum: int = typer.Option(1, "--grad-accum", "--gradient_accumulation_steps",
                                   help="Micro-batches per optimizer step."),
    max_length: int = typer.Option(1024, "--max-length", "--max_length",
                                   help="Max prompt+completion tokens; longer pairs are left out."),
    bf16: Optional[bool] = typer.Option(None, "--bf16/--no-bf16", help="bf16 autocast (default: on for GPU)."),
    seed: int = typer.Option(0, "--seed", help="Seed for data order and initialisation of any randomness."),
    checkpoint_every: int = typer.Option(50, "--checkpoint-every", help="Steps between resumable checkpoints."),
    eval_every: int = typer.Option(10, "--eval-every", help="Steps between trajectory measurements."),
    device: Optional[str] = typer.Option(None, "--device", help="cpu, cuda, cuda:1 (default: cuda if available)."),
    output_dir: Optional[Path] = typer.Option(None, "--output-dir", "--output_dir",
                                              help="Run directory (default WORKSPACE/runs/<dataset>-<loss>)."),
    shared_prefix: bool = typer.Option(True, "--shared-prefix/--no-shared-prefix",
                                       help="Compute each pair's prompt once for both responses (one packed "
                                            "segment prompt|chosen|rejected, same log-probs); off: twice."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="Print only errors and the final report."),
    verbose: bool = typer.Option(False, "--verbose", "-v", help=VERBOSE_HELP),
) -> None:
    """Train DPO/IPO/... on one dataset; one model in memory (stored reference log-probs).

    Scores the pairs first if they lack reference log-probs of this model. Resumes from the
    newest checkpoint of the run directory. Writes a Hugging Face model and the report.
    TRL's flag names are accepted where they mean the same (--learning_rate, --num_train_epochs,
    --per_device_train_batch_size, --gradient_accumulation_steps, --loss_type sigmoid|ipo, ...).
    """
    from prefdata.config import resolve_model
    from prefdata.score import score_pairs
    from prefdata.store import Workspace
    from prefdata.train.config import TrainConfig, check_train_options
    from prefdata.train.loop import train as run_train
    from prefdata.train.loss_config import LossConfig, loss_name

    loss = loss_name(loss)
    check_train_options({"lr": lr, "beta": beta, "beta_chosen": beta_chosen, "beta_rejected": beta_rejected,
                         "label_smoothing": label_smoothing, "sft_weight": sft_weight, "epochs": epochs,
                         "max_steps": max_steps, "batch_size": batch_size, "grad_accum": grad_accum,
                         "max_length": max_length, "seed": seed, "checkpoint_every": checkpoint_every,
                         "eval_every": eval_every})
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
                      device=device, output_dir=str(output_dir) if output_dir else None,
                      shared_prefix=shared_prefix)
    from prefdata.train.distributed import rank_zero_first

    # Under torchrun only rank 0 scores (it takes the workspace writer lock); the other
    # ranks wait at a barrier and then read the pairs it scored.
    say = None if quiet else typer.echo
    with _library_logs(workspace, "train", verbose, quiet):
        with rank_zero_first(device) as ctx:
            if ctx.main:
                score_pairs(ws, model_path, dataset=name, device=device, progress=say,
                            shared_prefix=shared_prefix)
        result = run_train(ws, cfg, progress=say)  # prints the per-run report at the end
    if ctx.main:
        _refresh_card(ws)
        run_dir = cfg.run_dir(ws)
        if quiet:
            from prefdata.train.report_files import format_run

            typer.echo(format_run(result))
        typer.echo(f"model: {run_dir / 'model'}  report: {run_dir / 'report.txt'}, {run_dir / 'report.png'}")



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
    quiet: bool = typer.Option(False, "--quiet", "-q", help="Print only errors and the final tables."),
    verbose: bool = typer.Option(False, "--verbose", "-v", help=VERBOSE_HELP),
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
    with _library_logs(workspace, "study", verbose, quiet):
        result = run_study(workspace, cfg, log=(lambda _msg: None) if quiet else typer.echo, jobs=jobs)
    from prefdata.store import Workspace

    for seed in cfg.seeds:  # each seed's workspace card lists its trained runs
        _refresh_card(Workspace.open(workspace / f"seed-{seed}"))
    typer.echo("\n" + result["tables"])
    typer.echo(f"\n{result['seconds']:.0f} s; tables, JSON and plot in {workspace}/study.txt, .json, .png")


@app.command()
def iterate(
    workspace: Path = typer.Argument(..., help="Workspace directory (created if missing)."),
    rounds: int = typer.Option(3, "--rounds", help="Rounds of sample -> judge -> pair -> score -> train."),
    scenario: Optional[int] = typer.Option(None, "--scenario", "-s", help="Pipeline of scenario 1-4 (1 = on-policy)."),
    mix: Optional[str] = typer.Option(None, "--mix", help="Blend scenarios by proportion, e.g. 1=0.5,2=0.5."),
    config: Optional[Path] = typer.Option(None, "--config", "-c", help="Your own pipeline TOML (see pipelines/)."),
    prompts_per_round: int = typer.Option(64, "--prompts-per-round", help="Source prompts each round samples for."),
    reuse_prompts: bool = typer.Option(False, "--reuse-prompts", help="Every round on the same prompts (default: fresh disjoint slices)."),
    reference: str = typer.Option("base", "--reference", help="DPO reference: base (the base policy) or previous (the round's starting model)."),
    name: str = typer.Option("iter", "--name", help="Run name: datasets NAME-r1, NAME-r2, ...; folder runs/NAME."),
    loss: str = typer.Option("dpo", "--loss", help="dpo, ipo, cdpo, flex_dpo, dpo_sft or slic."),
    beta: float = typer.Option(0.1, "--beta"),
    lr: float = typer.Option(1e-4, "--lr", help="Peak learning rate."),
    epochs: int = typer.Option(2, "--epochs", help="Epochs over each round's pairs."),
    batch_size: int = typer.Option(8, "--batch-size"),
    heldout_prompts: int = typer.Option(64, "--heldout-prompts", help="Held-out prompts graded per accuracy measurement."),
    seed: int = typer.Option(0, "--seed", help="Training seed (the pipeline's seed drives sampling)."),
    device: Optional[str] = typer.Option(None, "--device", help="Scoring/training device (default: cuda if present, else cpu)."),
    set_: list[str] = typer.Option([], "--set", help="Override any pipeline field: --set policy.sampling.n=4"),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="Only the final tables."),
) -> None:
    """Iterative on-policy DPO: each round samples from the previous round's model.

    Round r: sample (round 1 from the base policy), judge, pair into dataset NAME-rR, score
    reference log-probs, train, measure held-out accuracy; the model is saved in
    WORKSPACE/runs/NAME/round-R/model. Rerunning the command resumes where it stopped.

    Example: prefdata iterate ws --scenario 1 --rounds 3 --prompts-per-round 64
    """
    from prefdata.config import parse_set_value, pipeline_raw, set_path
    from prefdata.iterate import IterateConfig, run_iterate

    raw, _ = pipeline_raw(scenario, mix, config)
    for item in set_:
        key, sep, value = item.partition("=")
        if not sep:
            raise PrefdataError(f"--set {item!r} is not KEY=VALUE", "e.g. --set policy.sampling.n=4")
        set_path(raw, key.strip(), parse_set_value(key.strip(), value.strip()))
    if quiet:
        raw["quiet"] = True
    cfg = IterateConfig(rounds=rounds, prompts_per_round=prompts_per_round, reuse_prompts=reuse_prompts,
                        reference=reference, name=name, loss=loss, beta=beta, lr=lr, epochs=epochs,
                        batch_size=batch_size, heldout_prompts=heldout_prompts, seed=seed, device=device)
    run_iterate(workspace, raw, cfg, log=(lambda _msg: None) if quiet else typer.echo)
    if quiet:
        typer.echo((workspace / "runs" / name / "rounds.txt").read_text().rstrip())



# Registered after the commands above so that `prefdata --help` lists the making and training
# commands first, then import/inspect/export/maintain, then toy.
from prefdata import cli_data  # noqa: E402,F401


def main() -> None:
    """Entry point: turns PrefdataError into one line on stderr and its exit code.

    Usage errors (unknown option, missing argument) are click's and exit with 2.
    """
    # transformers logs advisory warnings to stderr (e.g. about a config's model type) that would
    # break the one-line error contract; its errors still show. TRANSFORMERS_VERBOSITY=warning restores them.
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    from prefdata.procs import EXIT_TERMINATED, Terminated, handle_termination, stop_descendants

    handle_termination()
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
    except Terminated:
        typer.echo("terminated; re-run the same command to resume", err=True)
        stop_descendants()
        sys.stdout.flush()
        sys.stderr.flush()
        # Everything that matters is closed by now (parts are renamed into place or not at
        # all); the interpreter's own teardown after a loaded engine can take 10 s or more,
        # and whoever sent SIGTERM is waiting for us to go.
        os._exit(EXIT_TERMINATED)
    finally:
        # Engines, judge workers: whatever the command started ends with it, however it ends.
        stop_descendants()


if __name__ == "__main__":
    main()
