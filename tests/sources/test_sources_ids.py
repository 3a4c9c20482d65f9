"""prompt_id: hand-derived values, normalisation, dedup, sampling, limit."""

from __future__ import annotations

import hashlib

from prefdata.sources import SourceSpec, load_prompts, normalise, prompt_id

from .conftest import write_jsonl


def test_prompt_id_hand_derived():
    expected = hashlib.sha256(b"toy\nWhat is 2+2?").hexdigest()[:16]
    assert prompt_id("What is 2+2?", "toy") == expected
    assert prompt_id("What is 2+2?", "other") != expected


def test_normalisation():
    assert normalise("  a\t\tb\n\nc  ") == "a b c"
    assert normalise("caf\u0065\u0301") == "caf\u00e9"               # NFC
    assert normalise("x\u00a0\u3000y\u2028z") == "x y z"             # Unicode spaces
    assert normalise("Add 2+2") != normalise("add 2+2")              # case kept
    assert prompt_id(" What is\n2+2? ", "toy") == prompt_id("What is 2+2?", "toy")


def test_dedup_counts_and_keeps_first(tmp_path):
    rows = [{"prompt": "A"}, {"prompt": "B"}, {"prompt": " A "}, {"prompt": "B"}, {"prompt": "C"},
            {"prompt": "caf\u0065\u0301"}, {"prompt": "caf\u00e9"}]
    table, stats = load_prompts(SourceSpec(str(write_jsonl(tmp_path / "d.jsonl", rows))))
    assert (stats.rows_read, stats.duplicates_removed, stats.rows_kept) == (7, 3, 4)
    assert table.column("source_index").to_pylist() == [0, 1, 4, 5]
    assert table.column("prompt").to_pylist() == ["A", "B", "C", "caf\u0065\u0301"]  # text kept as written
    assert len(set(table.column("prompt_id").to_pylist())) == 4


def test_limit_and_sample(tmp_path):
    path = str(write_jsonl(tmp_path / "s.jsonl", [{"prompt": f"p{i}"} for i in range(50)]))
    first, _ = load_prompts(SourceSpec(path, limit=5))
    assert first.column("source_index").to_pylist() == [0, 1, 2, 3, 4]
    a, stats = load_prompts(SourceSpec(path, sample=10, seed=1))
    b, _ = load_prompts(SourceSpec(path, sample=10, seed=1))
    c, _ = load_prompts(SourceSpec(path, sample=10, seed=2))
    idx = a.column("source_index").to_pylist()
    assert a.equals(b) and idx == sorted(idx) and stats.rows_kept == 10
    assert idx != c.column("source_index").to_pylist()
    both, _ = load_prompts(SourceSpec(path, sample=10, seed=1, limit=3))
    assert both.column("source_index").to_pylist() == idx[:3]
    everything, _ = load_prompts(SourceSpec(path, sample=500))
    assert everything.num_rows == 50
