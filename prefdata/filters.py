"""Filters as whole-column Polars expressions that keep their reasons.

A rule is ``(reason, expr)`` where ``expr`` is a boolean expression over the
frame; `mark` applies rules in order and writes the first matching reason into
a ``drop_reason`` column (null = kept). Rules are applied one after another, so
a later rule sees the drops of earlier ones through `alive()`: e.g. duplicate
detection keeps the first *surviving* copy, so a truncated copy never knocks out
a complete one. `drop_counts` gives rows per reason (datatrove-style).

Two levels use the same machinery:
- candidate rules (one row per candidate): empty, truncated, over_budget,
  unscored, duplicate; their counts are candidates;
- pair rules (one row per prompt, chosen_* / rejected_* columns): no_<origin>,
  reference_incorrect, uniform, tie, inverted, below_margin, same_text; their
  counts are prompts.

>>> import polars as pl
>>> df = pl.DataFrame({"prompt_id": ["p", "p", "p"], "origin": ["policy"] * 3,
...                    "candidate_id": ["a", "b", "c"], "text": ["x  1", "x 1", ""],
...                    "finish_reason": ["stop", "stop", "stop"]})
>>> out = mark(df, [("empty", is_empty()), ("duplicate", is_duplicate())])
>>> out["drop_reason"].to_list(), drop_counts(out)
([None, 'duplicate', 'empty'], {'duplicate': 1, 'empty': 1})
"""

from __future__ import annotations

from typing import Callable, Sequence

import polars as pl

REASON = "drop_reason"
# A rule's test is an expression, or a function of the frame (as marked so far) that
# returns one: for tests that need a pre-pass, like finding duplicate groups.
Rule = tuple[str, "pl.Expr | Callable[[pl.DataFrame], pl.Expr]"]


def alive() -> pl.Expr:
    """Rows no earlier rule has dropped."""
    return pl.col(REASON).is_null()


def mark(df: pl.DataFrame, rules: Sequence[Rule]) -> pl.DataFrame:
    """Add/extend ``drop_reason`` with the first matching rule's reason, in rule order.

    Consecutive expression rules become one when/then chain (one pass over the
    rows); a rule function first sees the frame marked by the rules before it.
    """
    if REASON not in df.columns:
        df = df.with_columns(pl.lit(None, pl.String).alias(REASON))
    pending: list[tuple[str, pl.Expr]] = []

    def apply(frame: pl.DataFrame) -> pl.DataFrame:
        if not pending:
            return frame
        chain = pl.when(~alive()).then(pl.col(REASON))
        for reason, expr in pending:
            chain = chain.when(expr.fill_null(False)).then(pl.lit(reason))
        pending.clear()
        return frame.with_columns(chain.otherwise(pl.col(REASON)).alias(REASON))

    for reason, expr in rules:
        if callable(expr) and not isinstance(expr, pl.Expr):
            df = apply(df)
            expr = expr(df)
        pending.append((reason, expr))
    return apply(df)


def drop_counts(df: pl.DataFrame) -> dict[str, int]:
    """Dropped rows per reason, largest count first (ties by name); reasons starting
    with "_" are bookkeeping (rows out of scope), not drops, and are not counted."""
    counts = df.group_by(REASON).len().filter(pl.col(REASON).is_not_null() & ~pl.col(REASON).str.starts_with("_"))
    pairs = sorted(counts.iter_rows(), key=lambda row: (-row[1], row[0]))
    return {reason: n for reason, n in pairs}


# -- candidate rules ------------------------------------------------------------
def normalised(col: str = "text") -> pl.Expr:
    """Text with outer whitespace stripped and inner runs of whitespace collapsed to one space.

    Same result as replacing ``\\s+`` with a space, but the pattern only matches
    where something changes (a run of 2+, or one non-space whitespace char), so
    text that is already normal is not rewritten: 3x faster on 1M short texts.
    """
    return pl.col(col).str.strip_chars().str.replace_all(r"\s\s+|[^\S ]", " ")


def is_empty(col: str = "text") -> pl.Expr:
    # "no non-whitespace character": a scan that stops at the first one, no stripped copy
    return pl.col(col).is_null() | ~pl.col(col).str.contains(r"\S")


def is_truncated() -> pl.Expr:
    # Generation stopped at max_tokens: the response has no final answer to prefer.
    return pl.col("finish_reason") == "length"


def is_over_budget(max_tokens: int, column: str = "train_tokens") -> pl.Expr:
    """Prompt + response tokens under the training tokenizer and chat template exceed the budget."""
    return pl.col(column) > max_tokens


def is_unscored() -> pl.Expr:
    # unverifiable / parse_error / timeout verdicts carry no score to rank by
    return pl.col("score").is_null()


def normalised_hash(df: pl.DataFrame, col: str = "text") -> pl.Series:
    """Per-row 64-bit hash of `normalised` text, rewriting only texts that need it.

    Most texts are usually already normal; a scan that only *finds* abnormal
    whitespace is ~4x cheaper than a rewrite, so the rewrite runs on that subset
    and its hashes are scattered back. Hashes are for in-process grouping only
    (Polars' hash is not stable across versions).
    """
    needs = df.select(pl.col(col).str.contains(r"\s\s|[^\S ]|^\s|\s$").fill_null(False))
    hashes = df[col].hash()
    rows = needs.to_series().arg_true()
    if len(rows):
        fixed = df[col].gather(rows).to_frame().select(normalised(col).hash()).to_series()
        hashes = hashes.scatter(rows, fixed)
    return hashes


def is_duplicate(keys: Sequence[str] = ("prompt_id", "origin"), order: str = "candidate_id",
                 group: str | None = None):
    """Same prompt and origin, same normalised text: keep the smallest surviving candidate_id.

    Duplicates are looked for within one origin, so a policy sample that happens
    to equal the reference does not remove the reference; `is_same_text` catches
    such a pair later. Returns a rule function. Texts are compared by a 64-bit
    hash of their normalised form (a collision would merge two texts of one
    prompt: ~1e-18 per prompt of 8 samples).

    ``group`` names a *sorted* integer prompt-group column (select's ``_g``):
    then rows are only compared with their neighbours in the same group, by
    shifting, which is linear and avoids a million-entry hash table. Only rows
    found to have a twin go through the (small) sort that picks the survivor.
    """
    def rule(df: pl.DataFrame) -> pl.Expr:
        others = [k for k in keys if k != group]
        narrow = df.select(pl.int_range(pl.len(), dtype=pl.UInt32).alias("_row"), alive().alias("_alive"),
                           *([pl.col(group)] if group else []), *[pl.col(k) for k in others])
        narrow = narrow.with_columns(normalised_hash(df).alias("_text")).filter("_alive")
        # one u64 per row for (other keys, text): the neighbour checks compare two numbers
        narrow = narrow.select("_row", *([group] if group else []),
                               pl.struct([*others, "_text"]).hash().alias("_key"))
        same = [*([group] if group else []), "_key"]
        width = narrow.group_by(group).len()["len"].max() if group and narrow.height else None
        if width is not None and width <= 32:
            def twin(j: int) -> pl.Expr:  # equal to the row j places earlier (same group, same key)
                return pl.all_horizontal([pl.col(c) == pl.col(c).shift(j) for c in same])
            checks = [twin(j) for j in range(1, width)]
            if checks:
                flagged = pl.any_horizontal([*checks, *[c.shift(-j) for j, c in enumerate(checks, 1)]])
                twins = narrow.filter(flagged.fill_null(False))
            else:  # one row per group: nothing can repeat
                twins = narrow.clear()
        else:
            twins = narrow.filter(pl.struct(same).is_duplicated())
        twins = twins.with_columns(df[order].gather(twins["_row"]).alias("_ord")).sort([*same, "_ord"])
        repeat = pl.all_horizontal([pl.col(c) == pl.col(c).shift(1) for c in same]).fill_null(False)
        dropped = twins.filter(repeat)["_row"]
        return pl.int_range(pl.len(), dtype=pl.UInt32).is_in(dropped.implode())
    return rule


def add_token_counts(df: pl.DataFrame, count_fn: Callable[[list[str], list[str]], list[int]],
                     column: str = "train_tokens") -> pl.DataFrame:
    """Add ``column`` = count_fn(prompts, responses), computed once per distinct (prompt, text).

    The tokenizer call is the only non-expression step (tokenizers batch in Rust);
    the budget check itself stays a column expression (`is_over_budget`).
    """
    distinct = df.select("prompt", "text").unique()
    counts = count_fn(distinct["prompt"].to_list(), distinct["text"].to_list())
    distinct = distinct.with_columns(pl.Series(column, counts, dtype=pl.Int64))
    return df.join(distinct, on=["prompt", "text"], how="left", nulls_equal=True)


def chat_token_counter(tokenizer) -> Callable[[list[str], list[str]], list[int]]:
    """A count_fn for `add_token_counts`: tokens of the user/assistant chat the trainer will see."""
    def count(prompts: list[str], responses: list[str]) -> list[int]:
        chats = [[{"role": "user", "content": p}, {"role": "assistant", "content": r}]
                 for p, r in zip(prompts, responses)]
        if getattr(tokenizer, "chat_template", None):
            ids = tokenizer.apply_chat_template(chats, tokenize=True)
            ids = ids["input_ids"] if isinstance(ids, dict) or hasattr(ids, "keys") else ids
        else:
            ids = tokenizer([p + r for p, r in zip(prompts, responses)])["input_ids"]
        return [len(x) for x in ids]
    return count


# -- pair rules (one row per prompt) ----------------------------------------------
def is_missing(side: str) -> pl.Expr:
    return pl.col(f"{side}_candidate_id").is_null()


def is_reference_incorrect() -> pl.Expr:
    """The reference is the chosen side but its own verdict says it is wrong."""
    return (pl.col("chosen_origin") == "reference") & (pl.col("chosen_correct") == False)  # noqa: E712


def is_uniform(by: str = "correct") -> pl.Expr:
    """The study's MATH* filter: the prompt's policy samples are all right or all wrong.

    ``by="correct"`` needs the per-prompt columns policy_known / policy_correct
    (counts of samples with a known verdict / a correct one); prompts with no
    known verdict are never uniform. ``by="score"``: every policy score is equal
    (policy_max == policy_min), for judges without correctness (reward models).
    """
    if by == "correct":
        return (pl.col("policy_known") > 0) & (
            (pl.col("policy_correct") == 0) | (pl.col("policy_correct") == pl.col("policy_known")))
    if by == "score":
        return pl.col("policy_max") == pl.col("policy_min")
    raise ValueError(f"uniform filter by {by!r}: use 'correct' or 'score'")


def is_tie() -> pl.Expr:
    # the same candidate on both sides is a tie too: its margin is 0
    return pl.col("margin") == 0


def is_inverted() -> pl.Expr:
    """The fixed chosen side (reference, best policy) scored below the rejected side."""
    return pl.col("margin") < 0


def is_below_margin(min_margin: float) -> pl.Expr:
    return pl.col("margin") < min_margin


def is_same_text(chosen: str = "chosen_text", rejected: str = "rejected_text") -> pl.Expr:
    """Chosen and rejected say the same thing up to whitespace (DPO would push both ways)."""
    return normalised(chosen) == normalised(rejected)
