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
  reference_incorrect, uniform, tie, inverted, below_margin, same_text (and
  contaminated, from `prefdata.hygiene`); their counts are prompts.
`prefdata.hygiene` also applies ``contaminated`` and ``near_duplicate`` to the
source's prompts (one row per prompt) before generation.

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

import numpy as np
import polars as pl
import pyarrow as pa

REASON = "drop_reason"
# A rule's test is an expression, or a function of the frame (as marked so far) that
# returns one: for tests that need a pre-pass, like finding duplicate groups.
Rule = tuple[str, "pl.Expr | Callable[[pl.DataFrame], pl.Expr]"]


def alive() -> pl.Expr:
    """Rows no earlier rule has dropped."""
    return pl.col(REASON).is_null()


def mark(df: pl.DataFrame, rules: Sequence[Rule]) -> pl.DataFrame:
    """Add/extend ``drop_reason`` with the first matching rule's reason, in rule order."""
    numbers = first_reasons(df, rules)
    return _with_reasons(df, numbers, [reason for reason, _ in rules])


def first_reasons(df: pl.DataFrame, rules: Sequence[Rule]) -> np.ndarray:
    """Per row, the index in ``rules`` of the first rule that drops it (-1: kept, or
    already dropped by an earlier `mark`, whose reason stays).

    Consecutive expression rules are evaluated together as one ``when/then`` chain
    (a rule number per row, in one pass); reasons stay numbers until `mark` writes
    them. A rule function first sees the frame marked by the rules before it.
    """
    names = [reason for reason, _ in rules]
    numbers = np.full(df.height, -1, np.int32)
    undecided = df[REASON].is_null().to_numpy() if REASON in df.columns else np.ones(df.height, bool)
    pending: list[tuple[int, pl.Expr]] = []

    def apply() -> None:
        if pending and df.height:
            chain = pl.when(pending[0][1]).then(pending[0][0])
            for number, expr in pending[1:]:
                chain = chain.when(expr).then(number)
            first = df.select(chain.otherwise(-1).cast(pl.Int32)).to_series().to_numpy()
            hit = undecided & (first >= 0)
            numbers[hit] = first[hit]
            undecided[hit] = False
        pending.clear()

    for number, (_, expr) in enumerate(rules):
        if callable(expr) and not isinstance(expr, pl.Expr):
            apply()
            expr = expr(_with_reasons(df, numbers, names))
        pending.append((number, expr))
    apply()
    return numbers


def _with_reasons(df: pl.DataFrame, numbers: np.ndarray, names: list[str]) -> pl.DataFrame:
    """``df`` with the reasons `first_reasons` numbered written into ``drop_reason``."""
    if REASON not in df.columns:
        df = df.with_columns(pl.lit(None, pl.String).alias(REASON))
    if not (numbers >= 0).any():
        return df
    reason = pl.Series(names, dtype=pl.String).gather(pl.Series(numbers).set(pl.Series(numbers < 0), None))
    return df.with_columns(pl.coalesce(df[REASON], reason).alias(REASON))


def drop_counts(df: pl.DataFrame) -> dict[str, int]:
    """Dropped rows per reason, largest count first (ties by name); reasons starting
    with "_" are bookkeeping (rows out of scope), not drops, and are not counted."""
    return _ranked(df[REASON].drop_nulls().value_counts().iter_rows())


def reason_counts(numbers: np.ndarray, rules: Sequence[Rule]) -> dict[str, int]:
    """`drop_counts` of the rows `first_reasons` numbered, without writing the reasons."""
    per_rule = np.bincount(numbers[numbers >= 0], minlength=len(rules))
    return _ranked((reason, int(n)) for (reason, _), n in zip(rules, per_rule) if n)


def _ranked(counts) -> dict[str, int]:
    total: dict[str, int] = {}
    for reason, n in counts:
        if not reason.startswith("_"):
            total[reason] = total.get(reason, 0) + n
    return dict(sorted(total.items(), key=lambda item: (-item[1], item[0])))


# -- candidate rules ------------------------------------------------------------
def normalised(col: str = "text") -> pl.Expr:
    """Text with outer whitespace stripped and inner runs of whitespace collapsed to one space.

    Same result as replacing ``\\s+`` with a space, but the pattern only matches
    where something changes (a run of 2+, or one non-space whitespace char), so
    text that is already normal is not rewritten: 3x faster on 1M short texts.
    """
    return pl.col(col).str.strip_chars().str.replace_all(r"\s\s+|[^\S ]", " ")


def is_empty(col: str = "text", blank: str | None = None) -> pl.Expr:
    """No non-whitespace character. ``blank`` names a precomputed column (`text_keys`'s ``_blank``)."""
    if blank is not None:
        return pl.col(blank)
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


# Whitespace that `normalised` may rewrite inside a text: a run of two spaces or any other ASCII
# space character. This regex (a byte class or a literal: the regex engine's prefilters) plus
# prefix/suffix checks scans 1M texts ~3x faster than one regex with anchors, and faster than
# Aho-Corasick over the six literals. Non-ASCII texts are all sent to the rewrite, which covers
# Unicode spaces; rewriting a text that is already normal changes nothing.
_ASCII_SPACE_MARKS = r"[\t\n\r\x0b\x0c]|  "


def needs_normalising(col: str = "text") -> pl.Expr:
    """True where `normalised` may change the text (a superset of the rows it changes)."""
    c = pl.col(col)
    return (c.str.contains(_ASCII_SPACE_MARKS) | c.str.starts_with(" ") | c.str.ends_with(" ")
            | (c.str.len_bytes() != c.str.len_chars())).fill_null(False)


_SAMPLE = 4096  # rows text_keys looks at to choose between its two ways
# Above this share of texts needing a rewrite, rewriting all is cheaper than finding them
# first: on 1M multi-line texts the scan costs about a quarter of a full rewrite.
_REWRITE_ALL_SHARE = 0.7


def text_keys(df: pl.DataFrame, col: str = "text") -> pl.DataFrame:
    """Per row: ``_nhash``, a 64-bit hash of the `normalised` text, and ``_blank``, no
    non-whitespace character (null counts as blank).

    Two ways to the same result, chosen by what the first rows look like. When most
    texts are already normal (one-line answers), only the rows `needs_normalising`
    finds are rewritten, and their hashes are scattered back. When most are not
    (multi-line responses: every newline is rewritten), finding them first costs more
    than it saves, so every text is rewritten in one pass. Passes run on Polars'
    streaming engine, which splits the column across cores. Hashes are for in-process
    grouping only (Polars' hash is not stable across versions).
    """
    text = pl.col(col)

    def keys(frame: pl.DataFrame) -> pl.DataFrame:
        return (frame.lazy().select(normalised(col).alias("_n"))
                .select(pl.col("_n").hash().alias("_nhash"),
                        (pl.col("_n").is_null() | (pl.col("_n").str.len_bytes() == 0)).alias("_blank"))
                .collect(engine="streaming"))

    if (df.head(_SAMPLE).select(needs_normalising(col).mean()).item() or 0) > _REWRITE_ALL_SHARE:
        return keys(df.select(col))
    facts = df.lazy().select(needs_normalising(col).alias("_fix"), text.hash().alias("_nhash"),
                             (text.is_null() | (text.str.len_bytes() == 0)).alias("_blank")
                             ).collect(engine="streaming")
    nhash, blank = facts["_nhash"], facts["_blank"]
    rows = facts["_fix"].arg_true()
    if len(rows):
        fixed = keys(df[col].gather(rows).to_frame())
        nhash, blank = nhash.scatter(rows, fixed["_nhash"]), blank.scatter(rows, fixed["_blank"])
    return pl.DataFrame([nhash.alias("_nhash"), blank.alias("_blank")])


def normalised_hash(df: pl.DataFrame, col: str = "text") -> pl.Series:
    """Per-row 64-bit hash of `normalised` text (see `text_keys`)."""
    return text_keys(df, col)["_nhash"]


def segments(g: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Start index and length of each run of equal values in a sorted array."""
    if len(g) == 0:
        return np.zeros(0, np.int64), np.zeros(0, np.int64)
    starts = np.flatnonzero(np.concatenate(([True], g[1:] != g[:-1])))
    return starts, np.diff(np.append(starts, len(g)))


_MIX = np.uint64(0x9E3779B97F4A7C15)  # odd 64-bit constant: mixes a second key into a hash


def is_duplicate(keys: Sequence[str] = ("prompt_id", "origin"), order: str = "candidate_id",
                 group: str | None = None, text_hash: str | None = None,
                 order_by: tuple[np.ndarray, ...] | None = None):
    """Same prompt and origin, same normalised text: keep the smallest surviving candidate_id.

    Duplicates are looked for within one origin, so a policy sample that happens
    to equal the reference does not remove the reference; `is_same_text` catches
    such a pair later. Returns a rule function. Texts are compared by a 64-bit
    hash of their normalised form (a collision would merge two texts of one
    prompt: ~1e-18 per prompt of 8 samples); ``text_hash`` names a precomputed
    one (`text_keys`'s ``_nhash``).

    ``group`` names a *sorted* integer prompt-group column (select's ``_g``):
    then rows are only compared with their neighbours in the same group, by
    shifted array compares, which is linear and needs neither a hash table nor
    a sort; the survivor of each set of twins is found the same way, by
    comparing `order_keys` (``order_by``: those of the ``order`` column, one per
    row of the frame the rule will see, when the caller has them already).
    """
    def rule(df: pl.DataFrame) -> pl.Expr:
        others = [k for k in keys if k != group]
        live = df.select(alive()).to_series().to_numpy()
        key = (df[text_hash] if text_hash else normalised_hash(df)).to_numpy()
        if others:  # one u64 per row for (other keys, text)
            other = df[others[0]].hash() if len(others) == 1 else df.select(pl.struct(others).hash()).to_series()
            key = key ^ (other.to_numpy() * _MIX)
        dropped = np.zeros(df.height, bool)
        g = df[group].to_numpy() if group and df.height else None
        width = int(segments(g)[1].max()) if g is not None else 0  # the largest group
        if g is not None and width <= 32:
            # a dropped row gets a group of its own, so it is nobody's twin
            g = np.where(live, g.astype(np.int64), -1 - np.arange(df.height))
            twins = np.flatnonzero(_neighbour_twins(key, g, width))
            ranks = tuple(k[twins] for k in order_by) if order_by else order_keys(df[order].gather(twins))
            dropped[twins[_later_copies(key[twins], g[twins], ranks)]] = True
            return pl.lit(pl.Series("_duplicate", dropped))
        rows = np.flatnonzero(live)
        groups = g[rows] if g is not None else np.zeros(len(rows), np.int64)
        frame = pl.DataFrame({"_row": rows, "_k": key[rows], "_g": groups,
                              "_ord": df[order].gather(rows)}).sort("_g", "_k", "_ord")
        repeat = ((pl.col("_g") == pl.col("_g").shift(1)) & (pl.col("_k") == pl.col("_k").shift(1))).fill_null(False)
        dropped[frame.filter(repeat)["_row"].to_numpy()] = True
        return pl.lit(pl.Series("_duplicate", dropped))
    return rule


def _equal_at_distance(key: np.ndarray, g: np.ndarray, width: int):
    """For each distance j < ``width``: the mask over rows j.. whose (g, key) equals the
    row j places earlier (a group's rows lie within ``width`` consecutive rows)."""
    for j in range(1, width):
        yield j, (key[j:] == key[:-j]) & (g[j:] == g[:-j])


def _neighbour_twins(key: np.ndarray, g: np.ndarray, width: int) -> np.ndarray:
    """Rows whose key equals another row's key in the same group."""
    twin = np.zeros(len(key), bool)
    for j, same in _equal_at_distance(key, g, width):
        twin[j:] |= same
        twin[:-j] |= same
    return twin


def _later_copies(key: np.ndarray, g: np.ndarray, order: tuple[np.ndarray, ...]) -> np.ndarray:
    """Of each set of rows with equal (g, key), all but the one first in ``order``
    (then in position): every pair of the set is compared once, at its distance."""
    drop = np.zeros(len(key), bool)
    width = int(segments(g)[1].max()) if len(g) else 0
    for j, same in _equal_at_distance(key, g, width):
        later_first = _precedes(tuple(k[j:] for k in order), tuple(k[:-j] for k in order))
        drop[:-j] |= same & later_first
        drop[j:] |= same & ~later_first
    return drop


def _precedes(a: tuple[np.ndarray, ...], b: tuple[np.ndarray, ...]) -> np.ndarray:
    """Elementwise: key tuple ``a`` comes strictly before ``b`` (lexicographic)."""
    before, equal = np.zeros(len(a[0]), bool), np.ones(len(a[0]), bool)
    for x, y in zip(a, b):
        before |= equal & (x < y)
        equal &= x == y
    return before


def order_keys(ids: pl.Series) -> tuple[np.ndarray, ...]:
    """Arrays whose lexicographic order (first, then second, ...) is the ids' string order.

    The schema's ids are 16 ASCII bytes (sha256[:16] hex): read straight from the Arrow
    buffer as two big-endian u64 (byte order = string order, no parsing). Other ids:
    their dense rank.
    """
    lengths = ids.str.len_bytes()
    arrow = ids.to_arrow() if len(ids) and ids.null_count() == 0 and (lengths == 16).all() else None
    if arrow is not None and pa.types.is_large_string(arrow.type):
        offsets = np.frombuffer(arrow.buffers()[1], np.int64)[arrow.offset:arrow.offset + len(arrow) + 1]
        data = np.frombuffer(arrow.buffers()[2], np.uint8)[offsets[0]:offsets[-1]]
        words = data.view(">u8").reshape(len(ids), 2)
        return words[:, 0].astype(np.uint64), words[:, 1].astype(np.uint64)
    return (ids.rank("dense").to_numpy().astype(np.uint64),)


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


def is_same_text(chosen: str = "chosen_text", rejected: str = "rejected_text",
                 hashes: tuple[str, str] | None = None):
    """Chosen and rejected say the same thing up to whitespace (DPO would push both ways).

    With ``hashes`` (columns of `text_keys` hashes of each side) this is a rule function:
    only pairs whose hashes agree have their texts compared, so a hash collision never
    drops a pair and no text is normalised for the rest.
    """
    if hashes is None:
        return normalised(chosen) == normalised(rejected)

    def rule(df: pl.DataFrame) -> pl.Expr:
        rows = df.select((pl.col(hashes[0]) == pl.col(hashes[1])).fill_null(False)).to_series().arg_true()
        same = np.zeros(df.height, bool)
        if len(rows):
            sub = df.select(chosen, rejected)[rows]
            equal = sub.select((normalised(chosen) == normalised(rejected)).fill_null(False)).to_series()
            same[rows.to_numpy()[equal.to_numpy()]] = True
        return pl.lit(pl.Series("_same_text", same))
    return rule
