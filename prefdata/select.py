"""Pair selection for the four scenarios, and seeded blends of them. Pure functions.

| scenario | chosen                        | rejected                         | kind       |
|----------|-------------------------------|----------------------------------|------------|
| 1        | best policy sample            | worst policy sample              | on-policy  |
| 2        | reference solution            | worst policy sample              | mixed      |
| 3        | best policy sample            | worst (or seeded random) other   | mixed      |
| 4        | reference solution            | worst (or seeded random) other   | off-policy |

Input: one row per judged candidate (`load_scored` builds it from a workspace):
prompt_id, prompt, candidate_id, origin, text, score, judge_name; optional:
correct, finish_reason, messages, and a token-count column for the budget.

Rules, all as whole-column expressions (`prefdata.filters`):
- candidates are filtered first (empty, truncated, over_budget, unscored,
  duplicate), only for the origins the scenario uses;
- "best" = highest score, "worst" = lowest score; ties go to the smallest
  candidate_id, so the result never depends on row order. With every sample
  tied, best and worst are the same candidate: margin 0, dropped as a tie;
- the reference is judged like any candidate; in scenarios 2/4 a reference whose
  own verdict is incorrect is never chosen (``reference_incorrect``);
- ``other_pick="random"`` (scenarios 3/4) draws one other-model sample per
  prompt from numpy's PCG64(seed), in prompt_id order over the prompts that
  have one: reproducible for a given seed and input;
- a pair is kept only with margin > 0 and margin >= min_margin, and with
  chosen text != rejected text (whitespace-normalised).

Drop counts: candidate reasons count candidates, pair reasons count prompts.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import numpy as np
import polars as pl

from prefdata import filters as F
from prefdata.errors import PrefdataError

KINDS = {1: "on-policy", 2: "mixed", 3: "mixed", 4: "off-policy"}
# scenario -> ((chosen origin, pick), (rejected origin, pick)); "other" follows cfg.other_pick
ROLES = {1: (("policy", "best"), ("policy", "worst")),
         2: (("reference", "best"), ("policy", "worst")),
         3: (("policy", "best"), ("other", None)),
         4: (("reference", "best"), ("other", None))}
REQUIRED = ("prompt_id", "prompt", "candidate_id", "origin", "text", "score", "judge_name")


@dataclass(frozen=True)
class SelectConfig:
    min_margin: float = 0.0  # keep margin >= min_margin (and always margin > 0)
    max_tokens: int | None = None  # budget on token_column (prompt + response, training template)
    token_column: str = "train_tokens"
    drop_truncated: bool = True  # finish_reason == "length"
    dedupe: bool = True  # same prompt + origin + normalised text
    unscored_score: float | None = None  # None: drop unscored candidates; else give them this score
    uniform_by: str = "correct"  # "correct" | "score": what makes a prompt uniformly good/bad
    uniform_scenarios: tuple[int, ...] = (1,)  # where the MATH* filter applies (on-policy selection)
    other_pick: str = "worst"  # "worst" | "random": which other-model sample is rejected (3, 4)
    seed: int = 0  # for other_pick="random"
    dataset: str | None = None  # default "scenario<N>"


def strategy_name(scenario: int, cfg: SelectConfig) -> str:
    other = f"{cfg.other_pick}_other"
    return {1: "best_vs_worst_policy", 2: "reference_vs_worst_policy",
            3: f"best_policy_vs_{other}", 4: f"reference_vs_{other}"}[scenario]


@lru_cache(maxsize=1)
def _duckdb():
    """One in-memory DuckDB connection per process, made on first use (import is lazy)."""
    import duckdb

    return duckdb.connect()


def pair_ids(dataset: str, chosen_ids: pl.Series, rejected_ids: pl.Series) -> pl.Series:
    """sha256 (16 hex) of ``dataset \x1f chosen_id \x1f rejected_id`` (the schema's pair_id).

    Computed by DuckDB's vectorised sha256: Polars' own hash is not stable across
    versions, ids must be, and a hashlib loop costs ~2 us a pair.
    """
    frame = pl.DataFrame({"c": chosen_ids, "r": rejected_ids}, schema={"c": pl.String, "r": pl.String})
    frame = frame.with_columns(pl.lit(dataset, pl.String).alias("d"))
    query = "SELECT substr(sha256(concat(d, chr(31), c, chr(31), r)), 1, 16) AS pair_id FROM frame"
    con = _duckdb()
    con.register("frame", frame.to_arrow())
    try:
        table = con.sql(query).to_arrow_table()
    finally:
        con.unregister("frame")
    return pl.from_arrow(table)["pair_id"].cast(pl.String)


def _tiebreak_ids(ids: pl.Series) -> pl.Series:
    """Ids as numbers when all are 16 lowercase hex chars (the schema's sha256[:16]):
    same order, and numeric group minima are far cheaper than string ones."""
    if len(ids) and (ids.str.len_bytes() == 16).all() and not ids.str.contains("[^0-9a-f]").any():
        return ids.str.to_integer(base=16, dtype=pl.UInt64)
    return ids


def _pick(live: pl.DataFrame, df: pl.DataFrame, flag: str, how: str, seed: int) -> pl.DataFrame:
    """One row per prompt group ``_g`` among live rows with ``flag`` set: best, worst or seeded random.

    ``live`` is narrow and numeric (``_g`` sorted, ``_row``, score); candidate ids
    are gathered only for rows tied at the extreme score, where they break the tie.
    """
    rows = live.filter(flag)
    if how in ("best", "worst"):
        extreme = pl.col("score").max() if how == "best" else pl.col("score").min()
        rows = rows.filter(pl.col("score") == extreme.over("_g"))  # _g is sorted: slice windows
        rows = rows.with_columns(pl.len().over("_g").alias("_n"))
        tied = rows.filter(pl.col("_n") > 1)
        tied = tied.with_columns(_tiebreak_ids(df["candidate_id"].gather(tied["_row"])).alias("_id"))
        tied = tied.filter(pl.col("_id") == pl.col("_id").min().over("_g"))  # ties: smallest id
        rows = pl.concat([rows.filter(pl.col("_n") == 1).drop("_n"), tied.drop("_n", "_id")]).sort("_g")
    elif how == "random":
        rows = rows.with_columns(df["candidate_id"].gather(rows["_row"]).alias("_id"),
                                 df["prompt_id"].gather(rows["_row"]).alias("_pid"))
        rows = rows.sort("_g", "_id").with_columns(
            pl.int_range(pl.len()).over("_g").alias("_k"), pl.len().over("_g").alias("_m"))
        # one draw per prompt, in prompt_id order: independent of the input's row order
        groups = rows.select("_g", "_pid").unique("_g").sort("_pid")
        groups = groups.with_columns(pl.Series("_u", np.random.default_rng(seed).random(groups.height)))
        rows = rows.join(groups, on="_g").filter(
            pl.col("_k") == (pl.col("_u") * pl.col("_m")).floor().cast(pl.Int64))
    else:
        raise ValueError(f"unknown pick {how!r}: use best, worst or random")
    return rows.select("_g", "_row", "score")


def _check_input(df: pl.DataFrame, scenario: int, cfg: SelectConfig) -> None:
    if scenario not in ROLES:
        raise PrefdataError(f"unknown scenario {scenario}", "use 1, 2, 3 or 4")
    missing = [c for c in REQUIRED if c not in df.columns]
    if missing:
        raise PrefdataError(f"scored candidates lack columns {missing}", "build them with select.load_scored")
    if cfg.max_tokens is not None and cfg.token_column not in df.columns:
        raise PrefdataError(f"max_tokens is set but there is no {cfg.token_column!r} column",
                            "add token counts with filters.add_token_counts first")
    if cfg.other_pick not in ("worst", "random"):
        raise PrefdataError(f"other_pick {cfg.other_pick!r} is unknown", "use worst or random")
    if df["judge_name"].n_unique() > 1:
        raise PrefdataError(f"candidates are scored by several judges {sorted(df['judge_name'].unique())}",
                            "select with one judge's scores at a time")


def candidate_rules(cfg: SelectConfig, origins: tuple[str, ...] = ("policy", "other", "reference")
                    ) -> list[F.Rule]:
    # rows of origins the scenario does not use are set aside first, and not counted
    rules = [("_unused_origin", ~pl.col("origin").is_in(list(origins))), ("empty", F.is_empty())]
    if cfg.drop_truncated:
        rules.append(("truncated", F.is_truncated()))
    if cfg.max_tokens is not None:
        rules.append(("over_budget", F.is_over_budget(cfg.max_tokens, cfg.token_column)))
    rules.append(("unscored", F.is_unscored()))
    if cfg.dedupe:
        rules.append(("duplicate", F.is_duplicate(keys=("_g", "origin"), group="_g")))
    return rules


def pair_rules(scenario: int, cfg: SelectConfig) -> list[F.Rule]:
    (c_origin, _), (r_origin, _) = ROLES[scenario]
    rules = [(f"no_{c_origin}", F.is_missing("chosen")), (f"no_{r_origin}", F.is_missing("rejected"))]
    if c_origin == "reference":
        rules.append(("reference_incorrect", F.is_reference_incorrect()))
    if scenario in cfg.uniform_scenarios:
        rules.append(("uniform", F.is_uniform(cfg.uniform_by)))
    rules += [("tie", F.is_tie()), ("inverted", F.is_inverted())]
    if cfg.min_margin > 0:
        rules.append(("below_margin", F.is_below_margin(cfg.min_margin)))
    rules.append(("same_text", F.is_same_text()))
    return rules


def _group_by_prompt(df: pl.DataFrame) -> pl.DataFrame:
    """Add ``_g``: a sorted integer id per prompt, so every later group-by is a
    slice of contiguous rows (10x faster than hashing prompt ids).

    Candidates arrive grouped by prompt (generation writes a prompt's samples
    together); ``rle_id`` numbers the runs. If a prompt's rows are not contiguous,
    the frame is first sorted by prompt_id (slower, same result).
    """
    df = df.with_columns(pl.col("prompt_id").rle_id().alias("_g"))
    run_starts = df.select(pl.col("prompt_id").filter(pl.col("_g") != pl.col("_g").shift(1, fill_value=-1)))
    if run_starts.to_series().is_duplicated().any():  # some prompt appears in two separate runs
        df = df.sort("prompt_id", maintain_order=True).with_columns(pl.col("prompt_id").rle_id().alias("_g"))
    return df.with_columns(pl.col("_g").set_sorted(), pl.int_range(pl.len(), dtype=pl.UInt32).alias("_row"))


def select_pairs(candidates_scored: pl.DataFrame, scenario: int,
                 cfg: SelectConfig = SelectConfig()) -> tuple[pl.DataFrame, dict[str, int]]:
    """Pairs (pairs-schema columns, sorted by prompt_id) and drop counts per reason.

    >>> cands = pl.DataFrame({"prompt_id": ["p"] * 3, "prompt": ["1+1?"] * 3, "judge_name": ["verifier"] * 3,
    ...     "candidate_id": ["a", "b", "c"], "origin": ["policy"] * 3, "score": [1.0, 0.0, 1.0],
    ...     "correct": [True, False, True], "text": ["2", "3", "two"]})
    >>> pairs, drops = select_pairs(cands, 1)
    >>> pairs.select("chosen", "rejected", "margin", "kind").row(0), drops
    (('2', '3', 1.0, 'on-policy'), {})
    """
    df = candidates_scored
    _check_input(df, scenario, cfg)
    judge_name = df["judge_name"].first() if df.height else ""
    (c_origin, c_how), (r_origin, r_how) = ROLES[scenario]
    c_how, r_how = c_how or cfg.other_pick, r_how or cfg.other_pick
    for name, default in (("correct", pl.Boolean), ("finish_reason", pl.String)):
        if name not in df.columns:
            df = df.with_columns(pl.lit(None, default).alias(name))
    if cfg.unscored_score is not None:
        df = df.with_columns(pl.col("score").fill_null(cfg.unscored_score))
    df = _group_by_prompt(df)
    df = F.mark(df, candidate_rules(cfg, (c_origin, r_origin)))
    counts = F.drop_counts(df)
    # From here on: a narrow frame of live rows; strings are gathered by _row at the end.
    live = df.select("_g", "_row", "score", "correct", (pl.col("origin") == c_origin).alias("_is_chosen"),
                     (pl.col("origin") == r_origin).alias("_is_rejected"),
                     (pl.col("origin") == "policy").alias("_is_policy")).filter(df[F.REASON].is_null())

    frame = df.select("_g", "_row").filter(pl.col("_g") != pl.col("_g").shift(1, fill_value=-1))
    frame = frame.rename({"_row": "_first_row"})
    for side, how in (("chosen", c_how), ("rejected", r_how)):
        pick = _pick(live, df, f"_is_{side}", how, cfg.seed)
        frame = frame.join(pick.rename({"_row": f"{side}_row", "score": f"{side}_score"}), on="_g", how="left")
    if scenario in cfg.uniform_scenarios:
        stats = live.filter("_is_policy").group_by("_g").agg(
            pl.col("correct").is_not_null().sum().alias("policy_known"),
            pl.col("correct").fill_null(False).sum().alias("policy_correct"),
            pl.col("score").max().alias("policy_max"), pl.col("score").min().alias("policy_min"))
        frame = frame.join(stats, on="_g", how="left")
    frame = frame.with_columns(
        (pl.col("chosen_score") - pl.col("rejected_score")).alias("margin"),
        *[df[col].gather(frame[f"{side}_row"]).alias(f"{side}_{col}")
          for side in ("chosen", "rejected") for col in ("candidate_id", "origin", "correct", "text")])
    frame = F.mark(frame, pair_rules(scenario, cfg))
    counts.update(F.drop_counts(frame))

    dataset = cfg.dataset or f"scenario{scenario}"
    kept = frame.filter(F.alive())
    first = kept["_first_row"]
    keep_messages = "messages" in df.columns
    pairs = kept.select(
        pair_ids(dataset, kept["chosen_candidate_id"], kept["rejected_candidate_id"]),
        df["prompt_id"].gather(first).alias("prompt_id"),
        pl.lit(dataset).alias("dataset"),
        pl.lit(scenario, pl.Int32).alias("scenario"),
        pl.lit(KINDS[scenario]).alias("kind"),
        df["prompt"].gather(first).alias("prompt"),
        *([df["messages"].gather(first).alias("messages")] if keep_messages else []),
        pl.col("chosen_text").alias("chosen"),
        pl.col("rejected_text").alias("rejected"),
        "chosen_candidate_id", "rejected_candidate_id", "chosen_origin", "rejected_origin",
        pl.col("chosen_score").cast(pl.Float64), pl.col("rejected_score").cast(pl.Float64),
        pl.col("margin").cast(pl.Float64),
        pl.lit(judge_name, pl.String).alias("judge_name"),
        pl.lit(strategy_name(scenario, cfg)).alias("strategy"),
    ).sort("prompt_id")
    return pairs, counts


def load_scored(ws, judge_name: str, judge_version: str | None = None) -> pl.DataFrame:
    """Candidates joined with one judge's judgments and their prompt: `select_pairs`'s input.

    Candidates that judge has not judged get a null score (dropped as ``unscored``).
    """
    judgments = ws.read_polars("judgments").filter(pl.col("judge_name") == judge_name)
    versions = sorted(judgments["judge_version"].unique().to_list())
    if judge_version is None and len(versions) > 1:
        raise PrefdataError(f"judge {judge_name} has several versions {versions}", "pass judge_version")
    if judge_version is not None:
        judgments = judgments.filter(pl.col("judge_version") == judge_version)
    cands = ws.read_polars("candidates", ["candidate_id", "prompt_id", "origin", "text", "token_count",
                                          "finish_reason"])
    prompts = ws.read_polars("prompts", ["prompt_id", "prompt", "messages"])
    return (cands.join(judgments.select("candidate_id", "score", "correct", "status"), on="candidate_id",
                       how="left")
            .join(prompts, on="prompt_id", how="left")
            .with_columns(pl.lit(judge_name).alias("judge_name")))


# -- mixes -------------------------------------------------------------------------
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
