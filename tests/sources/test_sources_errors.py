"""Every bad input gives one PrefdataError whose one-line message names the problem and the fix."""

from __future__ import annotations

import json
import time

import pytest

from prefdata.errors import PrefdataError
from prefdata.sources import SourceSpec, load_prompts

from .conftest import GSM_ROWS, write_jsonl


def fails(spec: SourceSpec) -> str:
    with pytest.raises(PrefdataError) as info:
        load_prompts(spec)
    message = str(info.value)
    assert "\n" not in message and info.value.fix, message
    return message


def test_missing_file(tmp_path):
    msg = fails(SourceSpec(str(tmp_path / "nope.jsonl")))
    assert "file not found" in msg and "nope.jsonl" in msg


def test_malformed_json_line_reports_line_number_and_file(tmp_path):
    path = tmp_path / "bad.jsonl"
    path.write_text('{"prompt": "a"}\n\n{"prompt": "b"}\n{"prompt": "c",,}\n{"prompt": "d"}\n')
    msg = fails(SourceSpec(str(path)))
    assert "line 4" in msg and str(path) in msg


def test_json_line_that_is_not_an_object(tmp_path):
    path = tmp_path / "arr.jsonl"
    path.write_text('{"prompt": "a"}\n["b"]\n')
    assert "line 2" in fails(SourceSpec(str(path)))


def test_malformed_json_array_reports_line(tmp_path):
    path = tmp_path / "bad.json"
    path.write_text('[\n{"prompt": "a"},\n{"prompt": }\n]\n')
    assert "line 3" in fails(SourceSpec(str(path)))


def test_mapped_column_missing_lists_columns(tmp_path):
    path = write_jsonl(tmp_path / "p.jsonl", [{"text": "a", "label": "1"}])
    msg = fails(SourceSpec(str(path), prompt_column="question"))
    assert "'question'" in msg and "text, label" in msg


def test_no_prompt_column_lists_columns(tmp_path):
    path = write_jsonl(tmp_path / "p.jsonl", [{"text": "a", "label": "1"}])
    msg = fails(SourceSpec(str(path)))
    assert "--prompt-column" in msg and "text, label" in msg


def test_nested_column_mapped_as_prompt(tmp_path):
    path = write_jsonl(tmp_path / "p.jsonl", [{"text": ["a", "b"]}])
    assert "not text" in fails(SourceSpec(str(path), prompt_column="text"))


def test_empty_prompt_names_the_row(tmp_path):
    path = tmp_path / "p.jsonl"
    # Line 4 holds the third row: the blank line 2 is skipped, not counted as a row.
    path.write_text('{"prompt": "a"}\n\n{"prompt": "b"}\n{"prompt": " \\n\\t"}\n{"prompt": null}\n')
    msg = fails(SourceSpec(str(path)))
    assert "line 4 of" in msg and "empty prompt" in msg and "2 rows" in msg


def test_empty_prompt_in_csv_names_the_row(tmp_path):
    path = tmp_path / "p.csv"
    path.write_text("prompt,answer\nhello,1\n,2\n")
    assert "row 2 (line 3)" in fails(SourceSpec(str(path)))


def test_non_utf8_reports_file_line_and_offset(tmp_path):
    path = tmp_path / "latin.jsonl"
    data = b'\xef\xbb\xbf{"prompt": "ok"}\n{"prompt": "caf\xe9"}\n'  # with a BOM
    path.write_bytes(data)
    msg = fails(SourceSpec(str(path)))
    offset = data.index(b"\xe9")  # 35: the BOM's 3 bytes count
    assert "UTF-8" in msg and "latin.jsonl" in msg and "line 2" in msg and f"byte offset {offset}" in msg


def test_unknown_format_name(tmp_path):
    path = write_jsonl(tmp_path / "p.jsonl", [{"prompt": "a"}])
    msg = fails(SourceSpec(str(path), format="xml"))
    assert "unknown format 'xml'" in msg and "jsonl" in msg


def test_unknown_extension(tmp_path):
    path = tmp_path / "p.txt"
    path.write_text('{"prompt": "a"}\n')
    assert "--format" in fails(SourceSpec(str(path)))
    # ...and naming the format reads it.
    assert load_prompts(SourceSpec(str(path), format="jsonl"))[1].rows_kept == 1


def test_empty_file(tmp_path):
    path = tmp_path / "e.jsonl"
    path.write_text("\n \n")
    assert "is empty" in fails(SourceSpec(str(path)))


def test_no_rows(tmp_path):
    path = tmp_path / "e.json"
    path.write_text("[]")
    assert "has no rows" in fails(SourceSpec(str(path)))


def test_missing_split_lists_available(tmp_path):
    write_jsonl(tmp_path / "ds" / "train.jsonl", GSM_ROWS)
    write_jsonl(tmp_path / "ds" / "test.jsonl", GSM_ROWS)
    msg = fails(SourceSpec(str(tmp_path / "ds"), split="validation"))
    assert "'validation'" in msg and "test, train" in msg


def test_missing_split_in_saved_dataset(tmp_path):
    datasets = pytest.importorskip("datasets")
    ds = datasets.Dataset.from_list(GSM_ROWS)
    datasets.DatasetDict({"train": ds, "dev": ds}).save_to_disk(str(tmp_path / "saved"))
    assert "train, dev" in fails(SourceSpec(str(tmp_path / "saved"), split="test"))


def test_uncached_hub_name_is_one_line_and_fast(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    started = time.perf_counter()
    msg = fails(SourceSpec("prefdata-test/no-such-dataset"))
    assert "prefdata-test/no-such-dataset" in msg and "hub" in msg
    assert time.perf_counter() - started < 20


def test_gsm8k_preset_needs_final_answer(tmp_path):
    rows = GSM_ROWS + [{"question": "No marker?", "answer": "just text"}]
    path = write_jsonl(tmp_path / "g.jsonl", rows)
    msg = fails(SourceSpec(str(path), preset="gsm8k"))
    assert "line 4" in msg and "####" in msg


def test_unknown_preset(tmp_path):
    path = write_jsonl(tmp_path / "g.jsonl", GSM_ROWS)
    assert "unknown preset" in fails(SourceSpec(str(path), preset="mmlu"))


@pytest.mark.parametrize("field", ["limit", "sample"])
def test_negative_limit_or_sample(tmp_path, field):
    path = write_jsonl(tmp_path / "g.jsonl", GSM_ROWS)
    assert f"--{field}" in fails(SourceSpec(str(path), **{field: -1}))


def test_bad_messages_column(tmp_path):
    path = write_jsonl(tmp_path / "c.jsonl", [{"messages": [1, 2]}])
    assert "role, content" in fails(SourceSpec(str(path)))


def test_bad_parquet(tmp_path):
    path = tmp_path / "x.parquet"
    path.write_text(json.dumps({"prompt": "a"}))
    assert "Parquet" in fails(SourceSpec(str(path)))


def test_a_line_longer_than_a_read_block_always_exits_with_our_error(tmp_path):
    # A threaded Arrow read that fails on an over-long line left tasks running,
    # and the process then often aborted at exit (SIGABRT, about half the runs
    # of this script) instead of exiting 2. The race shows only at exit, so run
    # several short processes.
    import subprocess
    import sys

    path = tmp_path / "long.jsonl"
    path.write_bytes(b"x" * (4 << 20))
    script = (
        "import sys\n"
        "from prefdata.errors import PrefdataError\n"
        "from prefdata.sources import SourceSpec, load_prompts\n"
        f"try: load_prompts(SourceSpec({str(path)!r}))\n"
        "except PrefdataError: sys.exit(2)\n"
    )
    codes = []
    for _ in range(10):
        pair = [subprocess.Popen([sys.executable, "-c", script], stderr=subprocess.DEVNULL) for _ in range(2)]
        codes += [p.wait(timeout=120) for p in pair]
    assert codes == [2] * len(codes), codes


def test_json_nesting_is_capped_but_brackets_in_text_are_not_nesting(tmp_path):
    from prefdata.sources.guards import MAX_JSON_DEPTH

    ok = "[" * (MAX_JSON_DEPTH - 1) + "]" * (MAX_JSON_DEPTH - 1)  # inside the row's object: depth 100
    deep = "[" * MAX_JSON_DEPTH + "]" * MAX_JSON_DEPTH  # depth 101
    brackets = json.dumps("[{" * 5000 + " \\\" [")  # text full of brackets and an escaped quote
    path = tmp_path / "p.jsonl"
    path.write_text(f'{{"prompt": "a", "x": {ok}}}\n{{"prompt": {brackets}}}\n')
    table, _ = load_prompts(SourceSpec(str(path)))
    assert table.num_rows == 2
    path.write_text(f'{{"prompt": "a"}}\n{{"prompt": "b", "x": {deep}}}\n')
    msg = fails(SourceSpec(str(path)))
    assert f"deeper than {MAX_JSON_DEPTH} levels (line 2)" in msg and str(path) in msg


@pytest.mark.parametrize("text,lone", [("\\ud83d\\ude00", False), ("\\\\ud800", False), ("\\ud800", True),
                                       ("\\udc00", True), ("x\\ud83dy", True), ("\\\\\\ud800", True)])
def test_lone_surrogate_escapes_are_refused_pairs_are_kept(tmp_path, text, lone):
    path = tmp_path / "s.jsonl"
    path.write_text('{"prompt": "a"}\n{"prompt": "' + text + '"}\n')
    if lone:
        msg = fails(SourceSpec(str(path)))
        assert "unpaired UTF-16 surrogate" in msg and "(line 2)" in msg
    else:
        table, _ = load_prompts(SourceSpec(str(path)))
        assert table.column("prompt").to_pylist()[1] == json.loads('"' + text + '"')


def test_shards_with_int_and_text_answers_load_as_text(tmp_path):
    """answer 72 in one shard and "73" in another: the column becomes text, as across rows of one file."""
    folder = tmp_path / "data"
    write_jsonl(folder / "train-00000-of-00002.jsonl", [{"prompt": "a", "answer": 72}])
    write_jsonl(folder / "train-00001-of-00002.jsonl", [{"prompt": "b", "answer": "73"}])
    table, _ = load_prompts(SourceSpec(str(folder)))
    assert table.column("reference_answer").to_pylist() == ["72", "73"]


def test_shards_whose_column_is_text_in_one_and_a_list_in_another_are_refused(tmp_path):
    folder = tmp_path / "data"
    write_jsonl(folder / "train-00000-of-00002.jsonl", [{"prompt": "a"}])
    write_jsonl(folder / "train-00001-of-00002.jsonl", [{"prompt": ["b", "c"]}])
    msg = fails(SourceSpec(str(folder)))
    assert "column 'prompt' is" in msg and "train-00000-of-00002.jsonl" in msg and "train-00001" in msg


def test_prompts_over_the_size_cap_are_dropped_and_counted(tmp_path):
    path = write_jsonl(tmp_path / "p.jsonl", [
        {"prompt": "short", "solution": "ok"},
        {"prompt": "é" * 600, "solution": "ok"},            # 1,200 UTF-8 bytes: over a 1,000-byte cap
        {"prompt": "fine", "solution": "s" * 1001},         # its reference is what is too large
        {"prompt": "x" * 990, "solution": "1234567890"},    # exactly 1,000 bytes: kept
    ])
    table, stats = load_prompts(SourceSpec(str(path), max_prompt_bytes=1000))
    assert table.column("prompt").to_pylist() == ["short", "x" * 990]
    assert stats.too_large == 2 and stats.rows_read == 4 and stats.rows_kept == 2
    assert table.column("source_index").to_pylist() == [0, 3]
    table, stats = load_prompts(SourceSpec(str(path)))  # the default cap (1 MB) keeps all
    assert stats.too_large == 0 and table.num_rows == 4
    chat = write_jsonl(tmp_path / "chat.jsonl", [  # chat messages count too, every turn
        {"messages": [{"role": "user", "content": "hi"}]},
        {"messages": [{"role": "system", "content": "s" * 600}, {"role": "user", "content": "u" * 600}]}])
    table, stats = load_prompts(SourceSpec(str(chat), max_prompt_bytes=1000))
    assert stats.too_large == 1 and table.column("prompt").to_pylist() == ["hi"]
    msg = fails(SourceSpec(str(path), max_prompt_bytes=3))
    assert "every row of" in msg and "max_prompt_bytes=3" in msg
