from __future__ import annotations

import pytest

from prefdata.errors import PrefdataError
from prefdata.importing.spec import ImportSpec, parse_map


def test_parse_map():
    assert parse_map("response=completion, prompt=question") == {"response": "completion", "prompt": "question"}
    assert parse_map(None) == {} and parse_map("") == {}


@pytest.mark.parametrize("text", ["response", "response=", "=x", "a=b,a=c"])
def test_parse_map_refuses_bad_items(text):
    with pytest.raises(PrefdataError):
        parse_map(text)


@pytest.mark.parametrize("kwargs, words", [
    ({"kind": "rows"}, "--as candidates or --as pairs"),
    ({"kind": "candidates", "origin": "reference"}, "--origin policy"),
    ({"kind": "candidates", "mapping": {"chosen": "x"}}, "unknown field"),
    ({"kind": "pairs"}, "--dataset NAME"),
    ({"kind": "pairs", "dataset": "../escape"}, "--dataset NAME"),
    ({"kind": "pairs", "dataset": "d", "marker": ""}, "--marker is empty"),
])
def test_spec_refuses(kwargs, words):
    with pytest.raises(PrefdataError, match=words.replace("(", r"\(")):
        ImportSpec("f.jsonl", **kwargs)
