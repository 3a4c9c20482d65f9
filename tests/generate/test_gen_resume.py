"""A generate run killed with SIGKILL resumes losing at most one shard and duplicating nothing."""

from __future__ import annotations

import collections
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from prefdata.generate import GenerationConfig, SamplingConfig, generate_candidates
from prefdata.store import Workspace

from .conftest import make_prompts

N_PROMPTS, SHARD = 8, 2
ROOT = Path(__file__).resolve().parents[2]


def resume_config(model) -> GenerationConfig:
    return GenerationConfig(model=str(model), backend="transformers", quiet=True, shard_size=SHARD,
                            sampling=SamplingConfig(n=3, max_tokens=16, seed=3))


def _rows(ws) -> dict:
    return {(r["work_key"], r["sample_index"]): (r["candidate_id"], r["text"], r["finish_reason"],
                                                 r["token_count"]) for r in ws.read("candidates").to_pylist()}


def test_sigkill_mid_generation_then_resume(tmp_path, random_model_dir):
    ws_path = tmp_path / "killed"
    env = dict(os.environ, PYTHONPATH=f"{ROOT}{os.pathsep}{os.environ.get('PYTHONPATH', '')}")
    proc = subprocess.Popen([sys.executable, str(Path(__file__).with_name("_resume_worker.py")), str(ws_path),
                             str(random_model_dir), str(N_PROMPTS), "1.5"], cwd=ROOT, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    parts_dir = ws_path / "candidates"
    deadline = time.monotonic() + 300
    try:
        while not list(parts_dir.glob("part-*.parquet")):
            assert proc.poll() is None, proc.stderr.read().decode()[-3000:]
            assert time.monotonic() < deadline, "no part appeared in 300 s"
            time.sleep(0.02)
        proc.send_signal(signal.SIGKILL)
    finally:
        proc.kill()
        proc.wait()
    assert proc.returncode == -signal.SIGKILL
    killed_ws = Workspace.open(ws_path) if (ws_path / "manifest.json").exists() else Workspace(ws_path)
    parts_at_kill = len(killed_ws.parts("candidates"))
    assert 1 <= parts_at_kill < N_PROMPTS // SHARD, "the kill must land mid-generation"

    cfg = resume_config(random_model_dir)
    stats = generate_candidates(killed_ws, make_prompts(N_PROMPTS), cfg)
    assert stats.prompts_cached == parts_at_kill * SHARD  # nothing finished before the kill is redone
    assert stats.prompts_generated == N_PROMPTS - parts_at_kill * SHARD

    clean = Workspace.create(tmp_path / "clean")
    generate_candidates(clean, make_prompts(N_PROMPTS), cfg)
    table = killed_ws.read("candidates")
    counts = collections.Counter(zip(table["work_key"].to_pylist(), table["sample_index"].to_pylist()))
    assert set(counts.values()) == {1}  # nothing duplicated
    expected = set(clean.read("candidates")["work_key"].to_pylist())
    assert len(expected) == N_PROMPTS
    assert set(table["work_key"].to_pylist()) == expected  # every work key present
    assert _rows(killed_ws) == _rows(clean)  # the same rows as an uninterrupted run, texts included
