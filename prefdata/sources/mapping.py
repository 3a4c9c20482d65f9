"""Map a source's columns onto the prompts table, as polars expressions.

Layouts (`preset`), detected in this order unless given:
  gsm8k  `question` + `answer` whose every value ends in "#### N": prompt =
         question, reference_solution = the whole answer text, reference_answer
         = N without thousands commas ("1,000" -> "1000").
  math   `problem` + `solution` (MATH): reference_answer = the `answer` column,
         or else the last \\boxed{...} in the solution.
  chat   only a messages column (list of {role, content}): prompt = the last
         user turn's content.
  plain  a prompt column from PROMPT_COLUMNS, optional solution/answer columns.
Whenever a messages column is present, `messages` keeps the turns up to and
including the last user turn (what a model is asked to continue), and the
assistant turn right after it, if any, becomes the reference solution unless a
solution column is mapped.
"""

from __future__ import annotations

from dataclasses import dataclass

import pyarrow as pa

from prefdata.errors import PrefdataError
from prefdata.sources.readers import RawSource
from prefdata.sources.spec import PRESETS, SourceSpec

PROMPT_COLUMNS = ("prompt", "question", "problem", "instruction", "query", "input")
SOLUTION_COLUMNS = ("reference_solution", "solution", "response", "output", "completion")
ANSWER_COLUMNS = ("reference_answer", "final_answer", "answer", "target")
MESSAGES_COLUMNS = ("messages", "conversation", "conversations", "chat")
_SHAREGPT_ROLES = {"human": "user", "gpt": "assistant"}

_GSM8K_ANSWER = r"####\s*([^\n]*?)\s*$"
# The last \boxed{...}, allowing braces nested two deep (\frac{a}{b} inside).
_BOXED = r"\\boxed\{((?:[^{}]|\{(?:[^{}]|\{[^{}]*\})*\})*)\}"


@dataclass(frozen=True)
class Mapped:
    frame: object   # polars DataFrame: prompt, messages, reference_solution, reference_answer, id_text
    preset: str


def map_columns(raw: RawSource, spec: SourceSpec) -> Mapped:
    import polars as pl

    table = raw.table
    columns = table.column_names
    for flag, col in (("--prompt-column", spec.prompt_column), ("--solution-column", spec.solution_column),
                      ("--answer-column", spec.answer_column), ("--messages-column", spec.messages_column)):
        if col is not None and col not in columns:
            raise PrefdataError(f"column {col!r} ({flag}) not found in {raw.origin}",
                                f"the columns are: {', '.join(columns)}")
    if spec.preset is not None and spec.preset not in PRESETS:
        raise PrefdataError(f"unknown preset {spec.preset!r}", f"use one of: {', '.join(PRESETS)}")
    text_cols = [f.name for f in table.schema if _is_scalar(f.type)]
    for col in (spec.prompt_column, spec.solution_column, spec.answer_column):
        if col is not None and col not in text_cols:
            raise PrefdataError(f"column {col!r} in {raw.origin} holds {table.schema.field(col).type} "
                                "values, not text", "map a text column, or use --messages-column for chat messages")

    # TRL-style conversational data keeps the messages in a "prompt" column.
    # Auto-detection only picks nested columns: a text column named "chat" is
    # not messages. An explicitly mapped text column may hold messages as JSON.
    nested = [c for c in columns if c not in text_cols]
    messages_col = spec.messages_column or _first(nested, MESSAGES_COLUMNS) or (
        None if spec.prompt_column else _first(nested, PROMPT_COLUMNS))
    frame = pl.from_arrow(pa.table([table.column(c).cast(pa.large_string()) for c in text_cols],
                                   names=text_cols)) if text_cols else pl.DataFrame(height=table.num_rows)
    preset = spec.preset or _detect(frame, spec, messages_col)

    prompt_col = spec.prompt_column or {"gsm8k": "question", "math": "problem"}.get(preset)
    if prompt_col is None and preset == "plain":
        prompt_col = _first(text_cols, PROMPT_COLUMNS)
    solution_col = spec.solution_column or {"gsm8k": "answer", "math": "solution"}.get(preset) \
        or _first(text_cols, SOLUTION_COLUMNS)
    answer_col = spec.answer_column or (None if preset == "gsm8k" else _first(text_cols, ANSWER_COLUMNS))
    if answer_col == solution_col:
        answer_col = None
    for col, what in ((prompt_col, "prompt"), (solution_col, "solution")):
        if col is not None and col not in text_cols:
            raise PrefdataError(f"preset {preset!r} needs a text {what} column {col!r} in {raw.origin}",
                                f"the columns are: {', '.join(columns)}; map one with --{what}-column")
    if prompt_col is None and messages_col is None:
        raise PrefdataError(f"no prompt column found in {raw.origin} (looked for {', '.join(PROMPT_COLUMNS)})",
                            f"pass --prompt-column NAME; the columns are: {', '.join(columns)}")

    solution = pl.col(solution_col) if solution_col else pl.lit(None, dtype=pl.String)
    if answer_col:
        answer = pl.col(answer_col)
    elif preset == "gsm8k":
        answer = solution.str.extract(_GSM8K_ANSWER, 1).str.replace_all(",", "")
    elif preset == "math":
        answer = solution.str.extract_all(_BOXED).list.last().str.extract(_BOXED, 1)
    else:
        answer = pl.lit(None, dtype=pl.String)
    # with_columns (not select) so that literal columns take the frame's height.
    out = frame.with_columns(
        prompt=pl.col(prompt_col) if prompt_col else pl.lit(None, dtype=pl.String),
        reference_solution=solution, reference_answer=answer,
    ).select("prompt", "reference_solution", "reference_answer")

    if messages_col is not None:
        out = pl.concat([out, _chat_columns(table, messages_col, raw)], how="horizontal")
        out = out.with_columns(
            prompt=pl.col("prompt") if prompt_col else pl.col("last_user"),
            reference_solution=pl.col("reference_solution") if solution_col else pl.col("reply"),
            id_text=pl.when(pl.col("n_turns") > 1).then(pl.col("transcript")).otherwise(
                pl.col("prompt") if prompt_col else pl.col("last_user")),
        ).drop("last_user", "reply", "n_turns", "transcript")
    else:
        out = out.with_columns(messages=pl.lit(None), id_text=pl.col("prompt"))
    if preset == "gsm8k":
        _check_gsm8k(out, raw)
    return Mapped(out, preset)


def _is_scalar(t: pa.DataType) -> bool:
    return (pa.types.is_string(t) or pa.types.is_large_string(t) or pa.types.is_string_view(t)
            or pa.types.is_integer(t) or pa.types.is_floating(t) or pa.types.is_boolean(t)
            or pa.types.is_null(t) or pa.types.is_decimal(t))


def _first(columns: list[str], candidates: tuple[str, ...]) -> str | None:
    lowered = {c.lower(): c for c in columns}
    return next((lowered[c] for c in candidates if c in lowered), None)


def _detect(frame, spec: SourceSpec, messages_col: str | None) -> str:
    cols = set(frame.columns)
    if spec.prompt_column is None and {"question", "answer"} <= cols:
        answers = frame.get_column("answer")
        if answers.null_count() == 0 and answers.str.contains(_GSM8K_ANSWER).all():
            return "gsm8k"
    if spec.prompt_column is None and {"problem", "solution"} <= cols:
        return "math"
    if spec.prompt_column is None and messages_col and _first(list(cols), PROMPT_COLUMNS) is None:
        return "chat"
    return "plain"


def _chat_columns(table: pa.Table, col: str, raw: RawSource):
    """messages (up to the last user turn), last_user, reply, n_turns, transcript."""
    import polars as pl

    frame = pl.from_arrow(table.select([col]))
    dtype = frame.schema[col]
    target = pl.List(pl.Struct({"role": pl.String, "content": pl.String}))
    if dtype == pl.String:  # messages stored as JSON text (e.g. in a CSV)
        try:
            frame = frame.with_columns(pl.col(col).str.json_decode(target))
        except Exception as exc:
            raise PrefdataError(f"column {col!r} in {raw.origin} is text that is not a JSON list of "
                                f"{{role, content}} messages ({str(exc).splitlines()[0][:200]})",
                                "store messages as [{\"role\": \"user\", \"content\": \"...\"}]") from None
        dtype = frame.schema[col]
    inner = getattr(dtype, "inner", None)
    fields = {f.name for f in getattr(inner, "fields", [])}
    el = pl.element().struct
    if isinstance(dtype, pl.List) and {"role", "content"} <= fields:
        turn = pl.struct(role=el.field("role").cast(pl.String), content=el.field("content").cast(pl.String))
    elif isinstance(dtype, pl.List) and {"from", "value"} <= fields:  # ShareGPT: {from: human|gpt, value}
        turn = pl.struct(role=el.field("from").cast(pl.String).replace(_SHAREGPT_ROLES),
                         content=el.field("value").cast(pl.String))
    else:
        raise PrefdataError(f"column {col!r} in {raw.origin} is {dtype}, not a list of {{role, content}} messages",
                            "map a messages column with --messages-column, or a text column with --prompt-column")
    m = pl.col(col)
    frame = frame.select(m.list.eval(turn).alias("m"))
    m = pl.col("m")
    frame = frame.with_columns(
        last=m.list.eval(pl.element().struct.field("role").eq("user").arg_true()).list.last())
    last = pl.col("last")
    nxt = m.list.get(last + 1, null_on_oob=True)
    kept = pl.when(last.is_null()).then(m).otherwise(m.list.head(last + 1))
    return frame.select(
        messages=kept,
        last_user=m.list.get(last, null_on_oob=True).struct.field("content"),
        reply=pl.when(nxt.struct.field("role") == "assistant").then(nxt.struct.field("content")),
        n_turns=kept.list.len(),
        transcript=kept.list.eval(pl.concat_str(pl.lit("<"), pl.element().struct.field("role"), pl.lit("> "),
                                                pl.element().struct.field("content").fill_null("")))
        .list.join("\n"))


def _check_gsm8k(out, raw: RawSource) -> None:
    import polars as pl

    bad = out.select(pl.col("reference_answer").is_null() | (pl.col("reference_answer") == "")) \
        .to_series().arg_true()
    if len(bad):
        raise PrefdataError(f"{raw.where(int(bad[0]))} has no '#### N' final answer "
                            f"({len(bad)} such rows); the gsm8k preset needs one in every answer",
                            "fix those rows, or use --preset plain with --answer-column")
