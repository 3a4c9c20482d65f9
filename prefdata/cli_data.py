"""The `prefdata` commands that import, inspect, export and maintain a workspace, and the
toy-world helpers. Thin: each parses its options and calls the library."""

from __future__ import annotations

from enum import Enum
from pathlib import Path
from typing import Optional

import typer

from prefdata.cli_base import OutputFormat, _refresh_card, app, toy_app
from prefdata.errors import PrefdataError


@app.command()
def export(
    workspace: Path = typer.Argument(..., help="Workspace directory."),
    out: Path = typer.Option(..., "--out", "-o", help="Output directory (one Parquet file per dataset)."),
    format: str = typer.Option("trl", "--format", help="trl (prompt/chosen/rejected for TRL's DPOTrainer) or parquet (raw pairs)."),
    dataset: Optional[str] = typer.Option(None, "--dataset", help="Export only this dataset (e.g. scenario2)."),
    conversational: Optional[bool] = typer.Option(None, "--conversational/--standard",
                                        help="TRL conversational form (chat messages: TRL applies the model's chat "
                                             "template, as generation did; default) or standard (bare prompt text, "
                                             "no template)."),
    keep_provenance: bool = typer.Option(False, "--keep-provenance", help="Keep ids, origins, scores and log-probs as extra columns."),
    implicit_prompt: bool = typer.Option(False, "--implicit-prompt", help="Implicit-prompt form: chosen/rejected are whole Human/Assistant dialogues, no prompt column."),
) -> None:
    """Export pairs for an external trainer (TRL's DPOTrainer accepts the files as they are).

    Scored pairs carry TRL's ref_chosen_logps / ref_rejected_logps columns; train on them with
    prefdata.export.stored_reference_trainer() and DPOConfig(precompute_ref_log_probs=True).
    """
    from prefdata.export import export_pairs, format_export
    from prefdata.store import Workspace

    result = export_pairs(Workspace.open(workspace), out, format=format, dataset=dataset,
                          conversational=conversational, keep_provenance=keep_provenance,
                          implicit_prompt=implicit_prompt)
    for line in format_export(result):
        typer.echo(line)


class ImportKind(str, Enum):
    candidates = "candidates"
    pairs = "pairs"


@app.command("import")
def import_(
    workspace: Path = typer.Argument(..., help="Workspace directory (created if missing)."),
    file: str = typer.Argument(..., help="JSONL, JSON, Parquet or CSV file, or a `datasets` save_to_disk folder."),
    as_: ImportKind = typer.Option(..., "--as", help="candidates: responses to judge and pair; pairs: finished pairs."),
    origin: str = typer.Option("policy", "--origin", help="Candidates: policy (the model you will train) or other."),
    model_name: Optional[str] = typer.Option(None, "--model-name", help="Candidates: model name where the file has no model column."),
    dataset: Optional[str] = typer.Option(None, "--dataset", help="Pairs: the dataset name they are stored under (required)."),
    map_: Optional[str] = typer.Option(None, "--map", help="Map fields to the file's columns: response=completion,prompt=question."),
    rating: list[str] = typer.Option([], "--rating", help="Candidates: score/label column stored as judge imported:<column> (default: auto)."),
    marker: str = typer.Option(r"\n\nAssistant:", "--marker", help="Implicit-prompt pairs: the text that ends the prompt (escapes like \\n allowed)."),
    format: str = typer.Option("auto", "--format", help="auto, jsonl, json, parquet, csv, hf."),
    split: str = typer.Option("train", "--split", help="Split of a dataset folder."),
    source_name: Optional[str] = typer.Option(None, "--source-name", help="Source name hashed into prompt ids (default: the file's stem); give a prompt source's name (e.g. gsm8k) to share its ids."),
) -> None:
    """Import pre-generated candidates or existing preference pairs into a workspace.

    Candidates get judged and paired by a following `prefdata build WS --scenario N` (no
    generation); ratings in the file become judgments of `imported:<column>`
    (`build --judge imported:<column>` pairs on them). Pairs are kept under --dataset with
    origin `imported`, ready for score, train, query and export. Bad rows are dropped with a
    counted reason; the same file imported twice adds nothing.

    Examples: prefdata import ws gens.jsonl --as candidates --origin policy --model-name my-7b;
    prefdata import ws hh.parquet --as pairs --dataset hh
    """
    from prefdata.importing import ImportSpec, format_summary, import_file, parse_map

    spec = ImportSpec(file, as_.value, format=format, split=split, mapping=parse_map(map_), origin=origin,
                      model_name=model_name, dataset=dataset, ratings=tuple(rating) or None,
                      marker=marker.replace("\\n", "\n").replace("\\t", "\t"), source_name=source_name)
    typer.echo(format_summary(import_file(workspace, spec)))



@app.command()
def report(workspace: Path = typer.Argument(..., help="Workspace directory.")) -> None:
    """Lay all trained runs of a workspace side by side (the study's Table 1 form)."""
    from prefdata.store import Workspace
    from prefdata.train.report_files import combined_report

    from prefdata.iterate import iterate_texts

    ws = Workspace.open(workspace)
    rounds = iterate_texts(workspace)
    try:
        result = combined_report(ws)
    except PrefdataError:
        if not rounds:  # no one-shot run and no iterate run: nothing to report
            raise
        result = None
    _refresh_card(ws)
    if result:
        typer.echo(result["text"])
        typer.echo("wrote " + ", ".join(str(p) for p in result["files"]))
    for text in rounds:  # iterate runs: their rounds side by side
        typer.echo("\n" + text)



@app.command()
def query(
    workspace: Path = typer.Argument(..., help="Workspace directory."),
    sql: str = typer.Argument(..., help="SQL over the views prompts, candidates, judgments, pairs."),
    format: OutputFormat = typer.Option(OutputFormat.table, "--format", "-f",
                                        help="table (readable), csv, json or jsonl (both JSON Lines) or parquet."),
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


@app.command()
def check(workspace: Path = typer.Argument(..., help="Workspace directory.")) -> None:
    """Verify a workspace: parts readable and matching the manifest's sha256 and schemas/, every pair's
    candidates and prompt present. Prints each fault; exits 2 if there is one."""
    from prefdata.check import faults, open_for_check

    found = faults(open_for_check(workspace))
    for fault in found:
        typer.echo(f"fault: {fault}")
    if found:
        raise PrefdataError(f"workspace {workspace} has {len(found)} fault(s), listed above; the first: {found[0]}",
                            "move damaged files out of the workspace and re-run the build that wrote them")
    typer.echo(f"{workspace}: ok")


@app.command()
def gc(
    workspace: Path = typer.Argument(..., help="Workspace directory."),
    dry_run: bool = typer.Option(False, "--dry-run", help="Only say what would be freed."),
) -> None:
    """Remove candidates and judgments that no stored dataset's pairs refer to (builds never do).

    Keeps all samples of each generation setting some pair was drawn from, their verdicts, all prompts and pairs.
    """
    from prefdata.gc import collect
    from prefdata.store import Workspace

    typer.echo(collect(Workspace.open(workspace), dry_run=dry_run).text(workspace))



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


