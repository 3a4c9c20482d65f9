"""Pairing strategies: which of a prompt's scored samples become chosen and rejected.

`prefdata.select` calls these on the rows of one origin, grouped by prompt (``g``: sorted
group numbers, ``rows``: row numbers in the selection frame, ``score``: their scores), all
numpy, no per-row Python. The strategies (``SelectConfig.pairing``):

| pairing                  | chosen                   | rejected                                   |
|--------------------------|--------------------------|--------------------------------------------|
| best_vs_worst (default)  | highest score            | lowest score                               |
| mean_minus_2std          | highest score            | score nearest mean − 2·std of the prompt's |
| random_correct_incorrect | a seeded random correct  | a seeded random incorrect sample           |
| all_pairs                | every ordered pair (i, j) with score_i − score_j ≥ max(min_margin, >0), |
|                          | the largest margins first, at most ``max_pairs_per_prompt`` per prompt  |

mean_minus_2std follows Xiao et al. 2025 (arXiv 2502.16825): with many samples per prompt,
the minimum-score sample is an outlier and max/min pairs get worse as N grows; a rejected
sample about two standard deviations below the prompt's mean score works better. The mean
and the (population) standard deviation are over the prompt's live samples of the rejected
side's origin; ties in distance go to the smallest candidate id. With a 0/1 verifier score
mean − 2·std is never above the lowest score of a mixed prompt, so it picks a wrong sample,
like best_vs_worst does; the two differ for graded judges (LLM rubric, reward model).

random_correct_incorrect and all_pairs pair samples of one origin with each other, so they
apply to scenario 1 (on-policy) only; mean_minus_2std replaces a "worst" pick on the
rejected side (scenarios 1 and 2, and 3/4 with ``other_pick="worst"``).
"""

from __future__ import annotations

import numpy as np
import polars as pl

from prefdata import filters as F
from prefdata.errors import PrefdataError

PAIRINGS = ("best_vs_worst", "mean_minus_2std", "random_correct_incorrect", "all_pairs")
ONE_ORIGIN = ("random_correct_incorrect", "all_pairs")  # pair samples of one origin with each other


def check(pairing: str, scenario: int, rejected_pick: str, cap: int) -> None:
    if pairing not in PAIRINGS:
        raise PrefdataError(f"pairing {pairing!r} is unknown", f"use one of {', '.join(PAIRINGS)}")
    if pairing in ONE_ORIGIN and scenario != 1:
        raise PrefdataError(f"pairing {pairing} pairs policy samples with each other, so it needs scenario 1, "
                            f"not {scenario}", "use best_vs_worst or mean_minus_2std for scenarios 2-4")
    if pairing == "mean_minus_2std" and rejected_pick != "worst":
        raise PrefdataError(f"pairing mean_minus_2std picks the rejected side, but other_pick is {rejected_pick!r}",
                            "set other_pick = \"worst\" or use pairing best_vs_worst")
    if cap < 1:
        raise PrefdataError(f"max_pairs_per_prompt={cap}", "use max_pairs_per_prompt >= 1")


def picks(pairing: str, chosen_pick: str, rejected_pick: str) -> tuple[str, str]:
    """The per-side picks a one-pair-per-prompt strategy uses instead of best / worst."""
    if pairing == "mean_minus_2std":
        return chosen_pick, "mean_minus_2std"
    if pairing == "random_correct_incorrect":
        return "random_correct", "random_incorrect"
    return chosen_pick, rejected_pick


def strategy_suffix(pairing: str) -> str | None:
    """How the rejected side's name reads in the `strategy` column (None: the default's name)."""
    return {"mean_minus_2std": "mean_minus_2std"}.get(pairing)


def near_mean_minus_2std(g: np.ndarray, score: np.ndarray) -> np.ndarray:
    """|score − (mean − 2·std)| of each row, mean and population std over its group."""
    starts, sizes = F.segments(g)
    if not len(starts):
        return np.zeros(0)
    mean = np.add.reduceat(score, starts) / sizes
    centred = score - np.repeat(mean, sizes)
    std = np.sqrt(np.add.reduceat(centred * centred, starts) / sizes)
    return np.abs(score - np.repeat(mean - 2.0 * std, sizes))


def all_ordered_pairs(g: np.ndarray, rows: np.ndarray, score: np.ndarray, ids: pl.Series) -> pl.DataFrame:
    """Every ordered pair of rows of one group with a higher-scored first member:
    columns _g, chosen_row, rejected_row, chosen_score, rejected_score, ranked within the
    group by margin (largest first), then chosen and rejected candidate id (``_rank``)."""
    side = pl.DataFrame({"_g": g, "_row": rows.astype(np.int64), "_score": score, "_id": ids})
    pairs = (side.join(side, on="_g", suffix="_r")
             .filter(pl.col("_score") > pl.col("_score_r"))
             .sort("_g", pl.col("_score") - pl.col("_score_r"), "_id", "_id_r", descending=[False, True, False, False])
             .with_columns(pl.int_range(pl.len()).over("_g").alias("_rank")))
    return pairs.select("_g", pl.col("_row").alias("chosen_row"), pl.col("_row_r").alias("rejected_row"),
                        pl.col("_score").alias("chosen_score"), pl.col("_score_r").alias("rejected_score"), "_rank")


def is_over_cap(cap: int):
    """Rule function: alive pairs beyond the first ``cap`` of their prompt (in ``_rank`` order)."""
    def rule(df: pl.DataFrame) -> pl.Expr:
        kept_rank = pl.when(F.alive()).then(pl.col("_rank")).rank("ordinal").over("_g")
        return (F.alive() & (kept_rank > cap)).fill_null(False)
    return rule
