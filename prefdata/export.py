"""`prefdata export`: a workspace's pairs as files an external trainer reads as they are.

Two formats, one Parquet file per dataset (`OUT/<dataset>.parquet`), each written
atomically (temp file, fsync, rename), so a reader never sees half a file:

* ``trl``: the columns TRL's `DPOTrainer` expects, ``prompt``, ``chosen``,
  ``rejected``. In the *standard* form they are strings; in the *conversational*
  form ``prompt`` is the chat (the pair's ``messages``, or its prompt text as one
  user turn) and ``chosen``/``rejected`` are one assistant turn each, so TRL
  renders them through the tokenizer's chat template, as generation did.
  `keep_provenance` adds ids, origins, scores and reference log-probs as extra
  columns (TRL drops columns it does not use).
  In the *implicit-prompt* form (`implicit_prompt`) there is no prompt column:
  ``chosen`` and ``rejected`` are whole Human/Assistant dialogues sharing the
  prompt as a prefix ("\\n\\nHuman: <turn>\\n\\nAssistant: <response>", as in
  Anthropic's HH-RLHF; the form has no system role, so a system turn is written
  as a Human turn); a prompt that already ends with the assistant marker (an
  imported implicit-prompt pair) is written as it is.
* ``parquet``: the raw pairs rows, every column of ``schemas/pairs.json``.

>>> export_pairs("ws", "trl-data", conversational=True)   # doctest: +SKIP
{'scenario2': {'path': 'trl-data/scenario2.parquet', 'rows': 181, 'format': 'trl', 'form': 'conversational', ...}}
>>> import datasets                                        # doctest: +SKIP
>>> datasets.load_dataset("parquet", data_files="trl-data/scenario2.parquet")["train"]  # doctest: +SKIP
"""

from __future__ import annotations

from pathlib import Path

from prefdata.errors import PrefdataError

FORMATS = ("trl", "parquet")

# Extra columns kept with --keep-provenance. Deliberately absent:
# * `messages`: TRL's `is_conversational` inspects whichever of prompt/chosen/rejected/messages
#   it pops first from a set, so a `messages` column beside string prompts (or a null one
#   beside chat prompts) makes TRL's choice of form depend on set order;
# * TRL's own names `ref_chosen_logps`/`ref_rejected_logps`: TRL's collator picks them up, and
#   ours are measured on our tokenisation (no EOS added, our template), not on TRL's.
PROVENANCE = (
    "pair_id", "prompt_id", "dataset", "scenario", "kind",
    "chosen_candidate_id", "rejected_candidate_id", "chosen_origin", "rejected_origin",
    "chosen_score", "rejected_score", "margin", "judge_name", "strategy",
    "ref_chosen_logp", "ref_rejected_logp", "ref_chosen_logp_mean", "ref_rejected_logp_mean",
    "chosen_tokens", "rejected_tokens", "ref_model_hash",
)


HUMAN, ASSISTANT = "\n\nHuman:", "\n\nAssistant:"  # the implicit-prompt form's turn markers


def export_pairs(ws, out_dir, format: str = "trl", dataset: str | None = None,
                 conversational: bool | None = None, keep_provenance: bool = False,
                 implicit_prompt: bool = False) -> dict:
    """Write `out_dir/<dataset>.parquet` for each dataset (or the one named); returns, per
    dataset, ``{"path", "rows", "format", "form", "columns"}``.

    `ws` is a `Workspace` or its path. `conversational=None` picks the form from the data:
    conversational when any exported pair carries chat `messages`, standard otherwise.
    Standard prompts are the raw prompt text: pass `conversational=True` to have TRL apply
    the model's chat template (the way the candidates were generated).
    """
    from prefdata.store import Workspace

    if format not in FORMATS:
        raise PrefdataError(f"unknown export format {format!r}", f"use one of: {', '.join(FORMATS)}")
    if format == "parquet" and (conversational or implicit_prompt):
        raise PrefdataError("--conversational and --implicit-prompt apply to --format trl only",
                            "drop them, or use --format trl")
    if conversational and implicit_prompt:
        raise PrefdataError("--conversational and --implicit-prompt are two different forms",
                            "pick one of them")
    if not isinstance(ws, Workspace):
        ws = Workspace.open(ws)
    out = Path(out_dir)
    if ws.contains(out):  # a dataset named part-x would land in pairs/ as a part; export never writes the workspace
        raise PrefdataError(f"output directory {out} is inside the workspace {ws.root}",
                            "give --out a directory outside the workspace")
    if out.exists() and not out.is_dir():
        raise PrefdataError(f"output path {out} is a file, not a directory",
                            "give --out a directory (it is created if missing)")

    pairs = ws.read_polars("pairs")
    if pairs.height == 0:
        raise PrefdataError(f"workspace {ws.root} has no pairs",
                            f"build some first: prefdata build {ws.root} --scenario 2")
    known = sorted(pairs.get_column("dataset").unique().to_list())
    if dataset is not None and dataset not in known:
        raise PrefdataError(f"unknown dataset {dataset!r} in workspace {ws.root}",
                            f"known datasets: {', '.join(known)}")
    names = [dataset] if dataset is not None else known
    for name in names:
        _check_file_name(name)
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise PrefdataError(f"cannot create output directory {out}: {err.strerror}",
                            "choose a writable --out path") from None

    import polars as pl

    result = {}
    for name in names:
        rows = pairs.filter(pl.col("dataset") == name)
        if format == "parquet":
            table, form = _raw_table(rows), "raw"
        elif implicit_prompt:
            table, form = _implicit_table(rows, keep_provenance), "implicit"
        else:
            chat = conversational if conversational is not None else _has_messages(rows)
            table = _trl_table(rows, chat, keep_provenance)
            form = "conversational" if chat else "standard"
        path = out / f"{name}.parquet"
        _write(path, table)
        result[name] = {"path": str(path), "rows": table.num_rows, "format": format, "form": form,
                        "columns": table.column_names}
    return result


def _check_file_name(name: str) -> None:
    # Dataset names come from pipeline files; one with a path separator would write outside OUT.
    if not name or "/" in name or "\\" in name or name.startswith("."):
        raise PrefdataError(f"dataset name {name!r} cannot be used as a file name",
                            "rebuild it under a plain name (name = \"...\" in the pipeline)")


def _has_messages(rows) -> bool:
    import polars as pl

    return bool(rows.select((pl.col("messages").list.len().fill_null(0) > 0).any()).item())


def _raw_table(rows):
    from prefdata.schemas import conform

    return conform("pairs", rows.to_arrow())


def _trl_table(rows, conversational: bool, keep_provenance: bool):
    """prompt/chosen/rejected (+ provenance) as an Arrow table with an explicit schema."""
    import polars as pl
    import pyarrow as pa

    from prefdata.schemas import schema

    message = pa.struct([pa.field("role", pa.string()), pa.field("content", pa.string())])
    if conversational:
        def turn(role: str, column: str) -> pl.Expr:
            return pl.concat_list(pl.struct(pl.lit(role).alias("role"), pl.col(column).alias("content")))

        has_chat = pl.col("messages").list.len().fill_null(0) > 0
        frame = rows.select(
            pl.when(has_chat).then(pl.col("messages")).otherwise(turn("user", "prompt")).alias("prompt"),
            turn("assistant", "chosen").alias("chosen"),
            turn("assistant", "rejected").alias("rejected"),
            *(pl.col(c) for c in PROVENANCE if keep_provenance),
        )
        text_type = pa.list_(message)
    else:
        frame = rows.select("prompt", "chosen", "rejected", *(c for c in PROVENANCE if keep_provenance))
        text_type = pa.string()
    pairs_schema = schema("pairs")
    fields = [pa.field(c, text_type, nullable=False) for c in ("prompt", "chosen", "rejected")]
    if keep_provenance:
        fields += [pairs_schema.field(c) for c in PROVENANCE]
    target = pa.schema(fields)
    # Polars hands out large_string / large_list; cast to the declared (plain) types.
    return frame.to_arrow().select(target.names).cast(target)


def _implicit_table(rows, keep_provenance: bool):
    """chosen/rejected as whole dialogues: the prompt (its chat turns when it has them) framed
    by the Human/Assistant markers, then one space and the response."""
    import polars as pl
    import pyarrow as pa

    from prefdata.schemas import schema

    el = pl.element().struct
    turns = pl.col("messages").list.eval(pl.concat_str(
        pl.when(el.field("role") == "assistant").then(pl.lit(ASSISTANT)).otherwise(pl.lit(HUMAN)),
        pl.lit(" "), el.field("content").fill_null(""))).list.join("")
    framed = (pl.when(pl.col("prompt").str.ends_with(ASSISTANT)).then(pl.col("prompt"))
              .when(pl.col("messages").list.len().fill_null(0) > 0).then(turns + pl.lit(ASSISTANT))
              .otherwise(pl.lit(HUMAN + " ") + pl.col("prompt") + pl.lit(ASSISTANT)))
    frame = rows.select((framed + " " + pl.col("chosen")).alias("chosen"),
                        (framed + " " + pl.col("rejected")).alias("rejected"),
                        *(pl.col(c) for c in PROVENANCE if keep_provenance))
    fields = [pa.field(c, pa.string(), nullable=False) for c in ("chosen", "rejected")]
    if keep_provenance:
        fields += [schema("pairs").field(c) for c in PROVENANCE]
    target = pa.schema(fields)
    return frame.to_arrow().select(target.names).cast(target)


def _write(path: Path, table) -> None:
    from prefdata.store import atomic_write_parquet

    try:
        atomic_write_parquet(path, table)
    except IsADirectoryError:
        raise PrefdataError(f"{path} is a directory", "remove it or choose another --out") from None
