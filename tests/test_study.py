"""`prefdata study` end to end on a small setting: four builds, four trainings, two tables."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

pytestmark = pytest.mark.slow


def test_study_builds_trains_and_reports_every_scenario(tmp_path):
    ws = tmp_path / "study"
    env = dict(os.environ, HF_HUB_OFFLINE="1", TOKENIZERS_PARALLELISM="false")
    done = subprocess.run([sys.executable, "-m", "prefdata.cli", "study", str(ws), "--limit", "24", "--n", "4",
                           "--m", "2", "--epochs", "1", "--backend", "transformers"],
                          capture_output=True, text=True, env=env, timeout=900)
    assert done.returncode == 0, done.stderr[-3000:]
    tables = (ws / "runs" / "study.txt").read_text()
    assert "Table 1" in tables and "Table 2" in tables
    assert tables.strip() in done.stdout  # what is saved is what was printed
    for scenario, kind in ((1, "on-policy"), (2, "mixed"), (3, "mixed"), (4, "off-policy")):
        rows = [line.split() for line in tables.splitlines() if line.startswith(f"{scenario} ")]
        assert len(rows) == 2 and all(row[1] == kind for row in rows), tables  # one row per table
        table1 = [float(v) for v in rows[0][2:]]
        assert table1[0] > 0 and all(v < 0 for v in table1[1:]), rows[0]  # pairs, then log-probs
        assert all(0.0 <= float(v) <= 1.0 for v in rows[1][3:]), rows[1]  # accuracies
        report = json.loads((ws / "runs" / f"scenario{scenario}-dpo" / "report.json").read_text())
        assert report  # every scenario was trained and reported
    # the on-policy/off-policy gap of the study's Table 1, before training: the policy's own
    # samples (scenario 1 chosen) are far more likely than the reference (scenario 2 chosen)
    by_scenario = {int(line.split()[0]): [float(v) for v in line.split()[2:]]
                   for line in tables.split("Table 2")[0].splitlines() if line[:1].isdigit()}
    assert by_scenario[1][1] > by_scenario[2][1] + 1.0, tables
