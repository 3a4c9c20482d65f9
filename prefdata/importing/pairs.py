"""`--as pairs`: existing preference pairs -> prompts and pairs, in three forms.

* standard (TRL): `prompt`, `chosen`, `rejected` strings;
* conversational (TRL): `prompt` a message list, `chosen`/`rejected` message lists
  (the response is the text of their assistant turns);
* implicit prompt: no prompt column; `chosen` and `rejected` are whole dialogues
  sharing a prefix. The prompt is the text up to and including the last
  `marker` (default "\\n\\nAssistant:"), which must be the same in both; the
  responses are what follows (one separating space removed). When the prompt is
  a Human/Assistant dialogue its turns are also kept as chat `messages`, so
  scoring and training render it with the model's chat template.

Imported pairs have origin ``imported`` on both sides, scenario 0, kind
``imported``, judge ``imported`` and strategy ``imported:<form>``; scores come
from `chosen_score`/`rejected_score` columns when the file has them, else null.
Their candidate ids are content keys of (dataset, prompt, text) and their texts
live in the pairs table. Drop reasons (counted, first that applies):
``non_string_content``, ``missing_prompt``, ``missing_chosen``,
``missing_rejected``, ``unsplittable_dialogue``, ``chosen_equals_rejected``,
``duplicate``.
"""

from __future__ import annotations

import polars as pl

from prefdata.importing.candidates import unmappable
from prefdata.importing.prompts import MESSAGE, duckdb_query, prompt_fields, prompts_table, sha16_sql, with_prompt_ids
from prefdata.importing.read import NONSTRING, ImportFile, find_column
from prefdata.importing.spec import ImportSpec
from prefdata.sources.mapping import PROMPT_COLUMNS



def _literal_pattern(text: str) -> str:
    # every character as \x{..}: a regex that matches `text` literally in polars' engine
    return "".join(f"\\x{{{ord(c):X}}}" for c in text)


def _response(frame: pl.DataFrame, column: str) -> tuple[pl.Expr, pl.Expr, bool]:
    """(text, bad flag, is_chat) of a chosen/rejected column: a string, or a message list whose
    assistant turns' contents are joined."""
    dtype = frame.schema[column]
    if dtype in (pl.String, pl.Null):
        return pl.col(column).cast(pl.String), pl.lit(False), False
    inner = getattr(dtype, "inner", None)
    fields = {f.name: f.dtype for f in getattr(inner, "fields", [])}
    if isinstance(dtype, pl.List) and {"role", "content"} <= set(fields):
        if fields["content"] not in (pl.String, pl.Null):
            return pl.lit(None, pl.String), pl.lit(True), True
        turns = pl.col(column).list.eval(pl.element().filter(pl.element().struct.field("role") == "assistant")
                                         .struct.field("content"))
        text = pl.when(turns.list.len() > 0).then(turns.list.join(""))
        return text, pl.lit(False), True
    return pl.lit(None, pl.String), pl.col(column).is_not_null(), False


def _implicit(chosen: pl.Expr, rejected: pl.Expr, marker: str) -> tuple[pl.Expr, pl.Expr, pl.Expr, pl.Expr]:
    """(prompt, chosen response, rejected response, splittable) of whole dialogues."""
    pattern = f"(?s)^(.*{_literal_pattern(marker)})"
    c_prefix, r_prefix = chosen.str.extract(pattern, 1), rejected.str.extract(pattern, 1)
    ok = c_prefix.is_not_null() & (c_prefix == r_prefix)

    def rest(full: pl.Expr) -> pl.Expr:
        tail = full.str.slice(c_prefix.str.len_chars())
        return pl.when(tail.str.starts_with(" ")).then(tail.str.slice(1)).otherwise(tail)

    return c_prefix, rest(chosen), rest(rejected), ok.fill_null(False)


def _dialogue_messages(prompt: pl.Expr, human: str, assistant: str) -> pl.Expr:
    """Human/Assistant turns of an implicit prompt as chat messages (null when the prompt does
    not start with `human`): split on the markers, one leading space removed per turn."""
    sep = "\x1e"
    marked = prompt.str.replace_all(human, sep + "U", literal=True).str.replace_all(assistant, sep + "A",
                                                                                    literal=True)
    parts = marked.str.split(sep)
    turns = parts.list.slice(1, parts.list.len() - 2)  # drop the empty head and the open assistant turn
    el = pl.element()
    messages = turns.list.eval(pl.struct(
        role=pl.when(el.str.starts_with("U")).then(pl.lit("user")).otherwise(pl.lit("assistant")),
        content=pl.when(el.str.slice(1).str.starts_with(" ")).then(el.str.slice(2)).otherwise(el.str.slice(1))))
    valid = prompt.str.starts_with(human) & (parts.list.first() == "") & (parts.list.last() == "A")
    return pl.when(valid & (turns.list.len() > 0)).then(messages).cast(MESSAGE)


def import_pairs(imp: ImportFile, spec: ImportSpec) -> dict:
    frame = imp.frame.with_row_index("_row")
    chosen_col = find_column(frame, "chosen", spec.mapping, ("chosen", "chosen_response", "response_chosen"))
    rejected_col = find_column(frame, "rejected", spec.mapping, ("rejected", "rejected_response",
                                                                 "response_rejected"))
    prompt_col = find_column(frame, "prompt", spec.mapping, PROMPT_COLUMNS)
    if chosen_col is None or rejected_col is None:
        raise unmappable("--as pairs", imp, "a pairs file needs chosen and rejected columns (and usually a "
                         "prompt): map them, e.g. --map chosen=better,rejected=worse")
    chosen, c_bad, c_chat = _response(frame, chosen_col)
    rejected, r_bad, r_chat = _response(frame, rejected_col)
    cols = frame.with_columns(_c=chosen, _r=rejected, _resp_bad=c_bad | r_bad).select(
        "_row", NONSTRING, "_c", "_r", "_resp_bad", _c0=pl.col("_c"), _r0=pl.col("_r"))
    if prompt_col is not None:
        form = "conversational" if isinstance(frame.schema[prompt_col], pl.List) or c_chat or r_chat else "standard"
        is_chat = isinstance(frame.schema[prompt_col], pl.List)
        head = prompt_fields(frame, None if is_chat else prompt_col, prompt_col if is_chat else None, imp.origin)
        rows = pl.concat([cols, head], how="horizontal").with_columns(_split_ok=pl.lit(True))
    else:
        form = "implicit"
        prompt, c_resp, r_resp, ok = _implicit(pl.col("_c"), pl.col("_r"), spec.marker)
        rows = cols.with_columns(prompt=prompt, _c=c_resp, _r=r_resp, _split_ok=ok, _prompt_bad=pl.lit(False))
        rows = rows.with_columns(messages=_dialogue_messages(pl.col("prompt"), spec.human_marker, spec.marker))
        rows = rows.with_columns(id_text=pl.col("prompt"))
    rows = with_prompt_ids(rows, imp.name, distinct=False)  # pairs rarely share a prompt
    scores = {side: find_column(frame, f"{side}_score", spec.mapping, (f"{side}_score", f"score_{side}"))
              for side in ("chosen", "rejected")}
    rows = rows.with_columns(**{f"{side}_score": (frame[c].cast(pl.Float64) if c and frame.schema[c].is_numeric()
                                                   else pl.lit(None, pl.Float64)) for side, c in scores.items()})
    rows = rows.with_columns(pl.lit(spec.dataset).alias("dataset"))
    ids = duckdb_query(rows.select("dataset", "prompt_id", "_c", "_r"), (
        f"SELECT c AS chosen_candidate_id, r AS rejected_candidate_id, {sha16_sql('dataset', 'c', 'r')} AS pair_id "
        f"FROM (SELECT dataset, {sha16_sql('dataset', 'prompt_id', '_c')} AS c, "
        f"{sha16_sql('dataset', 'prompt_id', '_r')} AS r FROM t)"))
    rows = pl.concat([rows, ids.select(pl.all().cast(pl.String))], how="horizontal")

    def blank(c: str) -> pl.Expr:
        return ~pl.col(c).fill_null("").str.contains(r"\S")

    wrong_type = pl.col(NONSTRING) | pl.col("_prompt_bad") | pl.col("_resp_bad")
    reason = (pl.when(wrong_type).then(pl.lit("non_string_content"))
              .when(blank("_c0")).then(pl.lit("missing_chosen"))
              .when(blank("_r0")).then(pl.lit("missing_rejected"))
              .when(~pl.col("_split_ok")).then(pl.lit("unsplittable_dialogue"))
              .when(blank("prompt")).then(pl.lit("missing_prompt"))
              .when(blank("_c")).then(pl.lit("missing_chosen"))
              .when(blank("_r")).then(pl.lit("missing_rejected"))
              .when(pl.col("_c") == pl.col("_r")).then(pl.lit("chosen_equals_rejected"))
              .when(~pl.col("pair_id").is_first_distinct()).then(pl.lit("duplicate")))
    rows = rows.with_columns(drop_reason=reason)
    dropped = dict(rows.filter(pl.col("drop_reason").is_not_null())["drop_reason"].value_counts().iter_rows())
    kept = rows.filter(pl.col("drop_reason").is_null())
    has_scores = pl.col("chosen_score").is_not_null() & pl.col("rejected_score").is_not_null()
    pairs = kept.select(
        "pair_id", "prompt_id", "dataset", pl.lit(0, pl.Int32).alias("scenario"), pl.lit("imported").alias("kind"),
        "prompt", "messages", pl.col("_c").alias("chosen"), pl.col("_r").alias("rejected"),
        "chosen_candidate_id", "rejected_candidate_id",
        pl.lit("imported").alias("chosen_origin"), pl.lit("imported").alias("rejected_origin"),
        "chosen_score", "rejected_score",
        pl.when(has_scores).then(pl.col("chosen_score") - pl.col("rejected_score")).alias("margin"),
        pl.lit("imported").alias("judge_name"), pl.lit(f"imported:{form}").alias("strategy"))
    kept = kept.with_columns(reference_solution=pl.lit(None, pl.String), reference_answer=pl.lit(None, pl.String))
    return {"layout": form, "rows_read": imp.frame.height, "dropped": dropped,
            "prompts": prompts_table(kept, imp.name, spec.split), "pairs": pairs}
