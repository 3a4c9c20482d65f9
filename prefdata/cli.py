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
