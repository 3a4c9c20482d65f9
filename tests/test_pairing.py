"""Pairing strategies (`prefdata.pairing` through `select_pairs`) on hand-made prompt groups."""

from __future__ import annotations

import numpy as np
import polars as pl
import pytest

from prefdata.errors import PrefdataError
from prefdata.pairing import near_mean_minus_2std
from prefdata.select import SelectConfig, select_pairs
from tests.test_select import DATA, cands

# G: a reward-model-like spread of 14 policy scores, no verdicts. Sum 7.5, mean 0.5357,
# population std 1.0601, so mean - 2 std = -1.584: the -0.5 sample (distance 1.084) is
# nearer than the minimum -3.0 (distance 1.416).
GRADED = cands([("G", f"g{i:02d}", "policy", s, None, f"text {i}")
                for i, s in enumerate([1.0] * 10 + [0.5, 0.5, -0.5, -3.0])])
# Q: 0/1 verdicts, two right and two wrong: mean 0.5, std 0.5, mean - 2 std = -0.5, so every
# wrong sample is equally near; the smaller candidate id wins, as in best_vs_worst.
BINARY = cands([("Q", "q1", "policy", 1.0, True, "right one"), ("Q", "q2", "policy", 0.0, False, "wrong two"),
                ("Q", "q3", "policy", 1.0, True, "right three"), ("Q", "q4", "policy", 0.0, False, "wrong four")])


def pairs_of(df, scenario=1, **kw):
    pairs, drops = select_pairs(df, scenario, SelectConfig(**kw))
    return [tuple(r) for r in pairs.select("prompt_id", "chosen_candidate_id", "rejected_candidate_id").rows()], \
        drops, pairs


def test_mean_minus_2std_distance_hand_computed():
    d = near_mean_minus_2std(np.array([0, 0, 0, 0, 1, 1]), np.array([1.0, 1.0, 0.0, 0.0, 2.0, 2.0]))
    # group 0: mean 0.5, std 0.5, target -0.5; group 1: std 0, target 2
    np.testing.assert_allclose(d, [1.5, 1.5, 0.5, 0.5, 0.0, 0.0])


def test_mean_minus_2std_avoids_the_outlier_minimum():
    got, _, pairs = pairs_of(GRADED, pairing="mean_minus_2std")
    assert got == [("G", "g00", "g12")]  # best (first of the tied 1.0s) vs the -0.5 sample
    assert pairs["margin"].to_list() == [1.5] and pairs["strategy"].to_list() == ["best_vs_mean_minus_2std_policy"]
    default, _, pairs = pairs_of(GRADED)
    assert default == [("G", "g00", "g13")] and pairs["strategy"].to_list() == ["best_vs_worst_policy"]


def test_mean_minus_2std_on_binary_scores_equals_best_vs_worst():
    assert pairs_of(BINARY, pairing="mean_minus_2std")[0] == pairs_of(BINARY)[0] == [("Q", "q1", "q2")]
    # scenario 2: the reference is chosen, the policy sample nearest mean - 2 std rejected
    got, drops, pairs = pairs_of(DATA, 2, pairing="mean_minus_2std")
    assert got == [("P1", "r1", "a2")] and pairs["strategy"].to_list() == ["reference_vs_mean_minus_2std_policy"]


def test_random_correct_incorrect_is_seeded_and_respects_verdicts():
    rows = []
    for p in range(12):  # 3 right, 3 wrong, 1 unknown verdict per prompt
        rows += [(f"P{p:02d}", f"P{p:02d}c{k}", "policy", 1.0, True, f"right {p} {k}") for k in range(3)]
        rows += [(f"P{p:02d}", f"P{p:02d}w{k}", "policy", 0.0, False, f"wrong {p} {k}") for k in range(3)]
        rows.append((f"P{p:02d}", f"P{p:02d}u", "policy", 0.0, None, f"unknown {p}"))
    df = cands(rows)
    got, drops, pairs = pairs_of(df, pairing="random_correct_incorrect", seed=3)
    assert len(got) == 12 and drops == {}
    assert all("c" in c[3:] and "w" in r[3:] for _, c, r in got)  # never the unknown verdict
    assert set(pairs["strategy"]) == {"random_correct_vs_incorrect_policy"}
    assert pairs_of(df.reverse(), pairing="random_correct_incorrect", seed=3)[0] == got  # row order irrelevant
    other = pairs_of(df, pairing="random_correct_incorrect", seed=4)[0]
    assert other != got  # 12 prompts x 9 combinations: another seed draws differently
    assert len({c for _, c, _ in got}) == 12 and len({c[-2:] for _, c, _ in got} | {r[-2:] for _, _, r in got}) > 2


def test_random_correct_incorrect_drops_prompts_without_both_verdicts():
    got, drops, _ = pairs_of(DATA, pairing="random_correct_incorrect")
    # P2's samples are all right: no incorrect sample to reject (counted before the uniform rule)
    assert [g[0] for g in got] == ["P1", "P3", "P4"] and drops["no_policy"] == 1 and "uniform" not in drops
    assert got[1] == ("P3", "c1", "c2") and got[2] == ("P4", "d4", "d3")  # one right, one wrong: forced


def test_all_pairs_ordered_by_margin_and_capped():
    df = cands([("A", "s3", "policy", 3.0, None, "three"), ("A", "s2a", "policy", 2.0, None, "two a"),
                ("A", "s2b", "policy", 2.0, None, "two b"), ("A", "s1", "policy", 1.0, None, "one")])
    got, drops, pairs = pairs_of(df, pairing="all_pairs", max_pairs_per_prompt=3)
    # five ordered pairs with a positive margin: (s3, s1) margin 2, then margin 1 by chosen id, rejected id
    assert got == [("A", "s3", "s1"), ("A", "s2a", "s1"), ("A", "s2b", "s1")]
    assert drops == {"over_cap": 2} and pairs["margin"].to_list() == [2.0, 1.0, 1.0]
    assert set(pairs["strategy"]) == {"all_pairs_margin_cap3_policy"}
    assert pairs["pair_id"].n_unique() == 3
    got, drops, _ = pairs_of(df, pairing="all_pairs", max_pairs_per_prompt=10)
    assert len(got) == 5 and drops == {}
    got, drops, _ = pairs_of(df, pairing="all_pairs", min_margin=1.5)
    assert got == [("A", "s3", "s1")] and drops == {"below_margin": 4}


def test_all_pairs_keeps_the_filters():
    got, drops, _ = pairs_of(DATA, pairing="all_pairs")
    # P1: 2 right x 2 wrong; P2 uniform (no pair has a margin); P3: c1 > c2; P4: d4 > d3 (d1 empty,
    # d2 truncated, d5 a duplicate of d4)
    assert got == [("P1", "a1", "a2"), ("P1", "a1", "a4"), ("P1", "a3", "a2"), ("P1", "a3", "a4"),
                   ("P3", "c1", "c2"), ("P4", "d4", "d3")]
    assert drops == {"duplicate": 1, "empty": 1, "truncated": 1}


@pytest.mark.parametrize("kw, scenario, says", [
    ({"pairing": "best_of_three"}, 1, "pairing = 'best_of_three' is not a known value"),
    ({"pairing": "all_pairs"}, 2, "needs scenario 1"),
    ({"pairing": "random_correct_incorrect"}, 4, "needs scenario 1"),
    ({"pairing": "mean_minus_2std", "other_pick": "random"}, 3, "other_pick is 'random'"),
    ({"pairing": "all_pairs", "max_pairs_per_prompt": 0}, 1, "max_pairs_per_prompt"),
])
def test_bad_pairing_is_a_clear_error(kw, scenario, says):
    with pytest.raises(PrefdataError, match=says):
        select_pairs(DATA, scenario, SelectConfig(**kw))


def test_pairing_reaches_select_from_a_pipeline():
    from prefdata.config import build_config, scenario_pipeline

    raw = scenario_pipeline(1)
    raw["select"]["pairing"] = "mean_minus_2std"
    assert build_config(raw).select["pairing"] == "mean_minus_2std"
    raw["select"]["pairing"] = "nope"
    with pytest.raises(PrefdataError):
        build_config(raw)


def test_default_path_unchanged_on_the_shared_data():
    for scenario in (1, 2, 3, 4):
        a = select_pairs(DATA, scenario)[0]
        b = select_pairs(DATA, scenario, SelectConfig(pairing="best_vs_worst"))[0]
        assert a.equals(b)
    assert isinstance(GRADED, pl.DataFrame)


def test_build_refuses_a_pairing_its_scenario_cannot_use(tmp_path):
    import subprocess
    import sys

    ws = tmp_path / "ws"
    done = subprocess.run([sys.executable, "-m", "prefdata.cli", "build", str(ws), "--scenario", "2",
                           "--set", "select.pairing=all_pairs"], capture_output=True, text=True, timeout=300)
    assert done.returncode == 2, done.stderr
    assert "needs scenario 1" in done.stderr and len(done.stderr.strip().splitlines()) == 1
    assert not ws.exists()  # refused before anything was written
