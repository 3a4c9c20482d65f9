from __future__ import annotations

import polars as pl

from prefdata.importing.prompts import _normalised, sha16, with_prompt_ids
from prefdata.sources import prompt_id
from prefdata.sources.ids import normalise


def test_normalised_skips_only_texts_that_are_normal_already():
    texts = ["a  b", "x\ty", " lead", "trail ", "cafe\u0301", "plain text", "multi\nline", "\u3000wide", None]
    assert _normalised(pl.Series(texts)).to_list() == [None if t is None else normalise(t) for t in texts]


def test_prompt_ids_match_the_sources_both_ways():
    rows = pl.DataFrame({"id_text": ["What is  2+2?", "What is 2+2?\n", "Other", None, "Other"]})
    for distinct in (True, False):
        ids = with_prompt_ids(rows, "toy", distinct=distinct)["prompt_id"].to_list()
        assert ids == [prompt_id("What is 2+2?", "toy")] * 2 + [prompt_id("Other", "toy"), None,
                                                               prompt_id("Other", "toy")]


def test_sha16_is_sha256_of_the_joined_parts():
    import hashlib

    frame = pl.DataFrame({"a": ["x", None], "b": ["y", "z"]})
    expected = [hashlib.sha256(f"{a or ''}\x1f{b}".encode()).hexdigest()[:16] for a, b in frame.rows()]
    assert sha16(frame, "a", "b").to_list() == expected
