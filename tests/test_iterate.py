"""`prefdata iterate` through the real CLI: two tiny rounds on the toy world, SIGKILLed inside
round 1 and again once round 1 has finished, then resumed to the end."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

ENV = dict(os.environ, HF_HUB_OFFLINE="1", TOKENIZERS_PARALLELISM="false")
TINY = ["--scenario", "1", "--prompts-per-round", "8", "--set", "policy.sampling.n=4", "--set", "heldout=8",
        "--heldout-prompts", "8", "--epochs", "1"]


def _cli(*args: str, **kw):
    return [sys.executable, "-m", "prefdata.cli", *args]


def _state(ws: Path) -> dict:
    path = ws / "runs" / "iter" / "state.json"
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return {}


def _run_until(args: list[str], log: Path, recorded: str, timeout: float = 900) -> None:
    """Start the CLI and SIGKILL it the moment state.json records stage `recorded` of a round.

    The run stops itself there (prefdata/pause.py: `iterate/recorded:<stage>`), so the kill lands
    before the next stage starts however fast that stage is.
    """
    env = dict(ENV, PREFDATA_TEST_PAUSE_AT=f"iterate/recorded:{recorded}")
    with open(log, "w") as out:
        proc = subprocess.Popen(args, stdout=out, stderr=subprocess.STDOUT, env=env)
        deadline = time.monotonic() + timeout
        while True:
            pid, status = os.waitpid(proc.pid, os.WNOHANG | os.WUNTRACED)
            if pid and os.WIFSTOPPED(status):
                break
            assert not pid, f"finished before the kill point: {log.read_text()[-2000:]}"
            assert time.monotonic() < deadline, "kill point not reached in time"
            time.sleep(0.05)
        proc.send_signal(signal.SIGKILL)
        proc.wait()


def _stages(state: dict, r: int) -> list[str]:
    return state.get("rounds", {}).get(str(r), {}).get("stages", [])


@pytest.mark.slow
def test_iterate_resumes_after_sigkill_inside_and_after_a_round(tmp_path):
    ws = tmp_path / "ws"
    args = _cli("iterate", str(ws), "--rounds", "2", "--set", "policy.backend=transformers", *TINY)
    # 1. killed inside round 1, once its build (sample, judge, pair) is recorded
    _run_until(args, tmp_path / "kill1.log", recorded="build")
    assert _stages(_state(ws), 1) == ["build"]
    # 2. resumed: round 1 continues at scoring; killed once round 1 is finished
    _run_until(args, tmp_path / "kill2.log", recorded="train")
    second = (tmp_path / "kill2.log").read_text()
    assert "round 1: sample" not in second and "round 1: reference log-probs" in second, second[-2000:]
    model1 = ws / "runs" / "iter" / "round-1" / "model"
    stamp = (model1 / "model.safetensors").stat().st_mtime_ns
    # 3. resumed to the end: round 1 is not redone
    done = subprocess.run(args, capture_output=True, text=True, env=ENV, timeout=900)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    assert "round 1: finished earlier, skipped" in done.stdout
    assert (model1 / "model.safetensors").stat().st_mtime_ns == stamp

    state = _state(ws)
    assert [_stages(state, r) for r in (1, 2)] == [["build", "score", "train"]] * 2
    r1, r2 = state["rounds"]["1"], state["rounds"]["2"]
    # round 2 sampled from round 1's trained model; the reference stayed the base policy
    assert r2["start_model"] == r1["model"] and r2["reference_model"] == state["base_model"]
    assert r1["build"]["generation"]["policy"]["model_hash"] == state["base_model_hash"]
    assert r2["build"]["generation"]["policy"]["model_hash"] == r1["model_hash"] != state["base_model_hash"]

    # queryable: candidates by generating model, pairs by round dataset, disjoint prompt slices,
    # and no candidate generated twice across the kills
    import duckdb

    from prefdata.store import Workspace

    w = Workspace.open(ws)
    con = duckdb.connect()
    con.register("candidates", w.read("candidates"))
    con.register("pairs", w.read("pairs"))
    per_model = dict(con.execute("SELECT model_hash, count(*) FROM candidates WHERE origin = 'policy' "
                                 "GROUP BY 1").fetchall())
    assert per_model == {state["base_model_hash"]: 8 * 4, r1["model_hash"]: 8 * 4}
    assert con.execute("SELECT count(*) - count(DISTINCT candidate_id) FROM candidates").fetchone()[0] == 0
    prompts = {d: set(p) for d, p in con.execute(
        "SELECT dataset, list(prompt_id) FROM pairs GROUP BY 1").fetchall()}
    assert set(prompts) == {"iter-r1", "iter-r2"} and not prompts["iter-r1"] & prompts["iter-r2"]
    assert con.execute("SELECT count(*) FROM pairs p JOIN candidates c ON p.chosen_candidate_id = c.candidate_id "
                       "WHERE p.dataset = 'iter-r2' AND c.model_hash <> ?", [r1["model_hash"]]).fetchone()[0] == 0
    assert con.execute("SELECT count(DISTINCT ref_model_hash) FROM pairs").fetchone()[0] == 1

    # the report: per-round tables, the PNG, and `prefdata report` shows the rounds
    report = json.loads((ws / "runs" / "iter" / "rounds.json").read_text())
    rows = report["rounds"]
    assert [row["dataset"] for row in rows] == ["iter-r1", "iter-r2"]
    # the same held-out prompts every round: round 2 starts exactly where round 1 ended
    assert rows[1]["accuracy"]["before"] == rows[0]["accuracy"]["after"]
    assert rows[1]["chosen"]["before"] != rows[0]["chosen"]["before"]  # different pairs, different model
    assert all(row[side][when] < 0 for row in rows for side in ("chosen", "rejected") for when in ("before", "after"))
    assert (ws / "runs" / "iter" / "rounds.png").read_bytes()[:4] == b"\x89PNG"
    shown = subprocess.run(_cli("report", str(ws)), capture_output=True, text=True, env=ENV, timeout=300)
    assert shown.returncode == 0 and "iter-r2" in shown.stdout and "Table 2" in shown.stdout, shown.stderr

    # each round's model is a Hugging Face directory transformers loads
    from transformers import AutoModelForCausalLM

    assert AutoModelForCausalLM.from_pretrained(ws / "runs" / "iter" / "round-2" / "model").num_parameters() > 0

    # resuming with other settings is refused before any work, with a one-line error
    changed = subprocess.run([*args, "--lr", "0.5"], capture_output=True, text=True, env=ENV, timeout=300)
    assert changed.returncode == 2 and "different config" in changed.stderr, changed.stderr


def test_iterate_rejects_a_bad_reference_before_any_work(tmp_path):
    ws = tmp_path / "ws"
    done = subprocess.run(_cli("iterate", str(ws), "--scenario", "1", "--reference", "latest"),
                          capture_output=True, text=True, env=ENV, timeout=120)
    assert done.returncode == 2, done.stderr
    assert len(done.stderr.strip().splitlines()) == 1 and "reference" in done.stderr
    assert not ws.exists()


@pytest.mark.slow
@pytest.mark.vllm
def test_round_two_samples_round_one_model_with_vllm(tmp_path):
    ws = tmp_path / "ws"
    env = dict(ENV, VLLM_CPU_KVCACHE_SPACE="1")
    done = subprocess.run(_cli("iterate", str(ws), "--rounds", "2", "--set", "policy.backend=vllm", *TINY),
                          capture_output=True, text=True, env=env, timeout=1500)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    state = _state(ws)
    r2 = state["rounds"]["2"]["build"]["generation"]["policy"]
    assert r2["backend"] == "vllm" and r2["model_hash"] == state["rounds"]["1"]["model_hash"]
    assert r2["candidates_written"] == 8 * 4
