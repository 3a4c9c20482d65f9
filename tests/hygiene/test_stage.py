"""Hygiene in the build: the ingest step's drops, held-out checks, counts in summary, info and
card; the chosen-response check at select; settings errors. Hand-made prompts, no model work."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import polars as pl
import pytest

from prefdata.build import format_summary, step_finish
from prefdata.build_state import BuildState
from prefdata.config import build_config, scenario_pipeline, set_path
from prefdata.errors import PrefdataError
from prefdata.hygiene.decontaminate import NgramIndex
from prefdata.hygiene.stage import load_eval_sets, prompt_text
from prefdata.ingest import step_ingest
from prefdata.info import format_info, workspace_info
from prefdata.select import SelectConfig, select_pairs
from prefdata.store import Workspace

EVAL_ITEM = "A robe takes two bolts of blue fiber and half that much white fiber so how many bolts in total"
HELDOUT = "Janet's ducks lay sixteen eggs per day and she eats three for breakfast every single morning"
TRAIN = [
    "A ROBE takes two bolts of blue fiber, and half that much white fiber! So: how many?",  # 0 eval overlap
    "Tom reads twenty pages of a long book every evening before he goes to sleep at night",  # 1 clean
    "tom reads twenty pages of a long book every evening, before he goes to sleep at night.",  # 2 near-dup of 1
    "Her ducks lay sixteen eggs per day and she eats three for breakfast every single morning",  # 3 held-out
    "Tom reads thirty pages of a short book every morning before he goes to work by bus",  # 4 clean (J < 0.8)
    "A robe takes two bolts of blue fiber and half that much silk, said the tailor",  # 5 12 words shared: kept
]


def write_jsonl(path: Path, prompts: list[str]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps({"question": q, "answer": "#### 1"}) + "\n" for q in prompts))
    return path


@pytest.fixture
def source(tmp_path) -> Path:
    write_jsonl(tmp_path / "src" / "train.jsonl", TRAIN)
    write_jsonl(tmp_path / "src" / "test.jsonl", [HELDOUT])
    write_jsonl(tmp_path / "evals" / "test.jsonl", [EVAL_ITEM])
    return tmp_path


def ingest(tmp_path: Path, **settings) -> BuildState:
    raw = scenario_pipeline(2)
    set_path(raw, "source.path_or_name", str(tmp_path / "src"))
    for key, value in settings.items():
        set_path(raw, key, value)
    ws = Workspace.create(tmp_path / "ws")
    with ws.writer():
        state = step_ingest(BuildState(cfg=build_config(raw), ws=ws, log=lambda _: None))
        step_finish(state)
    return state


def test_contaminated_and_near_duplicate_prompts_are_dropped_before_limit(source):
    state = ingest(source, **{"select.decontaminate": [str(source / "evals")], "source.limit": 3})
    assert state.prompts.column("prompt").to_pylist() == [TRAIN[1], TRAIN[4], TRAIN[5]]
    p = state.summary["prompts"]
    assert (p["rows_read"], p["contaminated"], p["near_duplicate"], p["rows_kept"]) == (6, 2, 1, 3)
    h = state.summary["hygiene"]
    assert h["decontaminate"] == [{"source": "evals", "path": str(source / "evals"), "split": "test", "items": 1}]
    assert (h["n"], h["heldout_items"], h["near_duplicate_threshold"]) == (13, 1, 0.8)
    ws = state.ws
    assert sorted(ws.read_polars("prompts")["prompt"].to_list()) == sorted([TRAIN[1], TRAIN[4], TRAIN[5], HELDOUT])
    assert "2 contaminated, 1 near-duplicates removed" in format_summary({**state.summary, "judging": {
        "judge": "verifier", "candidates_in_build": 0}, "pairs": {}})
    [entry] = workspace_info(ws)["hygiene"]
    assert entry["evaluation_sets"] == "evals/test (1 items), held-out prompts (1)"
    assert (entry["contaminated_prompts"], entry["near_duplicates"], entry["ngram_words"]) == (2, 1, 13)
    assert "contaminated_prompts=2" in format_info(workspace_info(ws))
    card = (ws.root / "README.md").read_text()
    assert "## Data hygiene" in card and "| scenario2 | evals/test (1 items), held-out prompts (1) | 13 | 2 |" in card


def test_heldout_prompts_are_always_checked_and_settings_apply(source):
    state = ingest(source, **{"select.near_duplicates": False, "select.decontaminate_n": 6})
    # no evaluation set named: only the held-out prompt (n = 6: prompt 3 shares 15 words with it)
    assert state.summary["prompts"]["contaminated"] == 1
    assert state.summary["prompts"]["near_duplicate"] == 0 and TRAIN[2] in state.prompts.column("prompt").to_pylist()
    assert TRAIN[3] not in state.prompts.column("prompt").to_pylist()


def test_a_build_on_the_test_split_is_not_contaminated_by_its_own_prompts(source):
    ingest(source)  # stores the held-out prompt
    state = ingest(source, **{"source.split": "test"})
    assert state.prompts.column("prompt").to_pylist() == [HELDOUT]
    assert state.summary["prompts"]["contaminated"] == 0


def test_eval_set_as_a_table_with_its_own_columns(source, tmp_path):
    path = tmp_path / "mmlu.jsonl"
    path.write_text(json.dumps({"problem": EVAL_ITEM}) + "\n")
    state = ingest(source, **{"select.decontaminate": [{"path_or_name": str(path), "prompt_column": "problem"}]})
    assert state.summary["prompts"]["contaminated"] == 2  # the eval overlap and the held-out one


def test_eval_folder_without_a_test_split_says_how_to_name_one(source):
    with pytest.raises(PrefdataError, match=r'available splits: test, train; name one with \{path_or_name = ".*src", '
                                            r'split = "NAME"\} in select.decontaminate'):
        load_eval_sets([{"path_or_name": str(source / "src"), "split": "dev"}])


def test_chat_prompts_are_checked_on_all_their_turns():
    prompts = pl.DataFrame({"prompt": ["last turn", "plain"], "messages": [
        [{"role": "user", "content": EVAL_ITEM}, {"role": "user", "content": "last turn"}], None]})
    assert prompt_text(prompts).to_list() == [EVAL_ITEM + "\nlast turn", "plain"]


def test_chosen_responses_are_checked_at_select_when_asked():
    index = NgramIndex.from_texts(pl.Series([EVAL_ITEM]), 13)
    leak = EVAL_ITEM.upper() + " #### 3"
    cands = pl.DataFrame({"prompt_id": ["p", "p", "q", "q"], "prompt": ["x", "x", "y", "y"],
                          "judge_name": ["verifier"] * 4, "candidate_id": ["a", "b", "c", "d"],
                          "origin": ["policy"] * 4, "score": [1.0, 0.0, 1.0, 0.0],
                          "correct": [True, False, True, False], "text": [leak, "wrong", "#### 3", "#### 4"]})
    pairs, drops = select_pairs(cands, 1, SelectConfig(decontaminate_chosen=True), eval_index=index)
    assert pairs["prompt_id"].to_list() == ["q"] and drops == {"contaminated": 1}
    pairs, drops = select_pairs(cands, 1, SelectConfig(), eval_index=index)
    assert pairs["prompt_id"].to_list() == ["p", "q"] and drops == {}


@pytest.mark.parametrize("key, value, message", [
    ("decontaminate", "gsm8k", r"select.decontaminate = 'gsm8k' is a string"),
    ("decontaminate", [""], "entry '' is not an evaluation set"),
    ("decontaminate", [{"path": "x.jsonl"}], r"has unknown keys \['path'\] or no path_or_name"),
    ("decontaminate_n", 0, r"select.decontaminate_n = 0 is out of range; expected a whole number >= 1"),
    ("near_duplicate_threshold", 1.5, r"is out of range; expected a finite number in \(0, 1\]"),
    ("near_duplicates", "yes", "is a string; expected true or false"),
])
def test_bad_settings_fail_before_any_work(key, value, message):
    raw = scenario_pipeline(2)
    set_path(raw, f"select.{key}", value)
    with pytest.raises(PrefdataError, match=message):
        build_config(raw)


def test_cli_missing_evaluation_set_is_a_one_line_error(source):
    run = subprocess.run([sys.executable, "-m", "prefdata.cli", "build", str(source / "ws2"), "--scenario", "2",
                          "--source", str(source / "src"), "--decontaminate", str(source / "nope.jsonl")],
                         capture_output=True, text=True, timeout=120)
    assert run.returncode == 2
    assert "evaluation set" in run.stderr and "nope.jsonl" in run.stderr and len(run.stderr.strip().splitlines()) == 1
