"""Per-prompt picks for `prefdata.select`: one row per prompt group, as segment reductions
over candidates sorted by prompt (numpy), not a Python loop over prompts.

A pick is (group, row, score) arrays: the prompt group, the picked row of the scored
frame and its score. ``best`` / ``worst`` break score ties by the smallest
candidate id, so a pick never depends on row order; ``random`` draws from PCG64(seed)
in prompt_id order; ``mean_minus_2std`` takes the sample nearest mean - 2 std
(`prefdata.pairing`).
"""

from __future__ import annotations

import numpy as np
import polars as pl

from prefdata import filters as F
from prefdata import pairing as P


def pick_random(df: pl.DataFrame, g: np.ndarray, rows: np.ndarray, score: np.ndarray, seed: int):
    """(group, row, score) of one seeded random row per group: numpy's PCG64(seed) draws one
    number per prompt, in prompt_id order, and picks by rank of candidate_id within the prompt,
    so the result depends on neither the input's row order nor its other prompts' rows."""
    cands = pl.DataFrame({"_g": g, "_row": rows, "score": score,
                          "_id": df["candidate_id"].gather(rows), "_pid": df["prompt_id"].gather(rows)})
    cands = cands.sort("_g", "_id").with_columns(pl.int_range(pl.len()).over("_g").alias("_k"),
                                                 pl.len().over("_g").alias("_m"))
    groups = cands.select("_g", "_pid").unique("_g").sort("_pid")
    groups = groups.with_columns(pl.Series("_u", np.random.default_rng(seed).random(groups.height)))
    picked = cands.join(groups.select("_g", "_u"), on="_g").filter(
        pl.col("_k") == (pl.col("_u") * pl.col("_m")).floor().cast(pl.Int64))
    return picked["_g"].to_numpy(), picked["_row"].to_numpy(), picked["score"].to_numpy()


def pick(df: pl.DataFrame, how: str, candidates, order: tuple[np.ndarray, ...], seed: int):
    """(group, row, score) of one row per group of ``candidates`` (rows, groups, scores), picked ``how``."""
    rows, g, score = candidates
    if how in ("random_correct", "random_incorrect"):
        # an unknown verdict is neither correct nor incorrect
        keep = np.flatnonzero((df["correct"].gather(rows) == (how == "random_correct")).fill_null(False).to_numpy())
        rows, g, score = rows[keep], g[keep], score[keep]
    if how in ("random", "random_correct", "random_incorrect"):
        return pick_random(df, g, rows, score, seed)
    if how in ("best", "worst"):
        return pick_extreme(g, score, rows, order, how == "best")
    if how == "mean_minus_2std":  # the nearest row is the "worst" of the distances
        g, picked, _ = pick_extreme(g, P.near_mean_minus_2std(g, score), rows, order, False)
        return g, picked, score[np.searchsorted(rows, picked)]
    raise ValueError(f"unknown pick {how!r}: use best, worst or random")


def group_by_prompt(df: pl.DataFrame) -> tuple[pl.DataFrame, bool]:
    """Add ``_g``: a sorted integer id per prompt (0, 1, ...), so every later group step
    works on slices of contiguous rows (10x faster than hashing prompt ids).

    Candidates arrive grouped by prompt (generation writes a prompt's samples
    together); ``rle_id`` numbers the runs. If a prompt's rows are not contiguous,
    the frame is first sorted by prompt_id (slower, same result). Also returns
    whether group order is prompt_id order (then the pairs need no final sort).
    """
    df = df.with_columns(pl.col("prompt_id").rle_id().alias("_g"))
    starts = df["prompt_id"].gather(F.segments(df["_g"].to_numpy())[0])
    ordered = bool((starts.slice(1) > starts.slice(0, len(starts) - 1)).all()) if len(starts) > 1 else True
    if not ordered and starts.is_duplicated().any():  # some prompt appears in two separate runs
        df = df.sort("prompt_id", maintain_order=True).with_columns(pl.col("prompt_id").rle_id().alias("_g"))
        ordered = True
    return df.with_columns(pl.col("_g").set_sorted()), ordered


def pick_extreme(g: np.ndarray, score: np.ndarray, rows: np.ndarray, order: tuple[np.ndarray, ...], best: bool):
    """(group, row, score) of the best (highest) or worst (lowest) scored row of each group
    of the sorted ``g``; ties go to the smallest candidate id (``order``: `filters.order_keys`
    of every row), looked up only for tied rows."""
    starts, sizes = F.segments(g)
    if not len(starts):
        return g, rows, score
    extreme = (np.maximum if best else np.minimum).reduceat(score, starts)
    at = score == np.repeat(extreme, sizes)
    tied = at & np.repeat(np.add.reduceat(at, starts) > 1, sizes)
    winner = at & ~tied
    if tied.any():
        t = np.flatnonzero(tied)
        for key in order:  # keep the rows at each key's group minimum
            key = key[rows[t]]
            starts_t, sizes_t = F.segments(g[t])
            t = t[key == np.repeat(np.minimum.reduceat(key, starts_t), sizes_t)]
        t = t[np.concatenate(([True], g[t][1:] != g[t][:-1]))]  # equal ids: the first row
        winner[t] = True
    w = np.flatnonzero(winner)
    return g[w], rows[w], score[w]


def per_group(n_groups: int, g: np.ndarray, values: np.ndarray, fill) -> np.ndarray:
    """One value per prompt group: ``values`` at groups ``g``, ``fill`` elsewhere."""
    out = np.full(n_groups, fill, dtype=values.dtype)
    out[g] = values
    return out


def policy_stats(df: pl.DataFrame, policy: np.ndarray, g_all: np.ndarray, score_all: np.ndarray,
                  first_rows: np.ndarray, by: str) -> dict[str, object]:
    """Per prompt, what `filters.is_uniform` needs: counts of live policy samples (``policy``:
    a row mask) with a known and a correct verdict (``by="correct"``), or the policy's highest
    and lowest score. ``first_rows``: where each prompt's rows start."""
    if by == "correct":
        if not len(first_rows):
            return {"policy_known": np.zeros(0, np.int64), "policy_correct": np.zeros(0, np.int64)}
        known = policy & df["correct"].is_not_null().to_numpy()
        right = policy & df["correct"].fill_null(False).to_numpy()
        return {"policy_known": np.add.reduceat(known, first_rows, dtype=np.int64),
                "policy_correct": np.add.reduceat(right, first_rows, dtype=np.int64)}
    policy = np.flatnonzero(policy)
    g = g_all[policy]
    starts, _ = F.segments(g)
    stats = {}
    for name, reduce in (("policy_max", np.maximum), ("policy_min", np.minimum)):
        values = reduce.reduceat(score_all[policy], starts) if len(starts) else np.zeros(0)
        stats[name] = pl.Series(per_group(len(first_rows), g[starts], values, np.nan), nan_to_null=True)
    return stats
