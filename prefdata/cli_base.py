"""The `prefdata` Typer app and what its command modules share (options, helpers).

`prefdata.cli` holds the commands that make and train datasets and the entry point;
`prefdata.cli_data` the ones that import, inspect, export and maintain a workspace. Both
register on `app` here, so neither imports the other.
"""

from __future__ import annotations

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
VERBOSE_HELP = "Also show the model libraries' logging (vLLM, Ray, transformers, Triton); else it goes to WORKSPACE/logs/."


class OutputFormat(str, Enum):
    table = "table"
    csv = "csv"
    json = "json"
    jsonl = "jsonl"
    parquet = "parquet"


def _version(value: bool) -> None:
    if value:
        typer.echo(f"prefdata {__version__}")
        raise typer.Exit()


@app.callback()
def _root(version: bool = typer.Option(False, "--version", callback=_version, is_eager=True,
                                       help="Print the version and exit.")) -> None:
    pass



def _library_logs(workspace: Path, command: str, verbose: bool, quiet: bool = False):
    from prefdata.logs import workspace_logs

    return workspace_logs(workspace, command, verbose=verbose, say=None if quiet else typer.echo)


def _refresh_card(ws) -> None:
    from prefdata.card import refresh_card

    refresh_card(ws)



def _dataset_name(scenario: Optional[int], dataset: Optional[str]) -> Optional[str]:
    if scenario is not None and dataset is not None:
        raise PrefdataError("give --scenario or --dataset, not both", "e.g. --scenario 2 or --dataset mix-1x0.5-4x0.5")
    if scenario is not None:
        if scenario not in (1, 2, 3, 4):
            raise PrefdataError(f"unknown scenario {scenario}", "use --scenario 1, 2, 3 or 4")
        return f"scenario{scenario}"
    return dataset


