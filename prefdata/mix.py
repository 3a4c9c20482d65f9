"""Seeded blends of scenario pair sets with exact proportions (``--mix 1=0.5,4=0.5``).

`parse_mix` / `validate_mix` check a mix spec, `apportion` turns proportions into
counts, and `mix_pairs` draws the blend from the pairs `prefdata.select` made for
each scenario.
"""

from __future__ import annotations

import numpy as np
import polars as pl

from prefdata.errors import PrefdataError
from prefdata.select import ROLES, pair_ids


def parse_mix(text: str) -> dict[int, float]:
    """``"1=0.5,4=0.5"`` -> ``{1: 0.5, 4: 0.5}``; proportions in (0, 1] summing to 1 (±1e-6).

    >>> parse_mix("1=0.25, 4=0.75")
    {1: 0.25, 4: 0.75}
    """
    fix = "write it like --mix 1=0.5,4=0.5 (scenarios 1-4, proportions in (0,1] summing to 1)"
    mix: dict[int, float] = {}
    for part in (p.strip() for p in text.split(",")):
        key, sep, value = part.partition("=")
        try:
            scenario, share = int(key), float(value)
        except ValueError:
            raise PrefdataError(f"bad mix {text!r}: {part!r} is not SCENARIO=PROPORTION", fix) from None
        if not sep or scenario not in ROLES:
            raise PrefdataError(f"bad mix {text!r}: {part!r} is not SCENARIO=PROPORTION", fix)
        if scenario in mix:
            raise PrefdataError(f"bad mix {text!r}: scenario {scenario} appears twice", fix)
        mix[scenario] = share
    validate_mix(mix)
    return mix


def validate_mix(proportions: dict[int, float]) -> None:
    fix = "proportions must each be in (0, 1] and sum to 1, e.g. 1=0.5,4=0.5"
    if not proportions:
        raise PrefdataError("empty mix", fix)
    for scenario, share in proportions.items():
        if scenario not in ROLES:
            raise PrefdataError(f"mix names unknown scenario {scenario}", "use scenarios 1-4")
        if not (0.0 < share <= 1.0):  # also rejects NaN
            raise PrefdataError(f"mix proportion {scenario}={share:g} is outside (0, 1]", fix)
    total = sum(proportions.values())
    if abs(total - 1.0) > 1e-6:
        raise PrefdataError(f"mix proportions sum to {total:g}, not 1", fix)


def mix_name(proportions: dict[int, float]) -> str:
    return "mix-" + ",".join(f"{s}={p:g}" for s, p in sorted(proportions.items()))


def apportion(total: int, proportions: dict[int, float]) -> dict[int, int]:
    """Integer counts summing to `total`: floors, then largest remainders (ties: lower scenario).

    >>> apportion(5, {1: 0.5, 4: 0.5})
    {1: 3, 4: 2}
    """
    exact = {s: p * total for s, p in proportions.items()}
    counts = {s: int(np.floor(v + 1e-9)) for s, v in exact.items()}
    by_remainder = sorted(exact, key=lambda s: (-(exact[s] - counts[s]), s))
    for s in by_remainder[:total - sum(counts.values())]:
        counts[s] += 1
    return counts


def mix_pairs(pairs_by_scenario: dict[int, pl.DataFrame], proportions: dict[int, float], seed: int,
              total: int | None = None, *, distinct_prompts: bool = True,
              dataset: str | None = None) -> pl.DataFrame:
    """A seeded blend of scenario pair sets with exact proportions.

    How counts are chosen: per-scenario counts are `apportion(total, proportions)`.
    With ``distinct_prompts`` (default) every prompt is used at most once in the
    mix, so no prompt is weighted twice. Scenarios are filled scarcest first
    (fewest pairs per unit of proportion); each takes, from the prompts still
    free, those covered by the fewest other scenarios in the mix, ties broken by
    a seeded shuffle. ``total=None`` gives the largest total this assignment can
    fill (bisection); an explicit ``total`` that cannot be filled is an error.
    Rows come out in the seeded shuffle order; ``dataset`` and ``pair_id`` are
    re-derived for the mix (default name ``mix-1=0.5,4=0.5``).
    """
    validate_mix(proportions)
    absent = [s for s in proportions if s not in pairs_by_scenario]
    if absent:
        raise PrefdataError(f"mix needs scenarios {absent} but they were not built", "build them first")
    frames = {s: pairs_by_scenario[s] for s in sorted(proportions)}
    for s, frame in frames.items():
        if frame["prompt_id"].is_duplicated().any():
            raise PrefdataError(f"scenario {s} has several pairs for one prompt", "mix one pair per prompt")
    all_prompts = pl.concat([f.select("prompt_id") for f in frames.values()]).group_by("prompt_id").len("_cover")
    all_prompts = all_prompts.sort("prompt_id").with_columns(
        pl.Series("_r", np.random.default_rng(seed).permutation(all_prompts.height)))
    ranked = {s: f.join(all_prompts, on="prompt_id").sort("_cover", "_r") for s, f in frames.items()}
    available = {s: f.height for s, f in frames.items()}
    order = sorted(frames, key=lambda s: (available[s] / proportions[s], s))

    def fill(n: int) -> list[pl.DataFrame] | None:
        counts, used, picked = apportion(n, proportions), None, []
        for s in order:
            pool = ranked[s] if used is None or not distinct_prompts else ranked[s].join(used, on="prompt_id",
                                                                                           how="anti")
            if pool.height < counts[s]:
                return None
            take = pool.head(counts[s])
            picked.append(take)
            used = take.select("prompt_id") if used is None else pl.concat([used, take.select("prompt_id")])
        return picked

    if total is None:
        low, high = 0, all_prompts.height if distinct_prompts else sum(available.values())
        while low < high:  # largest n that fill() accepts
            mid = (low + high + 1) // 2
            low, high = (mid, high) if fill(mid) is not None else (low, mid - 1)
        total = low
    picked = fill(total)
    if picked is None:
        raise PrefdataError(f"{mix_name(proportions)} cannot give {total} pairs"
                            + (" from distinct prompts" if distinct_prompts else ""),
                            "lower the total, or leave it unset for the largest possible mix")
    name = dataset or mix_name(proportions)
    mixed = pl.concat(picked).sort("_r").drop("_cover", "_r")
    return mixed.with_columns(pl.lit(name).alias("dataset"),
                              pair_ids(name, mixed["chosen_candidate_id"], mixed["rejected_candidate_id"]))
