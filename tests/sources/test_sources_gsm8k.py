"""The GSM8K files (MIT licensed), read in place from ../shared/data/gsm8k beside the checkout.

Set PREFDATA_GSM8K_DIR to point elsewhere. Where neither is there (a CI machine without the
data), the same tests run on tests/data/gsm8k, a small hand-written file in GSM8K's format,
rather than skipping. Every expectation is re-derived here from the raw file with the json
module, independently of the loader.
"""

from __future__ import annotations

import json
import shutil
import time

import pytest

from prefdata.sources import SourceSpec, load_prompts

from .conftest import gsm8k_dir, gsm8k_sizes, write_jsonl

GSM8K = gsm8k_dir()
SIZES = gsm8k_sizes(GSM8K)


def raw_rows(split: str) -> list[dict]:
    lines = (GSM8K / f"{split}.jsonl").read_text(encoding="utf-8").splitlines()
    return [json.loads(line) for line in lines if line.strip()]


@pytest.mark.parametrize("split", ["train", "test"])
def test_rows_and_columns_match_the_file(split):
    rows = raw_rows(split)
    table, stats = load_prompts(SourceSpec(str(GSM8K), split=split))
    assert (stats.rows_read, stats.duplicates_removed, stats.rows_kept) == (len(rows), 0, len(rows))
    assert (stats.source, stats.split, stats.preset) == ("gsm8k", split, "gsm8k")
    assert table.column("prompt").to_pylist() == [r["question"] for r in rows]
    assert table.column("reference_solution").to_pylist() == [r["answer"] for r in rows]
    # Independent extraction: the text after the last "####", stripped, commas removed.
    expected = [r["answer"].rsplit("####", 1)[1].strip().replace(",", "") for r in rows]
    assert table.column("reference_answer").to_pylist() == expected
    assert all(a.lstrip("-").isdigit() for a in expected)


def test_known_sizes():
    # The published GSM8K sizes (or the stand-in's); if the files are replaced this says so plainly.
    print(f"GSM8K files: {GSM8K}")
    assert (len(raw_rows("train")), len(raw_rows("test"))) == SIZES


def test_ids_stable_across_loads_paths_and_moves(tmp_path):
    first, _ = load_prompts(SourceSpec(str(GSM8K), split="test"))
    again, _ = load_prompts(SourceSpec(str(GSM8K / "test.jsonl")))
    moved = tmp_path / "elsewhere" / "gsm8k"
    moved.mkdir(parents=True)
    shutil.copy(GSM8K / "test.jsonl", moved / "test.jsonl")
    after_move, _ = load_prompts(SourceSpec(str(moved), split="test"))
    ids = first.column("prompt_id").to_pylist()
    assert ids == again.column("prompt_id").to_pylist() == after_move.column("prompt_id").to_pylist()
    assert len(set(ids)) == len(ids) and all(len(i) == 16 for i in ids)


def test_train_and_test_ids_do_not_collide():
    train, _ = load_prompts(SourceSpec(str(GSM8K), split="train"))
    test, _ = load_prompts(SourceSpec(str(GSM8K), split="test"))
    assert set(train.column("prompt_id").to_pylist()).isdisjoint(test.column("prompt_id").to_pylist())


def test_limit_and_seeded_sample():
    full, _ = load_prompts(SourceSpec(str(GSM8K), split="test"))
    head, _ = load_prompts(SourceSpec(str(GSM8K), split="test", limit=10))
    assert head.equals(full.slice(0, 10))
    k = min(100, SIZES[0] // 2)
    a, _ = load_prompts(SourceSpec(str(GSM8K), split="train", sample=k, seed=7))
    b, _ = load_prompts(SourceSpec(str(GSM8K), split="train", sample=k, seed=7))
    c, _ = load_prompts(SourceSpec(str(GSM8K), split="train", sample=k, seed=8))
    assert a.equals(b) and a.num_rows == k
    assert a.column("prompt_id").to_pylist() != c.column("prompt_id").to_pylist()


def test_dedup_on_gsm8k_rows(tmp_path):
    rows = raw_rows("test")
    # 5 exact copies and 3 whitespace variants of earlier questions.
    dupes = rows[:5] + [{**r, "question": "  " + r["question"].replace(" ", "\n", 1)} for r in rows[5:8]]
    path = write_jsonl(tmp_path / "gsm8k" / "test.jsonl", rows + dupes)
    table, stats = load_prompts(SourceSpec(str(path)))
    assert (stats.rows_read, stats.duplicates_removed, stats.rows_kept) == (len(rows) + 8, 8, len(rows))
    assert table.column("source_index").to_pylist() == list(range(len(rows)))


def test_train_loads_well_under_a_second():
    load_prompts(SourceSpec(str(GSM8K), split="test"))  # warm the lazy imports
    started = time.perf_counter()
    _, stats = load_prompts(SourceSpec(str(GSM8K), split="train"))
    elapsed = time.perf_counter() - started
    assert stats.rows_kept == SIZES[0] and elapsed < 1.0, elapsed
