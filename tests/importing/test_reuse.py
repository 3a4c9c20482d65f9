"""`prefdata build` on imported candidates: judged and paired, with no model and no generation
backend; imported ratings pair directly with `--judge imported:<column>`."""

from __future__ import annotations

import os
import subprocess
import sys

import polars as pl
import pytest

import prefdata.generate.stage as gen_stage
from prefdata.build import build
from prefdata.config import build_config, scenario_pipeline, set_path
from prefdata.errors import PrefdataError
from prefdata.importing import ImportSpec, import_file
from prefdata.store import Workspace
from tests.importing.conftest import PROBLEMS, generations, ultrafeedback, write_jsonl


@pytest.fixture
def no_generation(monkeypatch):
    """Any generation backend or generate run fails the test."""
    def refuse(*_a, **_k):
        raise AssertionError("a generation backend was constructed")

    monkeypatch.setattr(gen_stage, "make_backend", refuse)
    monkeypatch.setattr(gen_stage, "generate_candidates", refuse)
    monkeypatch.setattr("prefdata.generate.generate_candidates", refuse)


def _cfg(scenario: int, **sets):
    raw = scenario_pipeline(scenario)
    for key, value in sets.items():
        set_path(raw, key.replace("__", "."), value)
    return build_config(raw)


def test_build_judges_and_pairs_imported_candidates(tmp_path, no_generation):
    path = write_jsonl(tmp_path / "gens.jsonl", generations())
    import_file(tmp_path / "ws", ImportSpec(str(path), "candidates", origin="policy", model_name="m"))
    summary = build(tmp_path / "ws", _cfg(1), log=lambda _m: None)
    assert summary["generation"]["policy"] == {"imported": 12, "candidates_written": 0}
    assert summary["judging"]["judge"] == "verifier" and summary["judging"]["judged"] == 12
    pairs = Workspace.open(tmp_path / "ws").read_polars("pairs").sort("prompt")
    expected = {q: a for q, a in PROBLEMS}
    assert pairs.height == 4
    for row in pairs.to_dicts():  # chosen right (one of two right styles), rejected the wrong one
        assert row["rejected"] == f"Hmm. The answer is {expected[row['prompt']] + 1}."
        assert row["chosen"] in (f"We add. The answer is {expected[row['prompt']]}.",
                                 f"So $\\boxed{{{expected[row['prompt']]}}}$")
        assert (row["chosen_origin"], row["rejected_origin"], row["kind"]) == ("policy", "policy", "on-policy")
    # scenario 2 adds the reference solutions from the imported file's solution column
    build(tmp_path / "ws", _cfg(2), log=lambda _m: None)
    s2 = Workspace.open(tmp_path / "ws").read_polars("pairs").filter(pl.col("dataset") == "scenario2")
    assert s2.height == 4 and set(s2["chosen_origin"]) == {"reference"}
    assert sorted(s2["chosen"]) == sorted(f"Compute it.\n#### {a}" for _, a in PROBLEMS)


def test_build_cli_touches_no_model(tmp_path):
    """The real command line, with a policy model that does not exist: any model work would fail."""
    path = write_jsonl(tmp_path / "gens.jsonl", generations())
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    cli = [sys.executable, "-m", "prefdata.cli"]
    subprocess.run([*cli, "import", str(tmp_path / "ws"), str(path), "--as", "candidates"], check=True,
                   capture_output=True, env=env)
    run = subprocess.run([*cli, "build", str(tmp_path / "ws"), "--scenario", "1", "--policy-model",
                          str(tmp_path / "no-such-model"), "--quiet"], capture_output=True, text=True, env=env)
    assert run.returncode == 0, run.stderr
    assert "pairs out         scenario1: 4" in run.stdout


def test_imported_ratings_pair_directly(tmp_path, no_generation):
    path = write_jsonl(tmp_path / "uf.jsonl", ultrafeedback())
    import_file(tmp_path / "ws", ImportSpec(str(path), "candidates", origin="policy"))
    summary = build(tmp_path / "ws", _cfg(1, judge__kind="imported:overall_score", select__uniform_by="score"),
                    log=lambda _m: None)
    assert summary["judging"] == {"judge": "imported:overall_score", "version": "imported", "judged": 0,
                                  "candidates_in_build": 4}
    pairs = Workspace.open(tmp_path / "ws").read_polars("pairs").sort("prompt")
    assert pairs.select("prompt", "chosen", "rejected", "margin").rows() == [
        ("Say bye", "farewell", "bye", 4.0), ("Say hi", "hi", "hello there", 4.5)]
    assert set(pairs["judge_name"]) == {"imported:overall_score"}


def test_unknown_imported_judge_is_a_clear_error(tmp_path):
    path = write_jsonl(tmp_path / "uf.jsonl", ultrafeedback())
    import_file(tmp_path / "ws", ImportSpec(str(path), "candidates", origin="policy"))
    with pytest.raises(PrefdataError, match="imported ratings: imported:fine-grained_score, imported:overall_score"):
        build(tmp_path / "ws", _cfg(1, judge__kind="imported:helpfulness"), log=lambda _m: None)


def test_judge_imported_needs_a_column():
    from prefdata.config import JudgeConfig

    assert (JudgeConfig(kind="imported:overall_score").kind, JudgeConfig(kind="imported:overall_score").model) == (
        "imported", "overall_score")
    for kind in ("imported", "imported:"):
        with pytest.raises(PrefdataError, match="names no rating column"):
            JudgeConfig(kind=kind)
