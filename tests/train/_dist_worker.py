"""Run by test_distributed.py under `torchrun --nproc_per_node=2`: DDP and FSDP runs of the tiny world.

usage: torchrun ... _dist_worker.py WORKSPACE MODEL_DIR OUT_DIR
       torchrun ... _dist_worker.py --gradients WORKSPACE MODEL_DIR OUT_DIR

Writes OUT_DIR/ddp/ (a DDP run), OUT_DIR/fsdp/ (an FSDP run stopped after its step-2
checkpoint and resumed, so it checks FSDP and its resume at once), OUT_DIR/ddp-killed/
(a DDP run stopped after step 2, for the single-process resume) and, from rank 0,
OUT_DIR/results.json with the per-step records.

With --gradients: for every loss of test_loop.EVERY_LOSS, one optimizer step of 4 pairs
(each rank 2, in micro-batches of 1) under DDP; rank 0 saves the step's gradient to
OUT_DIR/grad-<loss>.pt.
"""

import importlib.util
import json
import sys
from pathlib import Path

import torch

torch.set_num_threads(1)  # two ranks on two shared cores: more threads only contend

from prefdata.store import Workspace  # noqa: E402
from prefdata.train.distributed import init_from_env  # noqa: E402
from prefdata.train.loop import train  # noqa: E402

_spec = importlib.util.spec_from_file_location("_dist_config", Path(__file__).with_name("test_distributed.py"))
_cfg = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(_cfg)


class Killed(Exception):
    pass


def kill_after_2(step, _record):
    if step == 2:
        raise Killed  # on every rank alike, right after the step-2 checkpoint


def gradients(ws, model_dir, out: Path) -> None:
    spec = importlib.util.spec_from_file_location("_dist_loop", Path(__file__).with_name("test_loop.py"))
    loop_tests = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(loop_tests)
    ctx = init_from_env("cpu")
    for loss in loop_tests.EVERY_LOSS:
        cfg = loop_tests.grad_config(model_dir, loss, out / loss.name, batch_size=1, grad_accum=4)
        grad = loop_tests.first_step_gradient(ws, cfg)
        if ctx.main:
            torch.save(grad, out / f"grad-{loss.name}.pt")


if __name__ == "__main__" and sys.argv[1] == "--gradients":
    gradients(Workspace.open(sys.argv[2]), sys.argv[3], Path(sys.argv[4]))
elif __name__ == "__main__":
    ws, model_dir, out = Workspace.open(sys.argv[1]), sys.argv[2], Path(sys.argv[3])
    ctx = init_from_env("cpu")
    results = {}
    results["ddp"] = train(ws, _cfg.config(model_dir, out / "ddp"), fsdp=False)["train"]
    for name, fsdp in (("fsdp", True), ("ddp-killed", False)):
        try:
            train(ws, _cfg.config(model_dir, out / name), fsdp=fsdp, on_step=kill_after_2)
        except Killed:
            pass
    results["fsdp"] = train(ws, _cfg.config(model_dir, out / "fsdp"), fsdp=True)["train"]
    if ctx.main:
        (out / "results.json").write_text(json.dumps({"world": ctx.world, **results}))
