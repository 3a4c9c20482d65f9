"""Filters: reasons, precedence, counts; every rule is a column expression."""

from __future__ import annotations

import polars as pl
import pytest

from prefdata import filters as F


def frame(rows):
    cols = ("prompt_id", "origin", "candidate_id", "text", "finish_reason", "score", "correct")
    return pl.DataFrame([dict(zip(cols, r)) for r in rows], schema={
        "prompt_id": pl.String, "origin": pl.String, "candidate_id": pl.String, "text": pl.String,
        "finish_reason": pl.String, "score": pl.Float64, "correct": pl.Boolean})


RULES = [("empty", F.is_empty()), ("truncated", F.is_truncated()), ("unscored", F.is_unscored()),
         ("duplicate", F.is_duplicate())]


def test_reasons_precedence_and_counts():
    df = frame([
        ("p", "policy", "a", "  ", "length", None, None),          # empty wins over truncated/unscored
        ("p", "policy", "b", "x = 1", "length", 1.0, True),        # truncated
        ("p", "policy", "c", "x  =  1 ", "stop", 1.0, True),       # same as b, but b is gone: kept
        ("p", "policy", "d", "x = 1", "stop", 0.0, False),         # duplicate of c
        ("p", "other", "e", "x = 1", "stop", 0.0, False),          # other origin: not a duplicate
        ("q", "policy", "f", "x = 1", "stop", None, None),         # unscored
        ("q", "policy", "g", "x = 1", "stop", 1.0, True),          # other prompt: kept
    ])
    out = F.mark(df, RULES)
    assert out["drop_reason"].to_list() == ["empty", "truncated", None, "duplicate", None, "unscored", None]
    assert F.drop_counts(out) == {"duplicate": 1, "empty": 1, "truncated": 1, "unscored": 1}


def test_duplicate_keeps_smallest_surviving_id_regardless_of_row_order():
    df = frame([("p", "policy", cid, "same", "stop", 1.0, True) for cid in ("z", "m", "b", "k")])
    for shuffled in (df, df.reverse(), df.sample(fraction=1.0, shuffle=True, seed=3)):
        out = F.mark(shuffled, [("duplicate", F.is_duplicate())])
        assert out.filter(pl.col("drop_reason").is_null())["candidate_id"].to_list() == ["b"]


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_grouped_duplicate_rule_matches_the_plain_one(seed):
    """The shifted-compare path (sorted prompt groups, 16-hex ids) drops the same rows as the
    sort path, with twins far apart in a group and earlier drops sitting between them."""
    import numpy as np

    rng = np.random.default_rng(seed)
    n = 3000
    prompts = np.sort(rng.integers(0, 300, n))
    ids = [f"{x:016x}" for x in rng.integers(0, 2**63, n)]
    ids[5] = ids[4]  # two rows of one prompt with one id: the first row stays
    df = pl.DataFrame({"prompt_id": [f"p{x:04d}" for x in prompts], "_g": prompts.astype(np.uint32),
                       "origin": rng.choice(["policy", "other"], n), "candidate_id": ids,
                       "text": [f"t{x}" + "  " * int(s) for x, s in zip(rng.integers(0, 3, n), rng.random(n) < .3)],
                       "finish_reason": np.where(rng.random(n) < 0.2, "length", "stop")})
    rules = [("truncated", F.is_truncated())]
    plain = F.mark(df, rules + [("duplicate", F.is_duplicate())])
    grouped = F.mark(df, rules + [("duplicate", F.is_duplicate(keys=("_g", "origin"), group="_g"))])
    assert grouped["drop_reason"].to_list() == plain["drop_reason"].to_list()
    assert 0 < F.drop_counts(grouped)["duplicate"] < n
    # order keys handed in (as select does) instead of read from the column: same drops
    keyed = rules + [("duplicate", F.is_duplicate(keys=("_g", "origin"), group="_g",
                                                  order_by=F.order_keys(df["candidate_id"])))]
    numbers = F.first_reasons(df, keyed)
    assert [keyed[i][0] if i >= 0 else None for i in numbers] == grouped["drop_reason"].to_list()
    assert F.reason_counts(numbers, keyed) == F.drop_counts(grouped)
    # twins three rows apart, with only dropped rows between them
    few = df.head(4).with_columns(pl.lit(0, pl.UInt32).alias("_g"), pl.lit("policy").alias("origin"),
                                  pl.Series("text", ["same", "a", "b", "same "]),
                                  pl.Series("finish_reason", ["stop", "length", "length", "stop"]))
    out = F.mark(few, rules + [("duplicate", F.is_duplicate(keys=("_g", "origin"), group="_g"))])
    assert out["drop_reason"].to_list().count("duplicate") == 1


def test_mark_keeps_earlier_reasons_and_adds_new_ones():
    df = frame([("p", "policy", "a", "", "stop", 1.0, True), ("p", "policy", "b", "x", "length", 1.0, True),
                ("p", "policy", "c", "y", "stop", None, None)])
    once = F.mark(df, [("empty", F.is_empty())])
    twice = F.mark(once, [("unscored", F.is_unscored()), ("truncated", F.is_truncated())])
    assert twice["drop_reason"].to_list() == ["empty", "truncated", "unscored"]


def test_over_budget_uses_a_token_column():
    df = frame([("p", "policy", "a", "short", "stop", 1.0, True),
                ("p", "policy", "b", "long", "stop", 1.0, True)]).with_columns(train_tokens=pl.Series([10, 11]))
    out = F.mark(df, [("over_budget", F.is_over_budget(10))])
    assert out["drop_reason"].to_list() == [None, "over_budget"]


def test_add_token_counts_calls_the_counter_once_per_distinct_text():
    seen = []

    def count(prompts, responses):
        seen.append(len(prompts))
        return [len(p) + len(r) for p, r in zip(prompts, responses)]

    df = pl.DataFrame({"prompt": ["ab", "ab", "ab", "c"], "text": ["x", "x", "yyy", "x"]})
    out = F.add_token_counts(df, count)
    assert out["train_tokens"].to_list() == [3, 3, 5, 2] and seen == [3]


def test_chat_token_counter_uses_the_chat_template():
    from tokenizers import Regex, Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    vocab = {"[UNK]": 0, **{chr(c): c - 31 for c in range(32, 127)}}
    tok = Tokenizer(models.WordLevel(vocab, unk_token="[UNK]"))
    tok.pre_tokenizer = pre_tokenizers.Split(Regex(r"[\s\S]"), behavior="isolated")
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="[UNK]")
    tokenizer.chat_template = "{% for m in messages %}<{{ m['content'] }}>{% endfor %}"
    count = F.chat_token_counter(tokenizer)
    assert count(["ab", "q"], ["xyz", ""]) == [len("<ab><xyz>"), len("<q><>")]


@pytest.mark.parametrize("by, expected", [("correct", [True, True, False, False]),
                                          ("score", [True, False, False, True])])
def test_uniform(by, expected):
    stats = pl.DataFrame({"policy_known": [3, 3, 3, 0], "policy_correct": [3, 0, 1, 0],
                          "policy_max": [5.0, 2.0, 5.0, 1.0], "policy_min": [5.0, 1.0, 1.0, 1.0]})
    assert stats.select(F.is_uniform(by).alias("u"))["u"].to_list() == expected


def test_rules_are_expressions():
    # no row-wise Python: each rule is a lazy Polars expression over whole columns
    df = frame([("p", "policy", "a", "x", "stop", 1.0, True)]).with_columns(drop_reason=pl.lit(None, pl.String))
    for _, expr in RULES + [("u", F.is_uniform()), ("t", F.is_tie()), ("s", F.is_same_text())]:
        assert isinstance(expr if isinstance(expr, pl.Expr) else expr(df), pl.Expr)


@pytest.mark.parametrize("normal_share", [0.9, 0.1])  # one-line answers / multi-line responses
def test_text_keys_equal_a_full_rewrite_whichever_way_is_taken(normal_share):
    import numpy as np

    rng = np.random.default_rng(0)
    odd = ["a  b", " a b", "a\nb\n\nc", "\t", "   ", "a\u00a0b", "x\r\ny"]
    texts = [f"t{i} ok" if rng.random() < normal_share else odd[i % len(odd)] for i in range(10_000)]
    texts[3], texts[4] = None, ""
    df = pl.DataFrame({"text": texts}, schema={"text": pl.String})
    keys = F.text_keys(df)
    n = df.select(F.normalised())
    assert keys["_nhash"].to_list() == n.select(pl.col("text").hash()).to_series().to_list()
    assert keys["_blank"].to_list() == n.select(pl.col("text").is_null() | (pl.col("text") == "")).to_series().to_list()
    assert keys["_blank"].sum() > 2  # None, "" and the whitespace-only texts


def test_normalised_hash_equals_full_rewrite():
    df = pl.DataFrame({"text": ["a b", " a  b", "a\tb\n", "a\u00a0b", "ab", "", "a b "]})
    expected = df.select(F.normalised().hash()).to_series()
    assert F.normalised_hash(df).to_list() == expected.to_list()
    assert len(set(F.normalised_hash(df).to_list()[:4] + F.normalised_hash(df).to_list()[6:])) == 1
