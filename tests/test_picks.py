"""Per-prompt picks (`prefdata.picks`) on hand-made groups: ties, seeded draws, grouping."""

from __future__ import annotations

import numpy as np
import polars as pl

from prefdata import filters as F
from prefdata.picks import group_by_prompt, pick, pick_extreme, policy_stats


def _frame(rows):
    return pl.DataFrame(rows, schema=["prompt_id", "candidate_id", "score", "correct"], orient="row")


def _pick(df, how, seed=0):
    df, _ = group_by_prompt(df)
    rows = np.arange(df.height)
    g, picked, score = pick(df, how, (rows, df["_g"].to_numpy(), df["score"].to_numpy()),
                            F.order_keys(df["candidate_id"]), seed)
    return dict(zip(df["prompt_id"].gather(picked).to_list(), df["candidate_id"].gather(picked).to_list()))


def test_best_and_worst_break_ties_by_the_smallest_candidate_id_whatever_the_row_order():
    rows = [("a", "a3", 1.0, True), ("a", "a1", 1.0, True), ("a", "a2", 0.0, False), ("a", "a0", 0.0, False),
            ("b", "b9", 0.5, None)]
    for order in (rows, rows[::-1], rows[2:] + rows[:2]):
        assert _pick(_frame(order), "best") == {"a": "a1", "b": "b9"}
        assert _pick(_frame(order), "worst") == {"a": "a0", "b": "b9"}


def test_random_picks_depend_on_the_seed_not_the_row_order_or_other_prompts():
    rows = [(p, f"{p}{k}", float(k), k % 2 == 0) for p in "abcdefgh" for k in range(6)]
    first = _pick(_frame(rows), "random", seed=3)
    assert _pick(_frame(rows[::-1]), "random", seed=3) == first
    # a prompt's draw does not move when a later prompt's rows are removed
    assert _pick(_frame([r for r in rows if r[0] != "h"]), "random", seed=3) == {k: v for k, v in first.items()
                                                                                 if k != "h"}
    assert any(_pick(_frame(rows), "random", seed=s) != first for s in range(4, 8))
    correct = _pick(_frame(rows), "random_correct", seed=3)
    assert all(int(c[1:]) % 2 == 0 for c in correct.values())


def test_split_prompt_runs_are_regrouped_and_unknown_verdicts_count_as_neither():
    df, ordered = group_by_prompt(_frame([("b", "b1", 1.0, True), ("a", "a1", 0.0, None), ("b", "b2", 0.0, False)]))
    assert ordered and df["prompt_id"].to_list() == ["a", "b", "b"] and df["_g"].to_list() == [0, 1, 1]
    stats = policy_stats(df, np.ones(3, bool), df["_g"].to_numpy(), df["score"].to_numpy(), np.array([0, 1]),
                         "correct")
    assert stats["policy_known"].tolist() == [0, 2] and stats["policy_correct"].tolist() == [0, 1]


def test_pick_extreme_of_nothing_is_nothing():
    empty = np.zeros(0, np.int64)
    g, rows, score = pick_extreme(empty, np.zeros(0), empty, (empty,), best=True)
    assert len(g) == len(rows) == len(score) == 0
