"""Pair selection for the four scenarios. Pure functions (blends of them: `prefdata.mix`).

| scenario | chosen                        | rejected                         | kind       |
|----------|-------------------------------|----------------------------------|------------|
| 1        | best policy sample            | worst policy sample              | on-policy  |
| 2        | reference solution            | worst policy sample              | mixed      |
| 3        | best policy sample            | worst (or seeded random) other   | mixed      |
| 4        | reference solution            | worst (or seeded random) other   | off-policy |

Input: one row per judged candidate (`load_scored` builds it from a workspace):
prompt_id, prompt, candidate_id, origin, text, score, judge_name; optional:
correct, finish_reason, messages, and a token-count column for the budget.

Filters are whole-column expressions with reasons (`prefdata.filters`); the picks
(best / worst / random per prompt) are segment reductions over the rows sorted
by prompt, in numpy (`prefdata.picks`). The rules:
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
  chosen text != rejected text (whitespace-normalised);
- a prompt is set aside whole when a candidate of the scenario's origins has a failed
  judgment (``judge_failed``: parse_error or timeout), or, for judges that read the text
  (llm, reward model; ``screen_injection``), a response that addresses the judge
  (``suspect_injection``, `prefdata.injection`): pairing the rest would let that
  candidate escape the rejected side;
- with ``decontaminate_chosen``, a pair whose chosen response shares an n-gram
  with an evaluation item is dropped as ``contaminated`` (`prefdata.hygiene`;
  the build drops contaminated and near-duplicate prompts before generation).

Drop counts: candidate reasons count candidates, pair reasons count prompts.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import lru_cache

import numpy as np
import polars as pl
import pyarrow as pa

from prefdata import filters as F
from prefdata import pairing as P
from prefdata import picks as K
from prefdata.errors import PrefdataError
from prefdata.fields import at_least, between, check_instance, one_of
from prefdata.injection import suspect_injection

KINDS = {1: "on-policy", 2: "mixed", 3: "mixed", 4: "off-policy"}
# scenario -> ((chosen origin, pick), (rejected origin, pick)); "other" follows cfg.other_pick
ROLES = {1: (("policy", "best"), ("policy", "worst")),
         2: (("reference", "best"), ("policy", "worst")),
         3: (("policy", "best"), ("other", None)),
         4: (("reference", "best"), ("other", None))}
REQUIRED = ("prompt_id", "prompt", "candidate_id", "origin", "text", "score", "judge_name")


@dataclass(frozen=True)
class SelectConfig:
    min_margin: float = field(default=0.0, metadata=at_least(0))  # keep margin >= min_margin (and always margin > 0)
    # budget on token_column (prompt + response, training template)
    max_tokens: int | None = field(default=None, metadata=at_least(1))
    token_column: str = "train_tokens"
    drop_truncated: bool = True  # finish_reason == "length"
    dedupe: bool = True  # same prompt + origin + normalised text
    unscored_score: float | None = None  # None: drop unscored candidates; else give them this score
    # "correct" | "score": what makes a prompt uniformly good/bad
    uniform_by: str = field(default="correct", metadata=one_of("correct", "score"))
    uniform_scenarios: tuple[int, ...] = (1,)  # where the MATH* filter applies (on-policy selection)
    # "worst" | "random": which other-model sample is rejected (3, 4)
    other_pick: str = field(default="worst", metadata=one_of("worst", "random"))
    seed: int = field(default=0, metadata=at_least(0))  # for other_pick="random" and the random pairing
    pairing: str = field(default="best_vs_worst", metadata=one_of(*P.PAIRINGS))  # a `prefdata.pairing` strategy
    # pairing="all_pairs": the largest margins of each prompt
    max_pairs_per_prompt: int = field(default=4, metadata=at_least(1))
    dataset: str | None = None  # default "scenario<N>"
    # "auto": on for judges that read the response as text (llm, reward model), off for the verifier
    screen_injection: str = field(default="auto", metadata=one_of("auto", "on", "off"))
    # data hygiene (prefdata.hygiene): evaluation sets in [source] syntax (a string: its test split);
    # prompts sharing a decontaminate_n-word run with one, or with a held-out prompt, are dropped
    # before generation (reason contaminated), as are pairs whose chosen response does, if
    # decontaminate_chosen; near-duplicate prompts (MinHash Jaccard >= threshold) are collapsed to one
    decontaminate: tuple[str | dict, ...] = ()
    decontaminate_n: int = field(default=13, metadata=at_least(1))
    decontaminate_chosen: bool = False
    near_duplicates: bool = True
    near_duplicate_threshold: float = field(default=0.8, metadata=between(0, 1, lo_open=True))

    def __post_init__(self):
        check_instance(self)


def strategy_name(scenario: int, cfg: SelectConfig) -> str:
    """The pairs' `strategy` value, e.g. best_vs_worst_policy, reference_vs_mean_minus_2std_policy."""
    if cfg.pairing == "random_correct_incorrect":
        return "random_correct_vs_incorrect_policy"
    if cfg.pairing == "all_pairs":
        return f"all_pairs_margin_cap{cfg.max_pairs_per_prompt}_policy"
    worst = P.strategy_suffix(cfg.pairing) or "worst"
    other = f"{worst if cfg.other_pick == 'worst' else cfg.other_pick}_other"
    return {1: f"best_vs_{worst}_policy", 2: f"reference_vs_{worst}_policy",
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
    # in batches, so DuckDB hashes them on every core
    con.register("frame", pa.Table.from_batches(frame.to_arrow().to_batches(max_chunksize=8192))
                 if frame.height else frame.to_arrow())
    try:
        table = con.sql(query).to_arrow_table()
    finally:
        con.unregister("frame")
    return pl.from_arrow(table)["pair_id"].cast(pl.String)


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
    if cfg.screen_injection not in ("auto", "on", "off"):
        raise PrefdataError(f"select.screen_injection {cfg.screen_injection!r} is unknown", "use auto, on or off")
    P.check(cfg.pairing, scenario, ROLES[scenario][1][1] or cfg.other_pick, cfg.max_pairs_per_prompt)
    names = df["judge_name"]
    if names.len() and ((names != names.first()).any() or 0 < names.null_count() < names.len()):
        raise PrefdataError(f"candidates are scored by several judges {sorted(names.drop_nulls().unique())}",
                            "select with one judge's scores at a time")


def candidate_rules(cfg: SelectConfig, origins: tuple[str, ...] = ("policy", "other", "reference"),
                    order_by: tuple[np.ndarray, ...] | None = None) -> list[F.Rule]:
    # rows of origins the scenario does not use are set aside first, and not counted
    # `_blank` / `_nhash` come from filters.text_keys (select_pairs adds them)
    rules = [("_unused_origin", ~pl.col("origin").is_in(list(origins))), ("empty", F.is_empty(blank="_blank"))]
    if cfg.drop_truncated:
        rules.append(("truncated", F.is_truncated()))
    if cfg.max_tokens is not None:
        rules.append(("over_budget", F.is_over_budget(cfg.max_tokens, cfg.token_column)))
    rules.append(("unscored", F.is_unscored()))
    if cfg.dedupe:
        # with one origin in scope the others are set aside already: no origin key to mix in
        keys = ("_g", "origin") if len(set(origins)) > 1 else ("_g",)
        rules.append(("duplicate", F.is_duplicate(keys=keys, group="_g", text_hash="_nhash", order_by=order_by)))
    return rules


def pair_rules(scenario: int, cfg: SelectConfig, eval_index=None) -> list[F.Rule]:
    (c_origin, _), (r_origin, _) = ROLES[scenario]
    # First: a prompt whose candidates could not all be judged, or one of which talks to the
    # judge, has no trustworthy best or worst; pairing the rest would let the failed one
    # escape (an injected response that broke the judge is never picked as the rejected side).
    rules = [("judge_failed", pl.col("_judge_failed")), ("suspect_injection", pl.col("_suspect_injection"))]
    rules += [(f"no_{c_origin}", F.is_missing("chosen")), (f"no_{r_origin}", F.is_missing("rejected"))]
    if c_origin == "reference":
        rules.append(("reference_incorrect", F.is_reference_incorrect()))
    if scenario in cfg.uniform_scenarios:
        rules.append(("uniform", F.is_uniform(cfg.uniform_by)))
    rules += [("tie", F.is_tie()), ("inverted", F.is_inverted())]
    if cfg.min_margin > 0:
        rules.append(("below_margin", F.is_below_margin(cfg.min_margin)))
    rules.append(("same_text", F.is_same_text(hashes=("chosen__nhash", "rejected__nhash"))))
    if cfg.decontaminate_chosen and eval_index is not None:  # last: only surviving pairs are tokenised
        from prefdata.hygiene.stage import chosen_rule

        rules.append(("contaminated", chosen_rule(eval_index)))
    return rules


FAILED_STATUSES = ("parse_error", "timeout")  # the judge could not give a verdict (not the response's fault)


def _screens(cfg: SelectConfig, judge_name: str) -> bool:
    if cfg.screen_injection == "auto":
        return bool(judge_name) and judge_name != "verifier"
    return cfg.screen_injection == "on"


def _untrusted_prompts(df: pl.DataFrame, origins: tuple[str, ...], first_rows: np.ndarray,
                       screen: bool) -> dict[str, np.ndarray]:
    """Per prompt: has a candidate of the scenario's origins a failed judgment
    (``_judge_failed``), or a text that addresses the judge (``_suspect_injection``)?"""
    in_play = df["origin"].is_in(list(origins)).fill_null(False)
    masks = {"_judge_failed": in_play & df["status"].is_in(list(FAILED_STATUSES)).fill_null(False)
             if "status" in df.columns else None,
             "_suspect_injection": in_play & df.select(suspect_injection()).to_series() if screen else None}
    # a rule that cannot fire (no status column, screen off) is all False without a pass over the rows
    return {name: (np.add.reduceat(mask.to_numpy(), first_rows) > 0
                   if mask is not None and len(first_rows) else np.zeros(len(first_rows), bool))
            for name, mask in masks.items()}


def select_pairs(candidates_scored: pl.DataFrame, scenario: int, cfg: SelectConfig = SelectConfig(),
                 eval_index=None) -> tuple[pl.DataFrame, dict[str, int]]:
    """Pairs (pairs-schema columns, sorted by prompt_id) and drop counts per reason.

    ``eval_index`` (a `prefdata.hygiene.decontaminate.NgramIndex`) is what
    ``cfg.decontaminate_chosen`` checks chosen responses against.

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
    c_how, r_how = P.picks(cfg.pairing, c_how or cfg.other_pick, r_how or cfg.other_pick)
    for name, default in (("correct", pl.Boolean), ("finish_reason", pl.String)):
        if name not in df.columns:
            df = df.with_columns(pl.lit(None, default).alias(name))
    if cfg.unscored_score is not None:
        df = df.with_columns(pl.col("score").fill_null(cfg.unscored_score))
    df, ordered = K.group_by_prompt(df)
    df = df.with_columns(F.text_keys(df))
    # candidate_id order keys: the duplicate rule's survivors and the picks' tie-break
    order = (F.order_keys(df["candidate_id"])
             if {c_how, r_how} & {"best", "worst", "mean_minus_2std"} or cfg.dedupe else ())
    rules = candidate_rules(cfg, (c_origin, r_origin), order)
    reasons = F.first_reasons(df, rules)
    counts = F.reason_counts(reasons, rules)
    # From here on: numpy arrays over the sorted prompt groups; strings are gathered by row at the end.
    live = reasons < 0
    g_all = df["_g"].to_numpy().astype(np.int64)
    score_all = df["score"].cast(pl.Float64).to_numpy()
    first_rows, _ = F.segments(g_all)
    n_groups = len(first_rows)

    @lru_cache(maxsize=None)
    def of_origin(name: str) -> np.ndarray:  # a mask of the live rows of one origin
        return live & (df["origin"] == name).fill_null(False).to_numpy()

    @lru_cache(maxsize=None)
    def candidates_of(name: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:  # rows, their groups, scores
        rows = np.flatnonzero(of_origin(name))
        return rows, g_all[rows], score_all[rows]

    columns = {"_g": np.arange(n_groups), "_first_row": first_rows,
               **_untrusted_prompts(df, (c_origin, r_origin), first_rows, _screens(cfg, judge_name))}
    if cfg.pairing == "all_pairs":  # several pairs per prompt: one row per pair, the prompt's columns gathered
        rows, g, score = candidates_of(c_origin)
        pairs_of = P.all_ordered_pairs(g, rows, score, df["candidate_id"].gather(rows))
    for side, origin, how in (() if cfg.pairing == "all_pairs" else
                              (("chosen", c_origin, c_how), ("rejected", r_origin, r_how))):
        # the incorrect side draws from its own stream, so the two sides' draws are independent
        g, picked, score = K.pick(df, how, candidates_of(origin), order, cfg.seed + (how == "random_incorrect"))
        columns[f"{side}_row"] = pl.Series(K.per_group(n_groups, g, picked.astype(np.int64), -1)).cast(pl.Int64)
        columns[f"{side}_score"] = pl.Series(K.per_group(n_groups, g, score, np.nan), nan_to_null=True)
    if scenario in cfg.uniform_scenarios:
        columns.update(K.policy_stats(df, of_origin("policy"), g_all, score_all, first_rows, cfg.uniform_by))
    frame = pl.DataFrame(columns)
    if cfg.pairing == "all_pairs":
        frame = pairs_of.join(frame, on="_g", how="left").sort("_g", "_rank")
    frame = frame.with_columns(
        *[pl.when(pl.col(f"{side}_row") >= 0).then(pl.col(f"{side}_row")).cast(pl.UInt32).alias(f"{side}_row")
          for side in ("chosen", "rejected")])
    frame = frame.with_columns(
        (pl.col("chosen_score") - pl.col("rejected_score")).alias("margin"),
        *[df[col].gather(frame[f"{side}_row"]).alias(f"{side}_{col}")
          for side in ("chosen", "rejected") for col in ("candidate_id", "origin", "correct", "text", "_nhash")])
    frame = F.mark(frame, pair_rules(scenario, cfg, eval_index))
    if cfg.pairing == "all_pairs":
        frame = F.mark(frame, [("over_cap", P.is_over_cap(cfg.max_pairs_per_prompt))])
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
    )
    return (pairs if ordered else pairs.sort("prompt_id", maintain_order=True)), counts


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

