"""Near-duplicates on hand-made texts whose shingle Jaccard is derived by hand.

BASE has 20 distinct words, so 16 five-word shingles. Replacing the last word
changes 1 shingle: J = 15 / 17 = 0.882. Replacing word 10 changes the 5 shingles
that contain it: J = 11 / 21 = 0.524.
"""

import numpy as np
import polars as pl
import pytest

from prefdata.hygiene.minhash import jaccard, lsh_bands, near_duplicates

WORDS = [f"word{i}" for i in range(20)]
BASE = " ".join(WORDS)
LAST_CHANGED = " ".join(WORDS[:19] + ["other"])
MIDDLE_CHANGED = " ".join(WORDS[:10] + ["other"] + WORDS[11:])


def test_jaccard_is_exact():
    texts = pl.Series([BASE, LAST_CHANGED, MIDDLE_CHANGED, "Word0, WORD1 word2 word3 word4 ... word19"])
    got = jaccard(texts, np.array([0, 0, 1]), np.array([1, 2, 2]))
    assert got.tolist() == pytest.approx([15 / 17, 11 / 21, 10 / 22])


def test_pair_above_threshold_is_collapsed_to_the_first():
    assert near_duplicates(pl.Series([BASE, LAST_CHANGED])).tolist() == [False, True]
    assert near_duplicates(pl.Series([LAST_CHANGED, BASE])).tolist() == [False, True]


def test_pair_below_threshold_is_kept():
    assert near_duplicates(pl.Series([BASE, MIDDLE_CHANGED])).tolist() == [False, False]


def test_threshold_is_configurable_and_exact():
    pair = pl.Series([BASE, LAST_CHANGED])
    assert near_duplicates(pair, threshold=0.88).tolist() == [False, True]   # 0.882 >= 0.88
    assert near_duplicates(pair, threshold=0.89).tolist() == [False, False]  # 0.882 < 0.89
    assert near_duplicates(pl.Series([BASE, MIDDLE_CHANGED]), threshold=0.5).tolist() == [False, True]


def test_case_punctuation_and_spacing_do_not_matter_but_operators_do():
    texts = pl.Series(["What is (12 + 7) * 3?", "what is 12+7*3", "What is (12 - 7) * 3?", "What is (12 + 7) * 4?"])
    assert near_duplicates(texts).tolist() == [False, True, False, False]


def test_groups_are_transitive_and_keep_their_first_row():
    # BASE -> last word changed -> also the first word changed: neighbours are at 15/17 = 0.882,
    # but the two ends differ in their first and last shingle: 14/18 = 0.778 < 0.8
    chain = [BASE, LAST_CHANGED, " ".join(["first"] + WORDS[1:19] + ["other"])]
    texts = pl.Series(["unrelated text number one", *chain, "another unrelated text"])
    assert jaccard(texts, np.array([1]), np.array([3])).tolist() == pytest.approx([14 / 18])
    assert near_duplicates(texts).tolist() == [False, False, True, True, False]


def test_many_rows_and_lsh_recall():
    # 3,000 random 30-word texts, then a one-word-changed copy of each of the first 500 (J = 25/27):
    # LSH must propose every planted pair (recall at 0.926 with 16 bands of 3 is > 0.99999)
    rng = np.random.default_rng(0)
    words = rng.integers(0, 100_000, (3000, 30)).astype(str)
    copies = words[:500].copy()
    copies[:, -1] = "changed"
    texts = pl.Series([" ".join(w) for w in np.concatenate((words, copies))])
    dropped = near_duplicates(texts)
    assert dropped[3000:].all() and not dropped[:3000].any()


def test_lsh_bands_reach_the_recall_they_promise():
    for threshold in (0.5, 0.7, 0.8, 0.9, 1.0):
        bands, rows = lsh_bands(threshold)
        assert 1 - (1 - threshold ** rows) ** bands >= 0.9999 and bands * rows <= 128


def test_short_and_tiny_inputs():
    assert near_duplicates(pl.Series([], dtype=pl.String)).tolist() == []
    assert near_duplicates(pl.Series(["one"])).tolist() == [False]
    assert near_duplicates(pl.Series(["Hi there", "hi, there!", "hi where"])).tolist() == [False, True, False]
    with pytest.raises(ValueError, match="threshold"):
        near_duplicates(pl.Series(["a", "b"]), threshold=0)
