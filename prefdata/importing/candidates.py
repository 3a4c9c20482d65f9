"""`--as candidates`: pre-generated responses -> prompts, candidates and judgments.

Two row layouts:

* flat: one response per row (`prompt` or a chat message list, `response`,
  optional `model`, `reference_answer`, `reference_solution`, `finish_reason`
  and score/label columns);
* multi-completion (UltraFeedback style): one prompt per row and a list of
  completions, each a struct with the text, a model name and ratings
  (e.g. `overall_score`), or a plain list of texts. Each completion becomes
  one candidate.

A candidate keeps the first rating it was imported with (judgments are keyed
by candidate, judge and version).

A rating column becomes judgments of the judge ``imported:<column>`` (score as
given; a boolean label scores 1/0 and also sets ``correct``), so `build --judge
imported:<column>` pairs on it directly. Candidate ids are content keys
(origin, model, prompt, text), so re-importing a row, from this file or
another, adds nothing.

Drop reasons (counted, first that applies): ``non_string_content``,
``missing_prompt``, ``missing_response``, ``duplicate`` (same candidate id as an
earlier row of the file).
"""

from __future__ import annotations

import json

import polars as pl

from prefdata.errors import PrefdataError
from prefdata.importing.prompts import duckdb_query, prompt_fields, prompts_table, sha16_sql, with_prompt_ids
from prefdata.importing.read import NONSTRING, ImportFile, columns_text, find_column, is_text
from prefdata.importing.spec import ImportSpec
from prefdata.sources.mapping import MESSAGES_COLUMNS, PROMPT_COLUMNS

RESPONSE_NAMES = ("response", "completion", "output", "generation", "text")
COMPLETIONS_NAMES = ("completions", "responses", "generations", "candidates", "outputs")
MODEL_NAMES = ("model", "model_name", "generator")
SOLUTION_NAMES = ("reference_solution", "solution", "reference")
ANSWER_NAMES = ("reference_answer", "final_answer", "gold_answer", "answer")
RATING_NAMES = ("score", "rating", "reward", "label", "correct", "is_correct", "overall_score")
TEXT_FIELDS = ("response", "text", "completion", "output", "content")


def _numeric(dtype) -> bool:
    return dtype.is_numeric() or dtype == pl.Boolean


def _prompt_columns(frame: pl.DataFrame, spec: ImportSpec) -> tuple[str | None, str | None]:
    messages = find_column(frame, "messages", spec.mapping, MESSAGES_COLUMNS)
    prompt = find_column(frame, "prompt", spec.mapping, PROMPT_COLUMNS)
    if messages is None and prompt is not None and isinstance(frame.schema[prompt], pl.List):
        messages, prompt = prompt, None  # TRL conversational: the chat sits in "prompt"
    if messages is not None and not isinstance(frame.schema[messages], pl.List):
        messages = None if "messages" not in spec.mapping else messages
    return prompt, messages


def unmappable(what: str, imp: ImportFile, hint: str) -> PrefdataError:
    return PrefdataError(f"cannot map the columns of {imp.origin} for {what}: found {columns_text(imp.frame)}",
                         hint)


def rows_of(imp: ImportFile, spec: ImportSpec) -> tuple[pl.DataFrame, list[str], str]:
    """One row per response: _row, prompt fields, text, _text_bad, model_name, references,
    finish_reason and rating columns ``r:<name>``; returns (rows, rating names, layout)."""
    frame = imp.frame.with_row_index("_row")
    prompt_col, messages_col = _prompt_columns(frame, spec)
    response_col = find_column(frame, "response", spec.mapping, RESPONSE_NAMES)
    completions_col = find_column(frame, "completions", spec.mapping, COMPLETIONS_NAMES)
    if completions_col is not None and not isinstance(frame.schema[completions_col], pl.List):
        completions_col = None
    if response_col is not None and isinstance(frame.schema[response_col], pl.List) and completions_col is None:
        response_col, completions_col = None, response_col
    if (prompt_col is None and messages_col is None) or (response_col is None and completions_col is None):
        raise unmappable("--as candidates", imp, "map a prompt and a response (or completions) column, "
                         "e.g. --map prompt=question,response=completion")
    head = prompt_fields(frame, prompt_col, messages_col, imp.origin)
    model_col = find_column(frame, "model", spec.mapping, MODEL_NAMES)
    refs = {field: find_column(frame, field, spec.mapping, names)
            for field, names in (("reference_solution", SOLUTION_NAMES), ("reference_answer", ANSWER_NAMES),
                                 ("finish_reason", ("finish_reason",)))}
    refs = {k: (c if c not in (response_col, completions_col, prompt_col) else None) for k, c in refs.items()}
    extra = frame.with_columns(
        *[(pl.col(c).cast(pl.String) if c and _castable(frame.schema[c]) else pl.lit(None, pl.String)).alias(k)
          for k, c in refs.items()],
        (pl.col(model_col).cast(pl.String) if model_col and _castable(frame.schema[model_col])
         else pl.lit(None, pl.String)).alias("_file_model")).select(*refs, "_file_model")
    base = pl.concat([frame.select("_row", NONSTRING), head, extra], how="horizontal")
    if response_col is not None:
        ratings = _rating_columns(frame, spec, exclude={response_col, prompt_col, model_col, *refs.values()})
        rows = base.with_columns(
            text=frame[response_col].cast(pl.String) if is_text(frame, response_col) else pl.lit(None, pl.String),
            _text_bad=pl.lit(not is_text(frame, response_col)),
            **{f"r:{r}": frame[r].cast(pl.Float64) if frame.schema[r] != pl.Boolean else frame[r] for r in ratings})
        return rows, ratings, "flat"
    return _explode(frame, base, completions_col, spec)


def _castable(dtype) -> bool:
    return dtype == pl.String or dtype.is_numeric() or dtype == pl.Null


def _rating_columns(frame: pl.DataFrame, spec: ImportSpec, exclude: set) -> list[str]:
    if spec.ratings is not None:
        for r in spec.ratings:
            if r not in frame.columns or not _numeric(frame.schema[r]):
                raise PrefdataError(f"--rating {r}: no numeric or boolean column {r!r} in the file",
                                    f"the columns are: {columns_text(frame.drop('_row'))}")
        return list(spec.ratings)
    return [c for c in frame.columns if c.lower() in RATING_NAMES and c not in exclude and _numeric(frame.schema[c])]


def _explode(frame: pl.DataFrame, base: pl.DataFrame, col: str, spec: ImportSpec):
    inner = frame.schema[col].inner
    exploded = base.with_columns(frame[col].alias("_c")).explode("_c")
    if inner == pl.String:
        return exploded.with_columns(text=pl.col("_c"), _text_bad=pl.lit(False)).drop("_c"), [], "multi"
    if not isinstance(inner, pl.Struct):
        raise PrefdataError(f"column {col!r} holds lists of {inner}, not of texts or of completion records",
                            "each completion must be a text or an object with a response text")
    fields = {f.name: f.dtype for f in inner.fields}
    text_field = next((f for f in TEXT_FIELDS if f in fields), None)
    if text_field is None:
        raise PrefdataError(f"the completions in column {col!r} have no text field (found {', '.join(fields)})",
                            f"each completion needs one of: {', '.join(TEXT_FIELDS)}")
    model_field = next((f for f in MODEL_NAMES if f in fields), None)
    if spec.ratings is not None:
        missing = [r for r in spec.ratings if r not in fields or not _numeric(fields[r])]
        if missing:
            raise PrefdataError(f"--rating {missing[0]}: the completions have no numeric field {missing[0]!r}",
                                f"their fields are: {', '.join(fields)}")
        ratings = list(spec.ratings)
    else:
        ratings = [f for f, t in fields.items() if _numeric(t) and f != model_field]
    c = pl.col("_c").struct
    text_ok = fields[text_field] in (pl.String, pl.Null)
    rows = exploded.with_columns(
        text=c.field(text_field) if text_ok else pl.lit(None, pl.String),
        _text_bad=pl.lit(not text_ok) & pl.col("_c").is_not_null(),
        _file_model=(c.field(model_field).cast(pl.String) if model_field else pl.col("_file_model")),
        **{f"r:{r}": (c.field(r).cast(pl.Float64) if fields[r] != pl.Boolean else c.field(r)) for r in ratings},
    ).drop("_c")
    return rows, ratings, "multi"


def import_candidates(imp: ImportFile, spec: ImportSpec) -> dict:
    """The tables to add (prompts, candidates, judgments as polars frames) and the counts."""
    rows, ratings, layout = rows_of(imp, spec)
    rows = with_prompt_ids(rows, imp.name)
    model = pl.col("_file_model").fill_null(pl.lit(spec.model_name or imp.name))
    rows = rows.with_columns(model_name=model, origin=pl.lit(spec.origin))
    ids = duckdb_query(rows.select("origin", "model_name", "prompt_id", "text", _k=pl.lit("import")), (
        f"SELECT work_key, {sha16_sql('work_key', 'text')} AS candidate_id FROM "
        f"(SELECT {sha16_sql('_k', 'origin', 'model_name', 'prompt_id')} AS work_key, text FROM t)"))
    rows = pl.concat([rows, ids.select(pl.all().cast(pl.String))], how="horizontal")
    blank = ~pl.col("text").fill_null("").str.contains(r"\S")
    wrong_type = pl.col(NONSTRING) | pl.col("_prompt_bad") | pl.col("_text_bad")
    reason = (pl.when(wrong_type).then(pl.lit("non_string_content"))
              .when(pl.col("prompt").is_null() | ~pl.col("prompt").fill_null("").str.contains(r"\S"))
              .then(pl.lit("missing_prompt"))
              .when(blank).then(pl.lit("missing_response"))
              .when(~pl.col("candidate_id").is_first_distinct()).then(pl.lit("duplicate")))
    rows = rows.with_columns(drop_reason=reason)
    dropped = {k: v for k, v in rows.filter(pl.col("drop_reason").is_not_null())["drop_reason"].value_counts()
               .iter_rows()}
    kept = rows.filter(pl.col("drop_reason").is_null())
    kept = kept.with_columns(sample_index=pl.int_range(pl.len()).over("work_key").cast(pl.Int32))
    provenance = json.dumps({"imported_from": imp.name, "sha256": imp.sha256})
    candidates = kept.select(
        "candidate_id", "prompt_id", "origin", "model_name",
        pl.lit(imp.sha256[:16]).alias("model_hash"), pl.lit("imported").alias("backend"),
        pl.lit(provenance).alias("sampling_params"), pl.lit(0, pl.Int64).alias("seed"), "sample_index",
        "work_key", pl.col("text"),
        pl.col("text").str.count_matches(r"\S+").cast(pl.Int32).alias("token_count"),
        pl.col("finish_reason").fill_null("imported"))
    judgments = [_judgments(kept, r) for r in ratings]
    return {"layout": layout, "rows_read": imp.frame.height, "responses": rows.height, "dropped": dropped,
            "ratings": [f"imported:{r}" for r in ratings],
            "prompts": prompts_table(kept, imp.name, spec.split), "candidates": candidates,
            "judgments": pl.concat(judgments) if judgments else None}


def _judgments(kept: pl.DataFrame, rating: str) -> pl.DataFrame:
    column = pl.col(f"r:{rating}")
    is_bool = kept.schema[f"r:{rating}"] == pl.Boolean
    rated = kept.filter(column.is_not_null() & (column.cast(pl.Float64).is_finite() if not is_bool else True))
    return rated.select(
        "candidate_id", "prompt_id", pl.lit(f"imported:{rating}").alias("judge_name"),
        pl.lit("imported").alias("judge_version"), column.cast(pl.Float64).alias("score"),
        (column if is_bool else pl.lit(None, pl.Boolean)).alias("correct"), pl.lit("ok").alias("status"),
        column.cast(pl.String).alias("raw_output"))
