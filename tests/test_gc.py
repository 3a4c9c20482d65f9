"""No build removes what another dataset's pairs refer to; only `prefdata gc` removes rows.

The module fixture runs the README's command sequence in one workspace, as a user would:

    build ws --scenario 2
    build ws --scenario 1                    (no model work: samples and verdicts are reused)
    build ws --mix 1=0.5,4=0.5
    build ws --config my-pipeline.toml --set policy.sampling.top_p=0.9   (a scenario2 copy)
    build ws --scenario 1                    (again: still no model work)

and after every step checks, independently of `prefdata.check`, that every pair's chosen and
rejected candidate exists, and every judgment's candidate too. Small sizes (12 prompts, 4
samples, 48 tokens, transformers backend) keep it to a minute or two on two cores; the shipped
toy models answer right often enough for on-policy pairs.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from prefdata.build import build
from prefdata.check import faults
from prefdata.config import build_config, load_toml, pipelines_dir, scenario_pipeline, set_path
from prefdata.store import Workspace

LIMIT, N, M, MAX_TOKENS = 12, 4, 2, 48


def _raw(base: dict, **overrides) -> dict:
    settings = {"source.limit": LIMIT, "heldout": 0, "policy.backend": "transformers",
                "other.backend": "transformers", "policy.sampling.n": N, "other.sampling.n": M,
                "policy.sampling.max_tokens": MAX_TOKENS, "other.sampling.max_tokens": MAX_TOKENS,
                "quiet": True, **overrides}
    for dotted, value in settings.items():
        set_path(base, dotted, value)
    return base


def _mix() -> dict:
    raw = scenario_pipeline(1)
    raw.pop("scenarios")
    raw.pop("name")
    raw["mix"] = "1=0.5,4=0.5"
    return raw


def dangling(root: Path) -> dict[str, int]:
    """Pair sides and judgments whose candidate is missing (read straight from the Parquet parts)."""
    import pyarrow.parquet as pq

    def column(table: str, name: str) -> list:
        return [v for p in sorted((root / table).glob("part-*.parquet"))
                for v in pq.read_table(p, columns=[name]).column(name).to_pylist()]

    ids = set(column("candidates", "candidate_id"))
    return {"chosen": sum(c not in ids for c in column("pairs", "chosen_candidate_id")),
            "rejected": sum(r not in ids for r in column("pairs", "rejected_candidate_id")),
            "judgments": sum(j not in ids for j in column("judgments", "candidate_id"))}


@pytest.fixture(scope="module")
def sequence(tmp_path_factory) -> dict:
    tmp = tmp_path_factory.mktemp("readme")
    root = tmp / "ws"
    my_pipeline = tmp / "my-pipeline.toml"
    shutil.copy(pipelines_dir() / "scenario2.toml", my_pipeline)
    steps = [("s2", _raw(scenario_pipeline(2))), ("s1", _raw(scenario_pipeline(1))), ("mix", _raw(_mix())),
             ("top_p", _raw(load_toml(my_pipeline), **{"policy.sampling.top_p": 0.9})),
             ("s1 again", _raw(scenario_pipeline(1)))]
    results, broken, found = {}, {}, {}
    for name, raw in steps:
        results[name] = build(root, build_config(raw), log=lambda _msg: None)
        broken[name] = dangling(root)
        found[name] = [str(f) for f in faults(Workspace.open(root))]
    return {"root": root, "results": results, "broken": broken, "faults": found}


def test_every_pair_resolves_after_every_step(sequence):
    for step, broken in sequence["broken"].items():
        assert broken == {"chosen": 0, "rejected": 0, "judgments": 0}, step
        assert sequence["faults"][step] == [], step
    pairs = Workspace.open(sequence["root"]).read("pairs", ["dataset"]).column("dataset").to_pylist()
    assert {"scenario1", "scenario2", "mix-1x0.5-4x0.5"} <= set(pairs)


def test_scenario_1_rebuilds_do_no_model_work(sequence):
    for step in ("s1", "s1 again"):
        summary = sequence["results"][step]
        policy = summary["generation"]["policy"]
        assert (policy["model_calls"], policy["prompts_generated"], policy["candidates_written"]) == (0, 0, 0), step
        assert policy["prompts_cached"] == LIMIT and summary["judging"]["judged"] == 0, step
    # the top_p build did new work (a new work key per prompt) and kept the old rows beside it
    top_p = sequence["results"]["top_p"]["generation"]["policy"]
    assert top_p["prompts_generated"] == LIMIT and top_p["candidates_written"] == LIMIT * N
    params = Workspace.open(sequence["root"]).read("candidates", ["origin", "sampling_params"]).to_pylist()
    policy_rows = [r["sampling_params"] for r in params if r["origin"] == "policy"]
    assert len(policy_rows) == 2 * LIMIT * N and len(set(policy_rows)) == 2


def test_the_same_pairs_rebuilt_keep_their_scores(sequence, tmp_path):
    """Rebuilding a dataset to the same pairs keeps reference log-probs already stored."""
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    root = tmp_path / "ws"
    shutil.copytree(sequence["root"], root)
    part = root / "pairs" / "part-scenario1.parquet"
    table = pq.read_table(part)
    values = [float(-i) for i in range(table.num_rows)]
    table = table.set_column(table.schema.get_field_index("ref_chosen_logp"), "ref_chosen_logp",
                             pc.cast(values, "float64"))
    table = table.set_column(table.schema.get_field_index("ref_model_hash"), "ref_model_hash",
                             pc.cast(["h"] * table.num_rows, "string"))
    pq.write_table(table, part)
    summary = build(root, build_config(_raw(scenario_pipeline(1))), log=lambda _msg: None)
    assert summary["generation"]["policy"]["model_calls"] == 0
    again = pq.read_table(part)
    assert again["pair_id"].to_pylist() == table["pair_id"].to_pylist()
    assert again["ref_chosen_logp"].to_pylist() == values and set(again["ref_model_hash"].to_pylist()) == {"h"}


def _cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", "from prefdata.cli import main; main()", *args],
                          capture_output=True, text=True, timeout=300, env={**os.environ, "HF_HUB_OFFLINE": "1"})


def test_gc_frees_only_what_no_pair_refers_to(sequence, tmp_path):
    root = tmp_path / "ws"
    shutil.copytree(sequence["root"], root)
    done = _cli("gc", str(root), "--dry-run")
    assert done.returncode == 0, done.stderr
    assert "would free 0 candidates and 0 judgments" in done.stdout  # every setting is still referenced

    # A scratch dataset at top_p 0.8, then rebuilt at 0.7: no pair refers to the 0.8 samples any more.
    for top_p in (0.8, 0.7):
        build(root, build_config(_raw(scenario_pipeline(2), name="scratch", **{"policy.sampling.top_p": top_p})),
              log=lambda _msg: None)
    ws = Workspace.open(root)
    before = ws.read("candidates", ["candidate_id", "sampling_params"]).to_pylist()
    stale = {r["candidate_id"] for r in before if '"top_p": 0.8' in r["sampling_params"]}
    assert len(stale) == LIMIT * N
    judged = ws.read("judgments", ["candidate_id"]).column("candidate_id").to_pylist()

    done = _cli("gc", str(root))
    assert done.returncode == 0, done.stderr
    assert f"freed {len(stale)} candidates and {sum(c in stale for c in judged)} judgments" in done.stdout
    after = {r["candidate_id"] for r in ws.read("candidates", ["candidate_id"]).to_pylist()}
    assert after == {r["candidate_id"] for r in before} - stale
    assert dangling(root) == {"chosen": 0, "rejected": 0, "judgments": 0}
    done = _cli("check", str(root))
    assert done.returncode == 0 and done.stdout.strip().endswith(": ok"), done.stdout + done.stderr
    # everything a dataset was selected from is still there: rebuilding scenario 1 is still free
    summary = build(root, build_config(_raw(scenario_pipeline(1))), log=lambda _msg: None)
    assert summary["generation"]["policy"]["model_calls"] == 0
