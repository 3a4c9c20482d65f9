"""`prefdata study` end to end on a small setting: two seeds, two losses, four scenarios, two tables
with 95% intervals, JSON and PNG; and the interval arithmetic on hand-computed numbers."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys

import pytest

from prefdata.errors import PrefdataError
from prefdata.study import StudyConfig, mean_ci, summarise

def test_mean_ci_is_the_student_t_interval():
    got = mean_ci([0.5, 0.7, 0.6])
    assert got["mean"] == pytest.approx(0.6) and got["std"] == pytest.approx(0.1)
    assert got["ci95"] == pytest.approx(4.303 * 0.1 / math.sqrt(3))
    assert mean_ci([0.5, 0.9])["ci95"] == pytest.approx(12.706 * math.sqrt(0.08) / math.sqrt(2))
    assert mean_ci([0.4])["ci95"] is None and mean_ci([None, None])["mean"] is None


def test_summarise_groups_by_scenario_and_loss():
    runs = [{"seed": s, "scenario": sc, "loss": loss, **{k: float(s + sc) for k in (
        "pairs", "prompts", "chosen_before", "chosen_after", "rejected_before", "rejected_after", "chosen_delta",
        "rejected_delta", "accuracy_before",
        "accuracy_after", "accuracy_delta", "grad_ratio_last", "log10_dprob_ratio_last")}}
        for s in (0, 1, 2) for sc in (2, 1) for loss in ("dpo_sft", "dpo")]
    rows = summarise(runs)
    assert [(r["scenario"], r["loss"]) for r in rows] == [(1, "dpo"), (1, "dpo_sft"), (2, "dpo"), (2, "dpo_sft")]
    assert rows[2]["accuracy_after"]["mean"] == pytest.approx(3.0) and rows[2]["seeds"] == [0, 1, 2]


@pytest.mark.parametrize("kw, says", [({"seeds": ()}, "seeds"), ({"seeds": (1, 1)}, "distinct"),
                                      ({"losses": ("dpo", "ipo")}, "not study losses"),
                                      ({"beta_rejected": 0.0}, "beta_rejected must be a finite number > 0"),
                                      ({"pairing": "nope"}, "pairing 'nope' is unknown")])
def test_bad_study_settings_fail_before_any_work(kw, says):
    with pytest.raises(PrefdataError, match=says):
        StudyConfig(**kw)


def test_cli_rejects_a_bad_seed_list(tmp_path):
    done = subprocess.run([sys.executable, "-m", "prefdata.cli", "study", str(tmp_path / "s"), "--seeds", "0,x"],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 2 and "--seeds '0,x'" in done.stderr and not (tmp_path / "s").exists()


@pytest.mark.slow
def test_study_over_seeds_and_losses(tmp_path):
    ws = tmp_path / "study"
    env = dict(os.environ, HF_HUB_OFFLINE="1", TOKENIZERS_PARALLELISM="false")
    done = subprocess.run([sys.executable, "-m", "prefdata.cli", "study", str(ws), "--seeds", "0,1",
                           "--losses", "dpo,flex_dpo", "--limit", "24", "--n", "4", "--m", "2", "--heldout", "8",
                           "--backend", "transformers", "--lr", "1e-4", "--jobs", "2"],
                          capture_output=True, text=True, env=env, timeout=1800)
    assert done.returncode == 0, done.stderr[-3000:]
    tables = (ws / "study.txt").read_text()
    assert "Table 1" in tables and "Table 2" in tables and "95% CI over 2 seeds" in tables
    assert tables.strip() in done.stdout  # what is saved is what was printed
    for scenario, kind in ((1, "on-policy"), (2, "mixed"), (3, "mixed"), (4, "off-policy")):
        rows = [line.split() for line in tables.splitlines() if line.startswith(f"{scenario} ")]
        assert [r[2] for r in rows] == ["dpo", "flex_dpo"] * 2 and all(r[1] == kind for r in rows), tables
        assert all(r.count("±") == 4 for r in rows[:2]) and all(r.count("±") == 3 for r in rows[2:]), rows
    out = json.loads((ws / "study.json").read_text())
    assert len(out["runs"]) == 2 * 4 * 2 and out["config"]["seeds"] == [0, 1]
    assert {r["prompts"] for r in out["runs"]} == {8}
    for row in out["summary"]:
        acc = row["accuracy_after"]
        assert acc["n"] == 2 and 0.0 <= acc["mean"] <= 1.0 and acc["ci95"] is not None
        assert row["chosen_after"]["mean"] < 0 and row["rejected_after"]["mean"] < 0
    # the seeds really differ: their builds sampled different policy responses
    by_seed = {s: [r["chosen_before"] for r in out["runs"] if r["seed"] == s] for s in (0, 1)}
    assert by_seed[0] != by_seed[1]
    assert (ws / "study.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    for seed in (0, 1):
        for loss in ("dpo", "flex_dpo"):
            report = json.loads((ws / f"seed-{seed}" / "runs" / f"scenario1-{loss}" / "report.json").read_text())
            assert report["loss"]["name"] == loss and report["config"]["seed"] == seed
    # every run's numbers are its workspace's: pair counts and "before" log-probs from the stored
    # pairs, "after" and accuracies from the run's report; the summary is the mean over seeds
    from prefdata.store import Workspace

    for seed in (0, 1):
        pairs = Workspace.open(ws / f"seed-{seed}").read("pairs").to_pydict()
        for run in (r for r in out["runs"] if r["seed"] == seed):
            mine = [i for i, d in enumerate(pairs["dataset"]) if d == f"scenario{run['scenario']}"]
            report = json.loads((ws / f"seed-{seed}" / "runs" / f"scenario{run['scenario']}-{run['loss']}"
                                 / "report.json").read_text())
            assert run["pairs"] == report["pairs"] == len(mine) > 0
            for side in ("chosen", "rejected"):
                stored = [pairs[f"ref_{side}_logp_mean"][i] for i in mine]
                assert run[f"{side}_before"] == pytest.approx(sum(stored) / len(stored), abs=1e-9)
                assert run[f"{side}_after"] == report["table1"][side]["after"]
            assert run["accuracy_after"] == report["accuracy"]["after"]
    for row in out["summary"]:
        mine = [r for r in out["runs"] if (r["scenario"], r["loss"]) == (row["scenario"], row["loss"])]
        assert row["accuracy_after"]["mean"] == pytest.approx(sum(r["accuracy_after"] for r in mine) / 2)
    flex = json.loads((ws / "seed-0" / "runs" / "scenario1-flex_dpo" / "report.json").read_text())["loss"]
    assert flex["beta_chosen"] == 0.1 and flex["beta_rejected"] == 0.05
    # the on-policy/off-policy gap of the study's Table 1, before training: the policy's own
    # samples (scenario 1 chosen) are far more likely than the reference (scenario 2 chosen)
    before = {r["scenario"]: r["chosen_before"]["mean"] for r in out["summary"] if r["loss"] == "dpo"}
    assert before[1] > before[2] + 1.0, tables
