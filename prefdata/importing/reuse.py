"""What `prefdata build` takes from imports: their prompts, their candidates, their ratings.

A build finds imported candidates (backend ``imported``) of the origins its
scenario needs among its prompts and uses them instead of generating: no model
is loaded and no generation backend is made for an origin that has them. A build
that names no source (the toy default) in a workspace holding imported
candidates builds on the prompts of those candidates.
"""

from __future__ import annotations

import polars as pl
import pyarrow as pa
import pyarrow.parquet as pq

from prefdata.errors import PrefdataError

BACKEND = "imported"
JUDGE_PREFIX = "imported:"
JUDGE_VERSION = "imported"


def _imported(ws, columns: list[str]) -> pl.DataFrame:
    """Imported candidates' `columns`, read part by part (the texts are not read)."""
    frames = []
    for path in ws.parts("candidates"):
        part = pl.from_arrow(pq.read_table(path, columns=sorted({"backend", *columns})))
        frames.append(part.filter(pl.col("backend") == BACKEND).select(columns))
    return pl.concat(frames) if frames else pl.DataFrame(schema={c: pl.String for c in columns})


def imported_prompts(ws) -> pa.Table | None:
    """The workspace's prompts that imported candidates answer (None when there are none)."""
    ids = _imported(ws, ["prompt_id"]).unique()
    if ids.height == 0:
        return None
    prompts = ws.read_polars("prompts").join(ids, on="prompt_id", how="semi").sort("source", "source_index")
    return prompts.to_arrow()


def imported_origins(workspace) -> set[str]:
    """Origins that imported candidates stand in for, in the workspace at `workspace` (a path;
    nothing when it is not a workspace yet): a build needs no model for those."""
    from pathlib import Path

    from prefdata.store import MANIFEST, Workspace

    if not (Path(workspace) / MANIFEST).is_file():
        return set()
    return set(_imported(Workspace.open(workspace), ["origin"])["origin"].unique().to_list())


def imported_work_keys(ws, prompt_ids: pa.Array | pa.ChunkedArray, origin: str) -> tuple[set[str], int]:
    """Work keys and the number of imported candidates of `origin` among `prompt_ids`."""
    rows = _imported(ws, ["prompt_id", "origin", "work_key"]).filter(
        (pl.col("origin") == origin) & pl.col("prompt_id").is_in(pl.from_arrow(prompt_ids).implode()))
    return set(rows["work_key"].to_list()), rows.height


def imported_verdicts(ws, judge_name: str) -> pl.DataFrame:
    """The ratings stored as judge `judge_name` (``imported:<column>``)."""
    judgments = ws.read_polars("judgments", ["candidate_id", "judge_name", "score", "correct", "status"])
    found = judgments.filter(pl.col("judge_name") == judge_name)
    if found.height == 0:
        known = sorted(n for n in judgments["judge_name"].unique().to_list() if n.startswith(JUDGE_PREFIX))
        raise PrefdataError(f"the workspace has no ratings of judge {judge_name!r}",
                            f"imported ratings: {', '.join(known) or 'none'}; import a file with that "
                            "rating column (--rating COLUMN), or use --judge verifier|llm|reward_model")
    return found.unique("candidate_id", keep="first").select("candidate_id", "score", "correct", "status")
