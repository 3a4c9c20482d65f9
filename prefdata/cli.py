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
def query(
    workspace: Path = typer.Argument(..., help="Workspace directory."),
    sql: str = typer.Argument(..., help="SQL over the views prompts, candidates, judgments, pairs."),
    format: OutputFormat = typer.Option(OutputFormat.table, "--format", "-f",
                                        help="table (readable), csv, json (JSON Lines) or parquet."),
    output: Optional[Path] = typer.Option(None, "--output", "-o", help="Write to this file instead of stdout."),
) -> None:
    """Run read-only DuckDB SQL over a workspace's tables.

    Example: prefdata query ws "SELECT scenario, count(*) FROM pairs GROUP BY 1"
    """
    from prefdata.query import run_query, write_result
    from prefdata.store import Workspace

    _check_output_path(output)
    result = run_query(Workspace.open(workspace), sql)
    text = write_result(result, format.value, output)
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
    backend: Optional[str] = typer.Option(None, "--backend", help="Generation backend: auto, vllm, transformers, openai."),
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
        "policy.backend": backend, "other.backend": backend, "policy.sampling.n": n, "other.sampling.n": m,
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


def _check_output_path(output: Optional[Path]) -> None:
    if output is not None and output.is_dir():
        raise PrefdataError(f"output path {output} is a directory", "give a file path to --output")
    if output is not None and not output.parent.exists():
        raise PrefdataError(f"directory {output.parent} does not exist", "create it or choose another --output")


def main() -> None:
    """Entry point: turns PrefdataError into one line on stderr and its exit code.

    Usage errors (unknown option, missing argument) are click's and exit with 2.
    """
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
