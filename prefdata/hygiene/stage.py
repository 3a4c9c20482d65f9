"""Prompt hygiene as filter rules with reasons, for the build's ingest and select stages.

- ``contaminated``: the prompt (or, at select, the chosen response) shares an N-word
  run with an evaluation item (`decontaminate.NgramIndex`). Evaluation items are the
  sets named in ``select.decontaminate`` (same source syntax as ``[source]``; a bare
  string means that source's ``test`` split) plus, always, the workspace's held-out
  prompts (its ``test``-split rows). An item's prompt and reference solution are both
  indexed. A held-out prompt never counts against itself (a build on the test split).
- ``near_duplicate``: a prompt whose word shingles are Jaccard-similar (MinHash, then
  exact) to an earlier surviving prompt's (`minhash.near_duplicates`).

Rules run through `prefdata.filters` in that order, so near-duplicates are looked for
among prompts that are not contaminated, and the first copy in source order survives.
The text checked for a prompt is its chat turns when it has messages (so few-shot
turns are checked too), else its prompt.

>>> import polars as pl
>>> prompts = pl.DataFrame({"prompt_id": ["a", "b", "c"], "prompt": [
...     "Tom has five red apples and gives two of them to his little sister Ann today.",
...     "tom has five red apples, and gives two of them to his little sister ann today",
...     "Natalia sold clips to 48 of her friends in April, and then she sold half as many in May."]})
>>> evals = pl.DataFrame({"set": ["gsm8k"], "prompt_id": ["e"], "heldout": [False],
...     "text": ["Natalia sold clips to 48 of her friends in April and then she sold half as many."]})
>>> hygiene = PromptHygiene(evals, n=13, near_threshold=0.8)
>>> hygiene(prompts)["prompt_id"].to_list(), hygiene.counts
(['a'], {'contaminated': 1, 'near_duplicate': 1})
"""

from __future__ import annotations

import numpy as np
import polars as pl

from prefdata import filters as F
from prefdata.errors import PrefdataError
from prefdata.hygiene.decontaminate import DEFAULT_N, NgramIndex
from prefdata.hygiene.minhash import near_duplicates

EVAL_COLUMNS = {"set": pl.String, "prompt_id": pl.String, "heldout": pl.Boolean, "text": pl.String}


def check_eval_sets(entries) -> None:
    """One-line errors for ``select.decontaminate`` entries, before any work (the other
    hygiene settings are checked by `SelectConfig`'s typed fields)."""
    for entry in entries:
        if not (isinstance(entry, dict) or (isinstance(entry, str) and entry.strip())):
            raise PrefdataError(f"select.decontaminate entry {entry!r} is not an evaluation set",
                                'give a path or hub id, or a table like {path_or_name = "evals.jsonl", '
                                'prompt_column = "problem"}')
        eval_spec(entry)


def eval_spec(entry):
    """An evaluation set as a SourceSpec: a string is `path_or_name` (split ``test``); a table
    holds SourceSpec fields (``split`` defaults to ``test``)."""
    import dataclasses

    from prefdata.sources import SourceSpec

    values = {"path_or_name": entry} if isinstance(entry, str) else dict(entry)
    names = {f.name for f in dataclasses.fields(SourceSpec)}
    unknown = sorted(set(values) - names)
    if unknown or "path_or_name" not in values:
        raise PrefdataError(f"evaluation set {entry!r} has unknown keys {unknown} or no path_or_name",
                            f"allowed keys: {', '.join(sorted(names))}")
    return SourceSpec(**{"split": "test", **values})


def load_eval_sets(entries, resolve=lambda spec: spec) -> tuple[pl.DataFrame, list[dict]]:
    """(evaluation texts: one row per item prompt and per reference solution; one
    description per set). ``resolve`` maps a SourceSpec to the one to read (the build
    turns ``toy`` into the toy world's files)."""
    from prefdata.sources import load_prompts

    frames, sets = [], []
    for entry in entries:
        spec = eval_spec(entry)
        try:
            table, stats = load_prompts(resolve(spec))
        except PrefdataError as err:
            fix = (err.fix or "").replace("pass --split NAME", "name one with {path_or_name = "
                                          f'"{spec.path_or_name}", split = "NAME"}} in select.decontaminate')
            raise PrefdataError(f"evaluation set {spec.path_or_name} (split {spec.split}): {err.problem}",
                                fix or None) from None
        frames.append(item_texts(pl.from_arrow(table), stats.source))
        sets.append({"source": stats.source, "path": spec.path_or_name, "split": stats.split,
                     "items": table.num_rows})
    return (pl.concat(frames) if frames else pl.DataFrame(schema=EVAL_COLUMNS)), sets


def item_texts(prompts: pl.DataFrame, name: str, heldout: bool = False) -> pl.DataFrame:
    """Prompts-table rows as evaluation texts: each prompt, and each reference solution."""
    texts = prompt_text(prompts)
    frame = pl.DataFrame({"prompt_id": prompts["prompt_id"], "text": texts})
    if "reference_solution" in prompts.columns:
        frame = pl.concat([frame, prompts.select("prompt_id", pl.col("reference_solution").alias("text"))])
    return frame.drop_nulls("text").select(pl.lit(name).alias("set"), "prompt_id",
                                           pl.lit(heldout).alias("heldout"), "text")


def prompt_text(prompts: pl.DataFrame) -> pl.Series:
    """The text hygiene checks for each prompt: its chat turns joined, else its prompt."""
    if "messages" in prompts.columns and prompts["messages"].null_count() < prompts.height:
        turns = prompts["messages"].list.eval(pl.element().struct.field("content")).list.join("\n")
        return prompts.select(pl.coalesce(turns, pl.col("prompt"))).to_series()
    return prompts["prompt"]


class PromptHygiene:
    """The ingest-stage filter: called with the source's prompts (a Polars frame with
    prompt_id and prompt), returns the survivors; keeps ``counts`` per reason and the
    ``index`` it built (reused for the chosen-response check at select)."""

    def __init__(self, evals: pl.DataFrame, n: int = DEFAULT_N, near_threshold: float | None = 0.8,
                 seed: int = 0):
        self.evals, self.n, self.near_threshold, self.seed = evals, n, near_threshold, seed
        self.index: NgramIndex | None = None
        self.counts: dict[str, int] = {}

    def rules(self, frame: pl.DataFrame) -> list[F.Rule]:
        own = pl.col("heldout") & pl.col("prompt_id").is_in(frame["prompt_id"].implode())
        self.index = NgramIndex.from_texts(self.evals.filter(~own)["text"], self.n)
        rules: list[F.Rule] = []
        if len(self.index.hashes):
            rules.append(("contaminated", lambda df: pl.lit(pl.Series(self.index.hits(prompt_text(df))))))
        if self.near_threshold is not None:
            rules.append(("near_duplicate", self._near_duplicate))
        return rules

    def _near_duplicate(self, df: pl.DataFrame) -> pl.Expr:
        live = np.flatnonzero(df.select(F.alive()).to_series().to_numpy())
        dropped = np.zeros(df.height, np.bool_)
        texts = prompt_text(df[live])
        dropped[live[near_duplicates(texts, self.near_threshold, seed=self.seed)]] = True
        return pl.lit(pl.Series(dropped))

    def __call__(self, frame: pl.DataFrame) -> pl.DataFrame:
        rules = self.rules(frame)
        reasons = F.first_reasons(frame, rules)
        self.counts = F.reason_counts(reasons, rules)
        return frame.filter(pl.Series(reasons < 0))


def chosen_rule(index: NgramIndex):
    """Pair rule (select): the chosen response of a surviving pair shares an n-gram with an
    evaluation item. Only live pairs' texts are tokenised."""
    def rule(df: pl.DataFrame) -> pl.Expr:
        live = np.flatnonzero(df.select(F.alive()).to_series().to_numpy())
        hit = np.zeros(df.height, np.bool_)
        hit[live[index.hits(df["chosen_text"].gather(live))]] = True
        return pl.lit(pl.Series(hit))
    return rule
