"""`prefdata study` end to end on a small setting: four builds, four trainings, two tables.

The printed tables are checked against the workspace, not only for shape: one Table 1 and
one Table 2 row per scenario with its kind; Table 1's pair counts are the scenario's pairs;
its "before" log-probs are the means of the stored reference log-probs of those pairs; its
"after" values and Table 2's accuracies are the run reports' (whose "after" Table 1 is
checked against an independent forward in tests/train/test_report.py); every value in range.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from prefdata.select import KINDS
from prefdata.store import Workspace

pytestmark = pytest.mark.slow

HALF_ULP = 0.0005 + 1e-9  # the tables print 3 decimals


def rows_of(tables: str, title: str) -> dict[int, list[str]]:
    """Table `title`'s rows keyed by scenario (the first column)."""
    block = tables.split(title, 1)[1].split("\nTable ", 1)[0]
    return {int(line.split()[0]): line.split() for line in block.splitlines() if line[:1].isdigit()}


def test_study_builds_trains_and_reports_every_scenario(tmp_path):
    ws_dir = tmp_path / "study"
    env = dict(os.environ, HF_HUB_OFFLINE="1", TOKENIZERS_PARALLELISM="false")
    # ~5 min on 2 idle cores; the limit leaves room for a machine shared with other jobs
    done = subprocess.run([sys.executable, "-m", "prefdata.cli", "study", str(ws_dir), "--limit", "24", "--n", "4",
                           "--m", "2", "--epochs", "1", "--backend", "transformers"],
                          capture_output=True, text=True, env=env, timeout=1800)
    assert done.returncode == 0, done.stderr[-3000:]
    check_study(ws_dir, done.stdout)


def check_study(ws_dir, stdout: str) -> None:
    """The study's saved tables against its workspace and run reports (also usable on a
    workspace left by a `prefdata study` run by hand)."""
    tables = (ws_dir / "runs" / "study.txt").read_text()
    assert tables.strip() in stdout  # what is saved is what was printed
    table1, table2 = rows_of(tables, "Table 1"), rows_of(tables, "Table 2")
    assert sorted(table1) == sorted(table2) == [1, 2, 3, 4], tables

    pairs = Workspace.open(ws_dir).read("pairs").to_pydict()
    for scenario in (1, 2, 3, 4):
        report = json.loads((ws_dir / "runs" / f"scenario{scenario}-dpo" / "report.json").read_text())
        kind, n, chosen_before, chosen_after, rejected_before, rejected_after = (
            table1[scenario][1], int(table1[scenario][2]), *map(float, table1[scenario][3:]))
        assert kind == table2[scenario][1] == KINDS[scenario], tables
        mine = [i for i, d in enumerate(pairs["dataset"]) if d == f"scenario{scenario}"]
        # toy prompts and answers are far below max_length: every pair is trained, so Table 1's
        # "before" is the mean over all of the scenario's stored pairs
        assert report["pairs_dropped_too_long"] == 0 and n == report["pairs"] == len(mine) > 0, (scenario, n)
        for side, before, after in (("chosen", chosen_before, chosen_after),
                                    ("rejected", rejected_before, rejected_after)):
            stored = [pairs[f"ref_{side}_logp_mean"][i] for i in mine]
            assert abs(before - sum(stored) / len(stored)) <= HALF_ULP, (scenario, side, before)
            assert abs(before - report["table1"][side]["before"]) <= HALF_ULP
            assert abs(after - report["table1"][side]["after"]) <= HALF_ULP
            assert -20 < before < 0 and -20 < after < 0, (scenario, side)  # per-token log-probs
        prompts, acc_before, acc_after = int(table2[scenario][2]), *map(float, table2[scenario][3:])
        assert prompts == report["accuracy"]["prompts"] > 0
        assert abs(acc_before - report["accuracy"]["before"]) <= HALF_ULP
        assert abs(acc_after - report["accuracy"]["after"]) <= HALF_ULP
        assert 0.0 <= acc_before <= 1.0 and 0.0 <= acc_after <= 1.0
    # the on-policy/off-policy gap of the study's Table 1, before training: the policy's own
    # samples (scenario 1 chosen) are far more likely than the reference (scenario 2 chosen)
    assert float(table1[1][3]) > float(table1[2][3]) + 1.0, tables
