"""The same rows read from every supported format give the same prompts table."""

from __future__ import annotations

import json

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from prefdata.schemas import schema
from prefdata.sources import SourceSpec, load_prompts

from .conftest import GSM_ROWS, write_jsonl

ROWS = [{"prompt": "What is 2+2?", "answer": "4"},
        {"prompt": "Name a prime above 10.", "answer": "11"},
        {"prompt": "Write 1000 with a comma.", "answer": "1,000"}]


def load(path, **kw):
    return load_prompts(SourceSpec(str(path), **kw))


def test_jsonl_plain(tmp_path):
    table, stats = load(write_jsonl(tmp_path / "toy.jsonl", ROWS))
    assert table.schema == schema("prompts")
    assert table.column("prompt").to_pylist() == [r["prompt"] for r in ROWS]
    assert table.column("reference_answer").to_pylist() == ["4", "11", "1,000"]  # plain: kept as written
    assert table.column("source_index").to_pylist() == [0, 1, 2]
    assert set(table.column("source").to_pylist()) == {"toy"}
    assert set(table.column("split").to_pylist()) == {"train"}
    assert (stats.format, stats.preset, stats.rows_read, stats.rows_kept) == ("jsonl", "plain", 3, 3)


@pytest.mark.parametrize("writer", ["json", "json_wrapped", "json_columns", "json_is_jsonl",
                                    "parquet", "csv", "tsv"])
def test_every_format_matches_jsonl(tmp_path, writer):
    expected, _ = load(write_jsonl(tmp_path / "a" / "toy.jsonl", ROWS))
    d = tmp_path / "b"
    d.mkdir()
    if writer == "json":
        path = d / "toy.json"
        path.write_text(json.dumps(ROWS))
    elif writer == "json_wrapped":
        path = d / "toy.json"
        path.write_text(json.dumps({"data": ROWS}))
    elif writer == "json_columns":
        path = d / "toy.json"
        path.write_text(json.dumps({k: [r[k] for r in ROWS] for k in ROWS[0]}))
    elif writer == "json_is_jsonl":
        path = d / "toy.json"
        path.write_text("\n".join(json.dumps(r) for r in ROWS))
    elif writer == "parquet":
        path = d / "toy.parquet"
        pq.write_table(pa.Table.from_pylist(ROWS), path)
    else:
        sep = "," if writer == "csv" else "\t"
        path = d / f"toy.{writer}"
        lines = [sep.join(ROWS[0])] + [sep.join(json.dumps(v) for v in r.values()) for r in ROWS]
        path.write_text("\n".join(lines) + "\n")
    table, _ = load(path)
    assert table.equals(expected)  # same ids too: the source name is the stem "toy"


def test_csv_keeps_text_as_written(tmp_path):
    path = tmp_path / "p.csv"
    path.write_text('prompt,answer\n"Say ""hi"", then count",007\n')
    table, _ = load(path)
    assert table.to_pylist()[0]["prompt"] == 'Say "hi", then count'
    assert table.to_pylist()[0]["reference_answer"] == "007"


def test_jsonl_mixed_types_and_bom(tmp_path):
    path = tmp_path / "m.jsonl"
    path.write_bytes(b'\xef\xbb\xbf{"prompt": "a", "answer": 72}\n{"prompt": "b", "answer": "x"}\n'
                     b'{"prompt": "c", "answer": 1.5, "extra": {"k": 1}}\n')
    table, _ = load(path)
    assert table.column("reference_answer").to_pylist() == ["72", "x", "1.5"]


def test_numbers_become_text(tmp_path):
    table, _ = load(write_jsonl(tmp_path / "n.jsonl", [{"prompt": 12345, "answer": 3}]))
    assert table.to_pylist()[0]["prompt"] == "12345"
    assert table.to_pylist()[0]["reference_answer"] == "3"


def test_directory_split_picks_file(tmp_path):
    write_jsonl(tmp_path / "tiny" / "train.jsonl", ROWS)
    write_jsonl(tmp_path / "tiny" / "test.jsonl", ROWS[:1])
    train, tr = load(tmp_path / "tiny")
    test, te = load(tmp_path / "tiny", split="test")
    assert (tr.rows_kept, te.rows_kept) == (3, 1)
    assert set(test.column("split").to_pylist()) == {"test"}
    assert set(test.column("source").to_pylist()) == {"tiny"}


def test_file_named_like_a_split_is_that_split_of_its_directory(tmp_path):
    write_jsonl(tmp_path / "tiny" / "test.jsonl", ROWS)
    by_file, stats = load(tmp_path / "tiny" / "test.jsonl")
    by_dir, _ = load(tmp_path / "tiny", split="test")
    assert (stats.source, stats.split) == ("tiny", "test")
    assert by_file.equals(by_dir)


def test_hub_style_sharded_parquet_folder(tmp_path):
    data = tmp_path / "tiny" / "data"
    data.mkdir(parents=True)
    pq.write_table(pa.Table.from_pylist(ROWS[:2]), data / "train-00000-of-00002.parquet")
    pq.write_table(pa.Table.from_pylist(ROWS[2:]), data / "train-00001-of-00002.parquet")
    pq.write_table(pa.Table.from_pylist(ROWS[:1]), data / "test-00000-of-00001.parquet")
    (tmp_path / "tiny" / "README.md").write_text("# tiny\n")
    table, stats = load(tmp_path / "tiny")
    assert table.column("prompt").to_pylist() == [r["prompt"] for r in ROWS]
    assert (stats.source, stats.format, stats.rows_read) == ("tiny", "parquet", 3)


def test_save_to_disk_dataset_and_dict(tmp_path):
    datasets = pytest.importorskip("datasets")
    ds = datasets.Dataset.from_list(GSM_ROWS).select([2, 0])  # an indices mapping must be honoured
    ds.save_to_disk(str(tmp_path / "one"))
    datasets.DatasetDict({"train": ds, "test": ds.select([0])}).save_to_disk(str(tmp_path / "dd"))
    one, s1 = load(tmp_path / "one")
    test, s2 = load(tmp_path / "dd", split="test")
    assert one.column("prompt").to_pylist() == [GSM_ROWS[2]["question"], GSM_ROWS[0]["question"]]
    assert test.column("reference_answer").to_pylist() == ["-2"]
    assert (s1.format, s1.preset, s2.split) == ("hf", "gsm8k", "test")


def test_name_override_changes_ids(tmp_path):
    path = write_jsonl(tmp_path / "toy.jsonl", ROWS)
    a, _ = load(path)
    b, stats = load(path, name="other")
    assert stats.source == "other"
    assert set(a.column("prompt_id").to_pylist()).isdisjoint(b.column("prompt_id").to_pylist())


def test_offset_and_limit_give_disjoint_slices_in_source_order(tmp_path):
    path = write_jsonl(tmp_path / "toy.jsonl", ROWS)
    slices = [load(path, offset=k, limit=1)[0].column("source_index").to_pylist() for k in range(4)]
    assert slices == [[0], [1], [2], []]
    assert load(path, offset=1)[0].column("prompt").to_pylist() == [r["prompt"] for r in ROWS[1:]]
