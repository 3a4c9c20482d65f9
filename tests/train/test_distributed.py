"""Training under torchrun: 2 gloo processes (DDP, and FSDP2) give the single-process run.

The global batch is the config's `batch_size * grad_accum` whatever the number of
processes, so the same config on 1 and on 2 processes must give the same losses,
gradient norms and weights up to float summation order. The tiny world has 9 pairs
and 4 per step, so step 3 (the end of epoch 0) has one pair and rank 1 none: the
zero-weight path. batch_size=1 with grad_accum=4 gives each rank 2 micro-batches,
so DDP's no_sync accumulation is exercised too. The FSDP run is killed after its step-2
checkpoint and resumed, and a DDP checkpoint is resumed by one process: checkpoints are
world-size independent.

About 45 s of CPU; two torchrun workers plus the reference on 2 shared cores.
"""

from __future__ import annotations

import importlib.util
import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")

from prefdata.train.losses import LOSSES  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]
TOL = 1e-5


def config(model_dir, out):
    """One config for every run here (only the output directory differs)."""
    from prefdata.train.config import TrainConfig
    from prefdata.train.loss_config import LossConfig

    return TrainConfig(dataset="scenario2", model_path=str(model_dir), loss=LossConfig("dpo", beta=0.1),
                       lr=1e-3, batch_size=1, grad_accum=4, max_steps=4, eval_every=4, checkpoint_every=2,
                       eval_pairs=4, probe_pairs=2, heldout_responses=4, heldout_prompts=0, device="cpu",
                       output_dir=str(out))


def _tiny_world(root):
    # The tiny world is defined once, in test_loop.py; loaded by path so any pytest import mode works.
    spec = importlib.util.spec_from_file_location("_tiny_world_dist", Path(__file__).with_name("test_loop.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.tiny_world(root, n_pairs=9, n_test=2)


def _load_test_loop():
    spec = importlib.util.spec_from_file_location("_test_loop_dist", Path(__file__).with_name("test_loop.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _weights(run_dir):
    from safetensors.torch import load_file

    return load_file(str(Path(run_dir) / "model" / "model.safetensors"))


def _max_diff(a: dict, b: dict) -> float:
    assert a.keys() == b.keys()
    return max((a[k] - b[k]).abs().max().item() for k in a)


@pytest.mark.slow
def test_two_processes_match_one(tmp_path):
    from prefdata.train.loop import train

    ws, model_dir = _tiny_world(tmp_path / "world")
    out = tmp_path / "runs"
    torchrun = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2",
                "--master_addr=127.0.0.1", f"--master_port={_free_port()}"]
    env = dict(os.environ, PYTHONPATH=f"{ROOT}{os.pathsep}{os.environ.get('PYTHONPATH', '')}",
               OMP_NUM_THREADS="1", TOKENIZERS_PARALLELISM="false")
    started = time.monotonic()
    # Start the 2-process job first and train the single-process reference meanwhile.
    proc = subprocess.Popen(torchrun + [str(Path(__file__).with_name("_dist_worker.py")), str(ws.root),
                                        str(model_dir), str(out)], cwd=ROOT, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        single = train(ws, config(model_dir, out / "single"))["train"]
        log, _ = proc.communicate(timeout=300)
    finally:
        proc.kill()
    assert proc.returncode == 0, log[-4000:]
    results = json.loads((out / "results.json").read_text())
    assert results["world"] == 2

    reference = _weights(out / "single")
    for name in ("ddp", "fsdp"):  # the FSDP run was killed after step 2 and resumed
        runs = results[name]
        loss_diff = max(abs(a["loss"] - b["loss"]) for a, b in zip(single, runs))
        norm_diff = max(abs(a["grad_norm"] - b["grad_norm"]) / a["grad_norm"] for a, b in zip(single, runs))
        weight_diff = _max_diff(reference, _weights(out / name))
        print(f"{name}: max |loss diff| {loss_diff:.2e}, max rel grad-norm diff {norm_diff:.2e}, "
              f"max |weight diff| {weight_diff:.2e}")
        assert [r["step"] for r in runs] == [1, 2, 3, 4]
        assert loss_diff < TOL and norm_diff < TOL and weight_diff < TOL
        report = json.loads((out / name / "report.json").read_text())
        assert report["processes"] == 2 and report["parallel"] == name
        # rank 0 alone wrote the files: one log line per step, nothing from rank 1
        assert len((out / name / "log.jsonl").read_text().splitlines()) == 4

    # A checkpoint written by 2 DDP processes resumes in one process, to the same weights.
    assert sorted(p.name for p in (out / "ddp-killed" / "checkpoints").glob("*.pt")) == ["step-00000002.pt"]
    resumed = train(ws, config(model_dir, out / "ddp-killed"))["train"]
    assert [r["loss"] for r in resumed] == pytest.approx([r["loss"] for r in single], abs=TOL)
    diff = _max_diff(reference, _weights(out / "ddp-killed"))
    print(f"2-process checkpoint resumed by 1 process: max |weight diff| {diff:.2e}; "
          f"total {time.monotonic() - started:.0f} s")
    assert diff < TOL


@pytest.mark.slow
def test_every_loss_two_processes_give_the_one_batch_gradient(tmp_path):
    """Every loss in losses.py: the first step's gradient on 2 gloo processes (DDP, each rank 2
    pairs in micro-batches of 1) equals one process's gradient on the batch of 4 in one piece."""
    loop_tests = _load_test_loop()
    ws, model_dir = _tiny_world(tmp_path / "world")
    out = tmp_path / "runs"
    out.mkdir()
    torchrun = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2",
                "--master_addr=127.0.0.1", f"--master_port={_free_port()}"]
    env = dict(os.environ, PYTHONPATH=f"{ROOT}{os.pathsep}{os.environ.get('PYTHONPATH', '')}",
               OMP_NUM_THREADS="1", TOKENIZERS_PARALLELISM="false")
    proc = subprocess.Popen(torchrun + [str(Path(__file__).with_name("_dist_worker.py")), "--gradients",
                                        str(ws.root), str(model_dir), str(out)], cwd=ROOT, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        single = {loss.name: loop_tests.first_step_gradient(ws, loop_tests.grad_config(
            model_dir, loss, out / f"single-{loss.name}")) for loss in loop_tests.EVERY_LOSS}
        log, _ = proc.communicate(timeout=600)
    finally:
        proc.kill()
    assert proc.returncode == 0, log[-4000:]
    assert sorted(single) == sorted(LOSSES)
    for name, whole in single.items():
        two = torch.load(out / f"grad-{name}.pt")
        rel = ((two - whole).norm() / whole.norm()).item()
        print(f"{name}: 2 processes vs one batch: relative gradient difference {rel:.1e}")
        assert whole.norm() > 0 and rel < 1e-5, name


@pytest.mark.slow
def test_torchrun_cli_scores_on_rank_zero_and_trains(tmp_path):
    """`torchrun ... prefdata train` on a workspace whose pairs have no reference log-probs:
    rank 0 scores (the only writer), rank 1 waits, both train, one model is written."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from prefdata.score import model_hash
    from prefdata.store import Workspace

    ws, model_dir = _tiny_world(tmp_path / "world")
    ws_dir = ws.root
    with ws.writer():  # strip the stored reference log-probs: training must score first
        for path in ws.parts("pairs"):
            table = pq.read_table(path)
            table = table.set_column(table.schema.get_field_index("ref_model_hash"), "ref_model_hash",
                                     pa.nulls(table.num_rows, pa.string()))
            ws.write_part("pairs", path.name[len("part-"):-len(".parquet")], table)
    assert set(Workspace.open(ws_dir).read("pairs")["ref_model_hash"].to_pylist()) == {None}

    out = tmp_path / "run"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2", "--master_addr=127.0.0.1",
           f"--master_port={_free_port()}", "-m", "prefdata.cli", "train", str(ws_dir), "--scenario", "2",
           "--model", str(model_dir), "--device", "cpu", "--max-steps", "2", "--batch-size", "2",
           "--eval-every", "2", "--checkpoint-every", "2", "--output-dir", str(out)]
    env = dict(os.environ, PYTHONPATH=f"{ROOT}{os.pathsep}{os.environ.get('PYTHONPATH', '')}",
               OMP_NUM_THREADS="1", TOKENIZERS_PARALLELISM="false")
    done = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=600)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-3000:]
    hashes = Workspace.open(ws_dir).read("pairs")["ref_model_hash"].to_pylist()
    assert set(hashes) == {model_hash(model_dir)}  # scored once, by rank 0
    assert (out / "model" / "model.safetensors").is_file()
    assert done.stdout.count(f"model: {out / 'model'} ") == 1  # says where the model went, once (rank 0)
