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


def sha16(frame: pl.DataFrame, *parts: str) -> pl.Series:
    """sha256 (16 hex) of the columns `parts` joined by U+001F, per row, vectorised in DuckDB.
    A null part hashes as the empty string."""
    import duckdb

    names = [f"c{i}" for i in range(len(parts))]
    data = frame.select([pl.col(p).cast(pl.String).fill_null("").alias(n) for p, n in zip(parts, names)])
    con = duckdb.connect()
    try:
        con.register("t", pa.Table.from_batches(data.to_arrow().to_batches(max_chunksize=65536))
                     if data.height else data.to_arrow())
        joined = ", chr(31), ".join(names)
        out = con.sql(f"SELECT substr(sha256(concat({joined})), 1, 16) AS h FROM t").to_arrow_table()
    finally:
        con.close()
    return pl.from_arrow(out)["h"].cast(pl.String)


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


def with_prompt_ids(rows: pl.DataFrame, source: str) -> pl.DataFrame:
    """Add prompt_id from id_text (rows whose id_text is null get a null id)."""
    normal = pl.from_arrow(normalise_array(rows["id_text"].to_arrow())).cast(pl.String)
    frame = pl.DataFrame({"s": pl.Series([source] * rows.height, dtype=pl.String), "t": normal})
    frame = frame.with_columns(pl.concat_str("s", pl.lit("\n"), "t").alias("k"))
    ids = _sha_newline(frame)
    return rows.with_columns(prompt_id=pl.when(pl.col("id_text").is_not_null()).then(ids))


def _sha_newline(frame: pl.DataFrame) -> pl.Series:
    import duckdb

    con = duckdb.connect()
    try:
        con.register("t", pa.Table.from_batches(frame.select("k").to_arrow().to_batches(max_chunksize=65536))
                     if frame.height else frame.select("k").to_arrow())
        out = con.sql("SELECT substr(sha256(k), 1, 16) AS h FROM t").to_arrow_table()
    finally:
        con.close()
    return pl.from_arrow(out)["h"].cast(pl.String)


def prompts_table(kept: pl.DataFrame, source: str, split: str) -> pl.DataFrame:
    """One prompts row per prompt id (its first row in the file)."""
    return (kept.filter(pl.col("prompt_id").is_first_distinct())
            .select("prompt_id", pl.lit(source).alias("source"), pl.lit(split).alias("split"),
                    pl.col("_row").cast(pl.Int64).alias("source_index"), "prompt", "messages",
                    pl.col("reference_solution").cast(pl.String), pl.col("reference_answer").cast(pl.String)))
