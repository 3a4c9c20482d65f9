"""N-gram decontamination on hand-made items (N = 13 unless a test says otherwise)."""

import polars as pl
import pytest

from prefdata.hygiene.decontaminate import NgramIndex

# 20 words; any 13 consecutive of them are an n-gram of the item
ITEM = ("Natalia sold clips to forty eight of her friends in April and then she sold half as many "
        "clips in May")
WORDS = ITEM.split()


def hits(prompts: list[str], items: list[str] = [ITEM], n: int = 13) -> list[bool]:
    return NgramIndex.from_texts(pl.Series(items), n).hits(pl.Series(prompts)).tolist()


def test_exact_overlap_is_found():
    assert hits([ITEM, "Question: " + " ".join(WORDS[3:16]) + " - how many?"]) == [True, True]


def test_overlap_after_normalisation_is_found():
    messy = "NATALIA   sold clips, to forty-eight of her FRIENDS in\nApril... and then she"
    assert hits([messy]) == [True]


def test_overlap_one_word_under_n_is_kept():
    twelve = " ".join(WORDS[:12])
    thirteen = " ".join(WORDS[:13])
    assert hits([twelve, thirteen, "x " + twelve + " x"]) == [False, True, False]


def test_overlap_split_by_a_word_is_kept():
    # 13 of the item's words, but not consecutive: no shared 13-gram
    broken = " ".join(WORDS[:7]) + " NOT " + " ".join(WORDS[7:13])
    assert hits([broken]) == [False]


def test_n_is_configurable_and_short_items_are_counted():
    index = NgramIndex.from_texts(pl.Series([ITEM, "too short to hold an n-gram"]), 5)
    assert index.items == 2 and index.short_items == 0
    assert index.hits(pl.Series(["she sold half as many", "she sold half as"])).tolist() == [True, False]
    index = NgramIndex.from_texts(pl.Series([ITEM, "too short to hold an n-gram"]), 13)
    assert index.short_items == 1 and len(index.hashes) == len(WORDS) - 13 + 1


def test_no_items_means_no_hits():
    assert NgramIndex.from_texts(pl.Series([], dtype=pl.String)).hits(pl.Series([ITEM])).tolist() == [False]


@pytest.mark.parametrize("rows", [1, 70_000])
def test_hits_land_on_the_right_rows_across_chunks(rows):
    prompts = ["unrelated words only here"] * rows + [ITEM]
    assert hits(prompts)[-2:] == [False, True]
