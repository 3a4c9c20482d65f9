"""`prefdata export`: a workspace's pairs as files an external trainer reads as they are.

Two formats, one Parquet file per dataset (`OUT/<dataset>.parquet`), each written
atomically (temp file, fsync, rename), so a reader never sees half a file:

* ``trl`` (default): the columns TRL's `DPOTrainer` expects, ``prompt``, ``chosen``,
  ``rejected``. By default in the *conversational* form: ``prompt`` is the chat
  (the pair's ``messages``, or its prompt text as one user turn) and
  ``chosen``/``rejected`` are one assistant turn each, so TRL renders them through
  the tokenizer's chat template, as generation and scoring did. The *standard*
  form (``conversational=False``) holds bare strings: TRL then trains without the
  template. When every pair of a dataset is scored, the reference log-probs go in
  TRL's own columns ``ref_chosen_logps`` / ``ref_rejected_logps`` (summed over the
  response and its EOS, which is what TRL sums when the template closes an
  assistant turn with EOS, as the toy models' does); `stored_reference_trainer`
  makes TRL train on them instead of running its own reference pass.
  `keep_provenance` adds ids, origins, scores and per-token log-probs as extra
  columns (TRL drops columns it does not use).
  In the *implicit-prompt* form (`implicit_prompt`) there is no prompt column:
  ``chosen`` and ``rejected`` are whole Human/Assistant dialogues sharing the
  prompt as a prefix ("\\n\\nHuman: <turn>\\n\\nAssistant: <response>", as in
  Anthropic's HH-RLHF; the form has no system role, so a system turn is written
  as a Human turn); a prompt that already ends with the assistant marker (an
  imported implicit-prompt pair) is written as it is.
* ``parquet``: the raw pairs rows, every column of ``schemas/pairs.json``.

>>> export_pairs("ws", "trl-data")                              # doctest: +SKIP
{'scenario2': {'path': 'trl-data/scenario2.parquet', 'rows': 181, 'format': 'trl', 'form': 'conversational', ...}}
>>> import datasets                                        # doctest: +SKIP
>>> datasets.load_dataset("parquet", data_files="trl-data/scenario2.parquet")["train"]  # doctest: +SKIP
"""

from __future__ import annotations

from pathlib import Path

from prefdata.errors import PrefdataError

FORMATS = ("trl", "parquet")

# Extra columns kept with --keep-provenance. Deliberately absent: `messages`: TRL's
# `is_conversational` inspects whichever of prompt/chosen/rejected/messages it pops first
# from a set, so a `messages` column beside string prompts (or a null one beside chat
# prompts) makes TRL's choice of form depend on set order.
PROVENANCE = (
    "pair_id", "prompt_id", "dataset", "scenario", "kind",
    "chosen_candidate_id", "rejected_candidate_id", "chosen_origin", "rejected_origin",
    "chosen_score", "rejected_score", "margin", "judge_name", "strategy",
    "ref_chosen_logp_mean", "ref_rejected_logp_mean", "chosen_tokens", "rejected_tokens", "ref_model_hash",
)
# TRL's names for precomputed reference log-probs (its collator passes them to the loss)
TRL_REF = {"ref_chosen_logp": "ref_chosen_logps", "ref_rejected_logp": "ref_rejected_logps"}


HUMAN, ASSISTANT = "\n\nHuman:", "\n\nAssistant:"  # the implicit-prompt form's turn markers


def export_pairs(ws, out_dir, format: str = "trl", dataset: str | None = None,
                 conversational: bool | None = None, keep_provenance: bool = False,
                 implicit_prompt: bool = False) -> dict:
    """Write `out_dir/<dataset>.parquet` for each dataset (or the one named); returns, per
    dataset, ``{"path", "rows", "format", "form", "columns", "reference_logps"}``.

    `ws` is a `Workspace` or its path. `conversational=True` (default) keeps the chat
    template: TRL applies the model's template, the way the candidates were generated and
    scored. `conversational=False` writes bare prompt text (no template).
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
    if conversational is None:  # TRL's conversational form keeps the chat template: the default
        conversational = not implicit_prompt
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
        reference = False
        if format == "parquet":
            table, form = _raw_table(rows), "raw"
        elif implicit_prompt:
            table, form = _implicit_table(rows, keep_provenance), "implicit"
        else:
            # TRL needs a value in every row, from one reference model
            reference = (rows["ref_chosen_logp"].null_count() == 0 and rows["ref_rejected_logp"].null_count() == 0
                         and rows["ref_model_hash"].n_unique() == 1)
            table = _trl_table(rows, conversational, keep_provenance, reference)
            form = "conversational" if conversational else "standard"
        path = out / f"{name}.parquet"
        _write(path, table)
        result[name] = {"path": str(path), "rows": table.num_rows, "format": format, "form": form,
                        "columns": table.column_names, "reference_logps": reference}
    return result


def format_export(result: dict) -> list[str]:
    """One readable line per written file."""
    lines = []
    for name, r in result.items():
        extra = ""
        if r["format"] == "trl":
            extra = (", reference log-probs in ref_chosen_logps/ref_rejected_logps" if r["reference_logps"]
                     else ", no reference log-probs (run `prefdata score` to add them)")
        lines.append(f"{name}: {r['rows']} pairs -> {r['path']} ({r['format']}, {r['form']}{extra})")
    return lines


def stored_reference_trainer():
    """TRL's `DPOTrainer`, trained on the exported ``ref_*_logps`` instead of its own reference pass.

    Use with ``DPOConfig(precompute_ref_log_probs=True)``: TRL then takes the reference
    log-probs from each batch; stock TRL would first compute them itself over the whole
    dataset. Datasets without the columns are precomputed by TRL as usual.

    >>> Trainer = stored_reference_trainer()                                     # doctest: +SKIP
    >>> Trainer(model=m, args=DPOConfig(precompute_ref_log_probs=True, ...), train_dataset=ds, ...)  # doctest: +SKIP
    """
    from trl import DPOTrainer

    class StoredReferenceDPOTrainer(DPOTrainer):
        def _precompute_ref_logps(self, dataset, name, batch_size):
            if set(TRL_REF.values()) <= set(dataset.column_names):
                return dataset
            return super()._precompute_ref_logps(dataset, name, batch_size)

    return StoredReferenceDPOTrainer


def _check_file_name(name: str) -> None:
    # Dataset names come from pipeline files; one with a path separator would write outside OUT.
    if not name or "/" in name or "\\" in name or name.startswith("."):
        raise PrefdataError(f"dataset name {name!r} cannot be used as a file name",
                            "rebuild it under a plain name (name = \"...\" in the pipeline)")


def _raw_table(rows):
    from prefdata.schemas import conform

    return conform("pairs", rows.to_arrow())


def _trl_table(rows, conversational: bool, keep_provenance: bool, reference: bool):
    """prompt/chosen/rejected (+ TRL's reference columns, + provenance) as an Arrow table with an
    explicit schema."""
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
            *(pl.col(ours).alias(theirs) for ours, theirs in TRL_REF.items() if reference),
            *(pl.col(c) for c in PROVENANCE if keep_provenance),
        )
        text_type = pa.list_(message)
    else:
        frame = rows.select("prompt", "chosen", "rejected",
                            *(pl.col(ours).alias(theirs) for ours, theirs in TRL_REF.items() if reference),
                            *(c for c in PROVENANCE if keep_provenance))
        text_type = pa.string()
    pairs_schema = schema("pairs")
    fields = [pa.field(c, text_type, nullable=False) for c in ("prompt", "chosen", "rejected")]
    if reference:
        fields += [pa.field(theirs, pa.float64(), nullable=False) for theirs in TRL_REF.values()]
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
