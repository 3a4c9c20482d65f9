"""A changed source row is refused with a way out; an empty selection names its cause.

The source is the toy task written with its reference in a column named `ground_truth`, which
no preset maps: a first build without `--solution-column` has no references, so every policy
sample is "unverifiable" and scenario 2 has nothing to pair. The issue saw this end with advice
that never named the cause, and a corrected rebuild silently keep the stale prompts.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from prefdata.errors import PrefdataError
from prefdata.rebuild import no_pairs_error
from tests.workspace_helpers import cli, snapshot

BUILD = ["--scenario", "2", "--prompt-column", "question", "--backend", "transformers", "--limit", "8",
         "--n", "4", "--max-tokens", "48", "--set", "heldout=0", "--quiet"]


@pytest.fixture(scope="module")
def source(tmp_path_factory) -> Path:
    from prefdata.toy.task import write_split

    folder = tmp_path_factory.mktemp("source")
    rows = [json.loads(line) for line in write_split(folder / "toy.jsonl", "train", 20, seed=0).read_text().splitlines()]
    path = folder / "src.jsonl"
    path.write_text("".join(json.dumps({"question": r["question"], "ground_truth": r["answer"]}) + "\n" for r in rows))
    return path


def test_missing_reference_is_named_and_a_changed_mapping_is_refused(source, tmp_path):
    ws = tmp_path / "ws"
    code, _, err = cli("build", str(ws), "--source", str(source), *BUILD)
    assert code == 2 and err.count("\n") == 1, err
    assert "no pairs survived selection for scenario2: mostly unscored: 32 candidates" in err  # 8 prompts x 4
    assert "no reference answer for this prompt" in err and "--solution-column" in err

    before = snapshot(ws)
    code, _, err = cli("build", str(ws), "--source", str(source), "--solution-column", "ground_truth", *BUILD)
    assert code == 2 and err.count("\n") == 1, err
    assert f"workspace {ws} holds an older version of 8 of this source's prompts (reference_solution" in err
    assert "build into a new workspace path" in err
    assert snapshot(ws) == before  # refused before writing anything

    code, out, err = cli("build", str(tmp_path / "new-ws"), "--source", str(source),
                         "--solution-column", "ground_truth", *BUILD)
    assert code == 0, err
    assert "pairs out         scenario2: " in out


@pytest.mark.parametrize("drops, outputs, expected", [
    ({"scenario1": {"uniform": 12, "truncated": 3}}, [],
     ["mostly uniform: 12 prompts had policy samples that were all judged alike", "truncated=3", "--n"]),
    ({"scenario2": {"truncated": 40, "no_policy": 5}}, [],
     ["mostly truncated: 40 candidates stopped at the token limit", "--max-tokens"]),
    ({"scenario2": {"unscored": 9}}, ["no answer found"] * 5 + ["other"],
     ["(the judge: 'no answer found')", "raise --max-tokens"]),
])
def test_no_pairs_error_names_the_dominant_reason(drops, outputs, expected):
    err = no_pairs_error("ds", drops, outputs)
    assert isinstance(err, PrefdataError) and "\n" not in str(err)
    for text in expected:
        assert text in str(err), str(err)
