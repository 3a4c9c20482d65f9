"""Generation and judging on a local Ray cluster (2 CPUs): the same rows as the single-process
stages, every prompt exactly once, and a SIGKILLed driver resumes without loss or duplicates.

7 prompts in shards of 3 over 2 actors: the slices are 2+1, 2+1 and 1+0, so uneven splits
and an idle actor are both exercised.
"""

from __future__ import annotations

import collections
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import ray  # a dev dependency: CI runs these tests, they never skip

from prefdata.generate import GenerationConfig, SamplingConfig, generate_candidates  # noqa: E402
from prefdata.judge.base import Verdict  # noqa: E402
from prefdata.judge.stage import judge_candidates  # noqa: E402
from prefdata.store import Workspace  # noqa: E402
from tests.generate.conftest import build_char_model, make_prompts  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]
N_PROMPTS, SHARD = 7, 3


def config(model, **sampling) -> GenerationConfig:
    """Seeded sampling from a random-init model: diverse texts, so a wrong seed would show."""
    return GenerationConfig(model=str(model), backend="transformers", quiet=True, shard_size=SHARD,
                            sampling=SamplingConfig(**{"n": 2, "max_tokens": 12, "seed": 5, **sampling}))


@pytest.fixture(scope="module")
def cluster():
    # The test process's env reaches the actors; one torch thread each on 2 shared cores.
    os.environ["OMP_NUM_THREADS"] = "1"
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield ray.get_runtime_context().gcs_address
    ray.shutdown()


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    return build_char_model(tmp_path_factory.mktemp("ray-model"))


@pytest.fixture(scope="module")
def reference(model_dir, tmp_path_factory):
    """The single-process stage's candidates: the expected rows."""
    ws = Workspace.create(tmp_path_factory.mktemp("single") / "ws")
    generate_candidates(ws, make_prompts(N_PROMPTS), config(model_dir))
    return ws


def _rows(ws) -> dict:
    return {(r["work_key"], r["sample_index"]): (r["candidate_id"], r["text"], r["finish_reason"],
                                                 r["token_count"], round(r["logprob"], 3))
            for r in ws.read("candidates").to_pylist()}


def _once_each(ws) -> set:
    table = ws.read("candidates")
    counts = collections.Counter(zip(table["work_key"].to_pylist(), table["sample_index"].to_pylist()))
    assert set(counts.values()) == {1}, "a candidate was generated twice"
    return {k for k, _ in counts}


@pytest.mark.slow
def test_ray_generation_matches_the_single_process_stage(cluster, model_dir, reference, tmp_path):
    from prefdata.distributed.ray_generate import RayBackend
    from prefdata.generate import model_hash

    ws = Workspace.create(tmp_path / "ws")
    cfg = config(model_dir)
    backend = RayBackend(cfg, model_hash(model_dir), actors=2)
    try:
        stats = generate_candidates(ws, make_prompts(N_PROMPTS), cfg, backend=backend)
    finally:
        backend.close()
    assert stats.prompts_generated == N_PROMPTS and stats.parts_written == 3
    assert _rows(ws) == _rows(reference)  # same keys, ids, texts (seeded), finish reasons, log-probs
    assert len(_once_each(ws)) == N_PROMPTS
    # the actors' shares are disjoint and cover every prompt: 2+1, 2+1, 1+0
    shares = [{(r.prompt, r.seed) for r in sent} for sent in backend.dispatched]
    assert [len(s) for s in shares] == [5, 2] and not shares[0] & shares[1]
    assert len(shares[0] | shares[1]) == N_PROMPTS

    from prefdata.distributed.ray_generate import generate_with_ray

    again = generate_with_ray(ws, make_prompts(N_PROMPTS), cfg, actors=2)
    assert again.prompts_cached == N_PROMPTS and again.model_calls == 0  # cached: no actor did work


@pytest.mark.slow
def test_killed_ray_driver_resumes(cluster, model_dir, reference, tmp_path):
    from prefdata.distributed.ray_generate import generate_with_ray

    ws_path = tmp_path / "killed"
    env = dict(os.environ, PYTHONPATH=f"{ROOT}{os.pathsep}{os.environ.get('PYTHONPATH', '')}")
    proc = subprocess.Popen([sys.executable, str(Path(__file__).with_name("_ray_driver.py")), cluster,
                             str(ws_path), str(model_dir), str(N_PROMPTS), "2"], cwd=ROOT, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 300
    try:
        while not list((ws_path / "candidates").glob("part-*.parquet")):
            assert proc.poll() is None, proc.stdout.read().decode()[-3000:]
            assert time.monotonic() < deadline, "no part appeared in 300 s"
            time.sleep(0.02)
        proc.send_signal(signal.SIGKILL)
    finally:
        proc.kill()
        proc.wait()
    ws = Workspace(ws_path)
    parts_at_kill = len(ws.parts("candidates"))
    assert parts_at_kill == 1, "the kill must land mid-generation"

    stats = generate_with_ray(ws, make_prompts(N_PROMPTS), config(model_dir), actors=2)
    assert stats.prompts_cached == SHARD and stats.prompts_generated == N_PROMPTS - SHARD
    assert len(_once_each(ws)) == N_PROMPTS
    assert _rows(ws) == _rows(reference)


class ParityJudge:
    """A deterministic stand-in judge: score from the text, so verdicts are checkable."""

    name, version = "parity", "1"

    def judge(self, items):
        return [Verdict(float(len(it.response) % 5 + 1), len(it.response) % 2 == 0, "ok") for it in items]


@pytest.mark.slow
def test_ray_judging_matches_the_single_process_stage(cluster, reference, tmp_path):
    import shutil

    import cloudpickle

    from prefdata.distributed.ray_generate import judge_with_ray

    cloudpickle.register_pickle_by_value(sys.modules[__name__])  # actors need not import the tests
    copies = []
    for name in ("single", "ray"):
        shutil.copytree(reference.root, tmp_path / name)
        copies.append(Workspace.open(tmp_path / name))
    with copies[0].writer():
        copies[0].write_part("prompts", "p", make_prompts(N_PROMPTS))
    with copies[1].writer():
        copies[1].write_part("prompts", "p", make_prompts(N_PROMPTS))
    single = judge_candidates(copies[0], ParityJudge(), batch_size=5)
    counts = judge_with_ray(copies[1], ParityJudge, actors=2, batch_size=5)
    assert counts == single and counts["judged"] == 2 * N_PROMPTS
    key = ["candidate_id", "judge_name", "judge_version", "score", "correct", "status"]
    rows = [sorted(tuple(r[k] for k in key) for r in ws.read("judgments").to_pylist()) for ws in copies]
    assert rows[0] == rows[1]
    assert judge_with_ray(copies[1], ParityJudge, actors=2)["judged"] == 0  # resumable: nothing left
