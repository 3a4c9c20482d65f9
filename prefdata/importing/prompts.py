"""Prompts of imported rows: text or chat messages -> the prompts table, ids, content keys.

Prompt ids are the sources' (`prefdata.sources.ids`): sha256 of the source name,
a newline and the normalised prompt text (for a chat with several turns, every
turn as "<role> content"), so a prompt imported twice, or imported and also
read as a source under the same name, gets one id. The hashes are computed by
DuckDB's vectorised sha256 over whole columns (the same digest hashlib gives).
"""

from __future__ import annotations

from types import SimpleNamespace

import polars as pl
import pyarrow as pa

from prefdata.sources.ids import normalise_array

MESSAGE = pl.List(pl.Struct({"role": pl.String, "content": pl.String}))


def duckdb_query(frame: pl.DataFrame, sql: str) -> pl.DataFrame:
    """`sql` over `frame` (as table t) in DuckDB, which hashes on every core."""
    import duckdb

    con = duckdb.connect()
    try:
        data = frame.to_arrow()
        con.register("t", pa.Table.from_batches(data.to_batches(max_chunksize=65536)) if frame.height else data)
        return pl.from_arrow(con.sql(sql).to_arrow_table())
    finally:
        con.close()


def sha16_sql(*parts: str) -> str:
    """SQL for sha256 (16 hex) of the columns `parts` joined by U+001F (a null part hashes as '')."""
    joined = ", chr(31), ".join(f"coalesce(CAST(\"{p}\" AS VARCHAR), '')" for p in parts)
    return f"substr(sha256(concat({joined})), 1, 16)"


def sha16(frame: pl.DataFrame, *parts: str) -> pl.Series:
    """sha256 (16 hex) of the columns `parts` joined by U+001F, per row."""
    return duckdb_query(frame.select(parts), f"SELECT {sha16_sql(*parts)} AS h FROM t")["h"].cast(pl.String)


def prompt_fields(frame: pl.DataFrame, prompt_col: str | None, messages_col: str | None,
                  origin: str) -> pl.DataFrame:
    """Per row: prompt (text; for chats the last user turn), messages (chat turns up to the
    last user turn, or null), id_text (what the id hashes) and _prompt_bad (the prompt is
    not text, or a turn's content is not text)."""
    from prefdata.sources.mapping import _chat_columns

    if messages_col is not None:
        dtype = frame.schema[messages_col]
        inner = getattr(dtype, "inner", None)
        fields = {f.name: f.dtype for f in getattr(inner, "fields", [])}
        content = fields.get("content", fields.get("value"))
        if content is not None and content not in (pl.String, pl.Null):  # e.g. lists of content parts
            return pl.DataFrame({"prompt": pl.Series([None] * frame.height, dtype=pl.String),
                                 "messages": pl.Series([None] * frame.height, dtype=MESSAGE),
                                 "id_text": pl.Series([None] * frame.height, dtype=pl.String),
                                 "_prompt_bad": pl.Series([True] * frame.height)})
        chat = _chat_columns(frame.select(messages_col).to_arrow(), messages_col, SimpleNamespace(origin=origin))
        return chat.select(
            prompt=pl.col("last_user"),
            messages=pl.col("messages"),
            id_text=pl.when(pl.col("n_turns") > 1).then(pl.col("transcript")).otherwise(pl.col("last_user")),
            _prompt_bad=pl.lit(False))
    dtype = frame.schema[prompt_col]
    text = pl.col(prompt_col) if dtype == pl.String else pl.lit(None, pl.String)
    return frame.select(prompt=text, messages=pl.lit(None, MESSAGE), id_text=text,
                        _prompt_bad=pl.lit(dtype not in (pl.String, pl.Null)))


def _normalised(texts: pl.Series) -> pl.Series:
    """`normalise_array` of the texts it may change (`filters.needs_normalising`: non-ASCII, or
    whitespace other than single spaces); the rest are normal already and pass as they are."""
    from prefdata.filters import needs_normalising

    frame = texts.alias("t").to_frame()
    rows = frame.select(needs_normalising("t")).to_series().arg_true()
    if len(rows) == 0:
        return texts
    fixed = pl.from_arrow(normalise_array(texts.gather(rows).to_arrow())).cast(pl.String)
    return texts.scatter(rows, fixed)


def with_prompt_ids(rows: pl.DataFrame, source: str, distinct: bool = True) -> pl.DataFrame:
    """Add prompt_id from id_text (a null id_text gives a null id). With `distinct`, each distinct
    text is normalised and hashed once (candidates repeat their prompt once per response)."""
    texts = rows.select(pl.col("id_text").unique()) if distinct else rows.select("id_text")
    keyed = texts.with_columns(k=pl.lit(source + "\n") + _normalised(texts["id_text"]))
    ids = duckdb_query(keyed.select("k"), "SELECT substr(sha256(k), 1, 16) AS prompt_id FROM t")
    ids = pl.concat([texts, ids.select(pl.col("prompt_id").cast(pl.String))], how="horizontal")
    ids = ids.with_columns(prompt_id=pl.when(pl.col("id_text").is_not_null()).then("prompt_id"))
    if not distinct:
        return rows.with_columns(ids["prompt_id"])
    return rows.join(ids.drop_nulls("id_text"), on="id_text", how="left", maintain_order="left")


def prompts_table(kept: pl.DataFrame, source: str, split: str) -> pl.DataFrame:
    """One prompts row per prompt id (its first row in the file)."""
    return (kept.filter(pl.col("prompt_id").is_first_distinct())
            .select("prompt_id", pl.lit(source).alias("source"), pl.lit(split).alias("split"),
                    pl.col("_row").cast(pl.Int64).alias("source_index"), "prompt", "messages",
                    pl.col("reference_solution").cast(pl.String), pl.col("reference_answer").cast(pl.String)))
