"""Seeded mixes of scenario pair sets: spec parsing, apportioning, exact proportions."""

from __future__ import annotations

import polars as pl
import pytest

from prefdata.errors import PrefdataError
from prefdata.mix import apportion, mix_pairs, parse_mix


def test_parse_mix():
    assert parse_mix("1=0.5,4=0.5") == {1: 0.5, 4: 0.5}
    assert parse_mix("2=1") == {2: 1.0}
    for bad in ("1=0.5,4=0.6", "1=0,4=1", "1=1.5", "5=1", "1=0.5,1=0.5", "x=1", "1:1", "", "1=nan"):
        with pytest.raises(PrefdataError) as err:
            parse_mix(bad)
        assert "\n" not in str(err.value)


def test_apportion_sums_to_total():
    for total in range(0, 50):
        counts = apportion(total, {1: 0.3, 2: 0.3, 4: 0.4})
        assert sum(counts.values()) == total
        assert all(abs(counts[s] - p * total) < 1 for s, p in {1: 0.3, 2: 0.3, 4: 0.4}.items())


def fake_pairs(scenario, prompts):
    return pl.DataFrame({"prompt_id": [f"p{i:03d}" for i in prompts], "dataset": f"scenario{scenario}",
                         "scenario": scenario, "chosen_candidate_id": [f"c{scenario}-{i}" for i in prompts],
                         "rejected_candidate_id": [f"r{scenario}-{i}" for i in prompts]})


BY = {1: fake_pairs(1, range(10)), 4: fake_pairs(4, range(20))}


def test_mix_largest_total_distinct_prompts_and_proportions():
    mixed = mix_pairs(BY, {1: 0.5, 4: 0.5}, seed=0)
    # scenario 1 (scarcer) takes its 10 prompts, scenario 4 the 10 it alone has
    assert mixed.height == 20 and mixed["prompt_id"].n_unique() == 20
    assert mixed.group_by("scenario").len().sort("scenario")["len"].to_list() == [10, 10]
    assert set(mixed["dataset"]) == {"mix-1=0.5,4=0.5"}


def test_mix_is_reproducible_and_seeded():
    a = mix_pairs(BY, {1: 0.25, 4: 0.75}, seed=3, total=12)
    b = mix_pairs(BY, {1: 0.25, 4: 0.75}, seed=3, total=12)
    c = mix_pairs(BY, {1: 0.25, 4: 0.75}, seed=4, total=12)
    assert a.equals(b) and not a.equals(c)
    assert a.group_by("scenario").len().sort("scenario")["len"].to_list() == [3, 9]
    assert a["pair_id"].n_unique() == 12


def test_mix_errors():
    with pytest.raises(PrefdataError, match="cannot give 25"):
        mix_pairs(BY, {1: 0.5, 4: 0.5}, seed=0, total=25)
    with pytest.raises(PrefdataError, match="not built"):
        mix_pairs(BY, {1: 0.5, 2: 0.5}, seed=0)
    same_prompts = {1: fake_pairs(1, range(10)), 4: fake_pairs(4, range(10))}
    assert mix_pairs(same_prompts, {1: 0.5, 4: 0.5}, seed=0).height == 10
    assert mix_pairs(same_prompts, {1: 0.5, 4: 0.5}, seed=0, distinct_prompts=False).height == 20
