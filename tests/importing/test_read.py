from __future__ import annotations

import json

import pytest

from prefdata.errors import PrefdataError
from prefdata.importing.read import NONSTRING, file_sha256, read_import


def test_mixed_types_are_flagged_not_stringified(tmp_path):
    path = tmp_path / "m.json"
    path.write_text(json.dumps([{"prompt": "a", "response": "x"}, {"prompt": "b", "response": 5},
                                {"prompt": "c", "response": "y"}]))
    frame = read_import(str(path)).frame
    assert frame["response"].to_list() == ["x", None, "y"]
    assert frame[NONSTRING].to_list() == [False, True, False]


def test_message_contents_that_are_not_text_are_flagged(tmp_path):
    rows = [{"messages": [{"role": "user", "content": "hi"}], "response": "a"},
            {"messages": [{"role": "user", "content": [{"type": "text", "text": "hi"}]}], "response": "b"}]
    path = tmp_path / "c.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    frame = read_import(str(path)).frame
    assert frame[NONSTRING].to_list() == [False, True]


def test_malformed_json_is_reported_by_the_readers(tmp_path):
    path = tmp_path / "bad.jsonl"
    path.write_text('{"prompt": "a", "response": "x"}\n{"prompt": "b", "response": \n')
    with pytest.raises(PrefdataError, match="malformed JSON on line 2"):
        read_import(str(path))


def test_missing_file(tmp_path):
    with pytest.raises(PrefdataError, match="file not found"):
        read_import(str(tmp_path / "nope.jsonl"))


def test_folder_hash_covers_names_and_contents(tmp_path):
    (tmp_path / "d").mkdir()
    (tmp_path / "d" / "a").write_text("1")
    first = file_sha256(tmp_path / "d")
    (tmp_path / "d" / "a").rename(tmp_path / "d" / "b")
    assert file_sha256(tmp_path / "d") != first
