"""`load_prompts`: read a source, map its columns, id, dedup, sample, limit."""

from __future__ import annotations

import time
from typing import Callable

import pyarrow as pa
import pyarrow.compute as pc

from prefdata.errors import PrefdataError
from prefdata.schemas import conform
from prefdata.sources.ids import hash_texts, normalise_array
from prefdata.sources.mapping import map_columns
from prefdata.sources.readers import read_source
from prefdata.sources.spec import SourceSpec, SourceStats


def load_prompts(spec: SourceSpec, prefilter: Callable | None = None) -> tuple[pa.Table, SourceStats]:
    """Load one split of a prompt source as a table conformed to the prompts schema.

    Order of work: read -> map columns -> reject empty prompts -> prompt_id
    (see `prefdata.sources.ids`) -> drop duplicate ids, keeping the first ->
    ``prefilter`` (a function of the Polars frame returning the rows to keep: the
    build's `prefdata.hygiene.stage.PromptHygiene`, so ``--limit 100`` gives 100 clean
    prompts) -> seeded `sample` -> `limit`. `source_index` is the 0-based row in the source
    before any of that, so a row can always be traced back.

    >>> table, stats = load_prompts(SourceSpec("/work/shared/data/gsm8k", split="test", limit=2))  # doctest: +SKIP
    >>> stats.rows_read, stats.rows_kept                                                      # doctest: +SKIP
    (1319, 2)
    """
    started = time.perf_counter()
    import polars as pl  # after the clock starts: a first call pays its import

    for field in ("limit", "sample"):
        value = getattr(spec, field)
        if value is not None and (not isinstance(value, int) or value < 0):
            raise PrefdataError(f"--{field} must be a whole number >= 0, got {value!r}", f"fix --{field}")
    raw = read_source(spec)
    if raw.table.num_rows == 0:
        raise PrefdataError(f"split {raw.split!r} of {raw.origin} has no rows", "point at a source with prompts")
    mapped = map_columns(raw, spec)
    frame = mapped.frame.with_columns(source_index=pl.int_range(pl.len(), dtype=pl.Int64))

    prompts = frame.get_column("prompt").to_arrow()
    empty = pc.or_kleene(pc.is_null(prompts), pc.equal(pc.utf8_trim_whitespace(prompts), "")).fill_null(True)
    empty_rows = pc.indices_nonzero(empty)
    if len(empty_rows):
        more = f" ({len(empty_rows)} rows in all)" if len(empty_rows) > 1 else ""
        raise PrefdataError(f"{raw.where(empty_rows[0].as_py())} has an empty prompt{more}",
                            "fill in or remove those rows, or map another column with --prompt-column")

    frame, too_large = _drop_too_large(frame, spec.max_prompt_bytes, raw)

    id_texts = normalise_array(frame.get_column("id_text").to_arrow())
    frame = frame.with_columns(prompt_id=pl.Series(hash_texts(id_texts.to_pylist(), raw.name),
                                                   dtype=pl.String)).drop("id_text")
    rows_read = frame.height + too_large
    frame = frame.filter(pl.col("prompt_id").is_first_distinct())
    duplicates = rows_read - frame.height
    if prefilter is not None:
        frame = prefilter(frame)

    if spec.sample is not None and spec.sample < frame.height:
        import numpy as np

        # Sorted picks keep the source order; the same seed picks the same rows.
        picks = np.sort(np.random.default_rng(spec.seed).choice(frame.height, spec.sample, replace=False))
        frame = frame[picks]
    if spec.limit is not None:
        frame = frame.head(spec.limit)

    frame = frame.with_columns(source=pl.lit(raw.name), split=pl.lit(raw.split))
    table = conform("prompts", frame.to_arrow())
    stats = SourceStats(source=raw.name, split=raw.split, format=raw.format, preset=mapped.preset,
                        rows_read=rows_read, duplicates_removed=duplicates, rows_kept=table.num_rows,
                        seconds=round(time.perf_counter() - started, 4), too_large=too_large)
    return table, stats


def _drop_too_large(frame, limit: int, raw):
    """Drop rows whose prompt (text + chat messages) or reference solution is over `limit` UTF-8
    bytes: reason `prompt_too_large`, counted. Done on byte lengths, before any tokenizer sees them."""
    import polars as pl

    size = pl.col("prompt").str.len_bytes().fill_null(0) + pl.col("reference_solution").str.len_bytes().fill_null(0)
    if isinstance(frame.schema.get("messages"), pl.List):
        size = size + pl.col("messages").list.eval(
            pl.element().struct.field("content").str.len_bytes()).list.sum().fill_null(0)
    keep = frame.select(size <= limit).to_series()
    dropped = keep.len() - keep.sum()
    if dropped == keep.len():
        first = int(keep.arg_min())
        raise PrefdataError(f"every row of {raw.origin} is larger than max_prompt_bytes={limit} "
                            f"(e.g. {raw.where(first)})",
                            "raise the cap with --set source.max_prompt_bytes=N, or shorten the prompts")
    return (frame.filter(keep), int(dropped)) if dropped else (frame, 0)
