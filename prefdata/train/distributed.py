"""Process-group helpers for training under torchrun (DDP or FSDP2), one process per device.

torchrun sets RANK, WORLD_SIZE, LOCAL_RANK, MASTER_ADDR and MASTER_PORT; `init_from_env`
turns them into a process group (NCCL on GPU, gloo on CPU), so `prefdata train` and
`train()` need no distributed options of their own. Without those variables, or with
WORLD_SIZE=1, everything here degrades to the single-process case.

The batch contract (see loop.py): the global batch of a step is fixed by the config
(`batch_size * grad_accum` pairs) whatever the number of processes; each rank takes the
strided slice `batch[rank::world]` of it. So a run means the same thing on 1 or K
processes, the data order is still a pure function of (seed, step), and a checkpoint
written by K processes resumes on any other number.

Checkpoints are world-size independent too: the model as a full HF-keyed state dict
and the optimizer in torch's index-keyed form (what a single process writes), gathered
on rank 0 under FSDP.

Under `torchrun --nproc_per_node=2`, on rank 0:

>>> ctx = init_from_env()        # doctest: +SKIP
>>> ctx.rank, ctx.world, ctx.main  # doctest: +SKIP
(0, 2, True)
"""

from __future__ import annotations

import atexit
import contextlib
import os
from dataclasses import dataclass

# Under FSDP the wrapper below is the root module; its attribute name prefixes every FQN.
_PREFIX = "policy."


@dataclass(frozen=True)
class DistContext:
    rank: int = 0
    world: int = 1
    local_rank: int = 0

    @property
    def main(self) -> bool:
        return self.rank == 0

    @property
    def active(self) -> bool:
        return self.world > 1


def init_from_env(device_type: str | None = None) -> DistContext:
    """The process group torchrun describes in the environment, initialised once per process.

    The backend is NCCL when CUDA is available (and `device_type` is not "cpu"), else gloo.
    A group made here is destroyed at interpreter exit, so callers need not clean up.
    """
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return DistContext()
    import torch
    import torch.distributed as dist

    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    if not dist.is_initialized():
        cuda = torch.cuda.is_available() and device_type != "cpu"
        if cuda:
            torch.cuda.set_device(local_rank)  # before NCCL init, so each rank owns one GPU
        dist.init_process_group("nccl" if cuda else "gloo")
        atexit.register(_destroy)
    return DistContext(dist.get_rank(), dist.get_world_size(), local_rank)


def _destroy() -> None:
    import torch.distributed as dist

    if dist.is_initialized():
        dist.destroy_process_group()


@contextlib.contextmanager
def rank_zero_first(device: str | None = None):
    """Run the block on rank 0 first, then on the others (which find its work done).

    For steps that write the workspace, e.g. scoring the pairs before training: two
    ranks would otherwise race for the workspace writer lock (exit code 3). `device` is
    the training device option ("cpu" keeps gloo on a GPU machine). Outside torchrun it
    just runs the block.

    >>> with rank_zero_first("cpu"):          # doctest: +SKIP
    ...     score_pairs(ws, model_path, dataset=name, device="cpu")
    """
    ctx = init_from_env("cpu" if str(device or "").startswith("cpu") else None)
    if ctx.active and not ctx.main:
        barrier()
    yield ctx
    if ctx.active and ctx.main:
        barrier()


def barrier() -> None:
    import torch.distributed as dist

    if dist.is_initialized():
        dist.barrier()


def broadcast_object(obj, ctx: DistContext):
    """Rank 0's `obj` on every rank (decisions that must agree, e.g. which checkpoint to load)."""
    if not ctx.active:
        return obj
    import torch.distributed as dist

    box = [obj]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def all_reduce_sum(values: list[float], ctx: DistContext, device) -> list[float]:
    """Elementwise sum over ranks, in fp64 (per-step loss and reward sums)."""
    if not ctx.active:
        return list(values)
    import torch
    import torch.distributed as dist

    t = torch.tensor(values, dtype=torch.float64, device=device)
    dist.all_reduce(t)
    return t.tolist()


def shard_of(batch: list[int], batch_size: int, ctx: DistContext) -> list[list[int]]:
    """This rank's micro-batches of the global `batch`: the strided slice in chunks of `batch_size`.

    Every rank gets the same number of micro-batches (DDP/FSDP need matching collectives),
    so a rank may get empty ones at the end of an epoch; the loop runs those as a
    zero-weighted forward.

    >>> shard_of([7, 3, 5, 1, 2], 2, DistContext(rank=0, world=2))
    [[7, 5], [2]]
    >>> shard_of([7, 3, 5, 1, 2], 2, DistContext(rank=1, world=2))
    [[3, 1], []]
    >>> shard_of([7], 1, DistContext(rank=1, world=2))
    [[]]
    """
    mine = batch[ctx.rank::ctx.world]
    per_rank = -(-len(batch) // ctx.world)
    micros = max(1, -(-per_rank // batch_size))
    return [mine[i * batch_size:(i + 1) * batch_size] for i in range(micros)]


def _logps_module(model, chunk_positions: int):
    """The policy's summed completion log-probs as one nn.Module forward.

    DDP and FSDP hook a module's forward; `sequence_logps` calls the model body and the
    output head separately, so it is wrapped here to make the whole computation one call.
    """
    import torch

    from prefdata.score import sequence_logps

    class PolicyLogps(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.policy = model

        def forward(self, batch):
            return sequence_logps(self.policy, batch, chunk_positions)

    return PolicyLogps()


def wrap(model, ctx: DistContext, fsdp: bool, device, chunk_positions: int):
    """(runner, params): `runner(packed_batch)` -> summed log-probs; the optimizer's parameters.

    Single process: the plain wrapper. DDP: gradients all-reduced (averaged) in backward.
    FSDP2 (`fully_shard`): each decoder layer is its own unit, the rest (embeddings,
    norm, head) the root unit; parameters become DTensor shards, so the optimizer must be
    built over `params` returned here.
    """
    runner = _logps_module(model, chunk_positions)
    if not ctx.active:
        return runner, list(model.parameters())
    if fsdp:
        from torch.distributed.fsdp import fully_shard

        for layer in _decoder_layers(model):
            fully_shard(layer)
        fully_shard(runner)
        # FSDP2 picks its root at the first forward; the first forward here is the base-model
        # measurement, which enters through a layer, so make the wrapper the root now.
        runner._get_fsdp_state()._lazy_init()
        return runner, list(runner.parameters())
    from torch.nn.parallel import DistributedDataParallel

    ids = [device.index] if device.type == "cuda" else None
    return DistributedDataParallel(runner, device_ids=ids), list(model.parameters())


def _decoder_layers(model):
    import torch

    body = model.base_model
    layers = getattr(body, "layers", None) or getattr(body, "h", None)
    if not isinstance(layers, torch.nn.ModuleList):
        from prefdata.errors import PrefdataError

        raise PrefdataError(f"FSDP: cannot find the decoder layers of {type(model).__name__}",
                            "train this model with DDP (the default)")
    return list(layers)


def fsdp_modules(runner) -> list:
    from torch.distributed.fsdp import FSDPModule

    return [m for m in runner.modules() if isinstance(m, FSDPModule)]


@contextlib.contextmanager
def whole_model(runner, model):
    """The model with all its weights on this rank, for evaluation, generation, the gradient
    probe and saving: `model` itself for DDP and single-process runs.

    Under FSDP, a plain copy loaded from the gathered full state dict (a collective: every
    rank enters together), freed on exit. A copy rather than unsharding in place: plain
    calls into the sharded modules (model.base_model, generate) bypass the FSDP root and
    would reshard the root's weights under them. The cost is one unsharded model per rank
    during evaluation, what unsharding would hold too.
    """
    if not _is_fsdp(runner):
        yield model
        return
    import torch
    from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict
    from transformers import AutoModelForCausalLM

    full = get_model_state_dict(runner, options=StateDictOptions(full_state_dict=True))
    device = next(iter(full.values())).device
    with torch.device("meta"):  # no random init of weights about to be overwritten
        copy = AutoModelForCausalLM.from_config(model.config, dtype=next(iter(full.values())).dtype)
    copy.to_empty(device=device)
    copy.load_state_dict({k[len(_PREFIX):]: v for k, v in full.items()})
    copy.tie_weights()
    # buffers (rotary frequencies) are not in the state dict and FSDP does not shard them
    with torch.no_grad():
        for (_, mine), (_, theirs) in zip(copy.named_buffers(), model.named_buffers()):
            mine.copy_(theirs)
    del full
    try:
        yield copy
    finally:
        del copy


def _is_fsdp(runner) -> bool:
    try:
        from torch.distributed.fsdp import FSDPModule
    except ImportError:
        return False
    return isinstance(runner, FSDPModule)


def no_sync(runner, last: bool):
    """Skip the gradient all-reduce on all but the last micro-batch of a step (DDP only;
    FSDP's reduce-scatter per micro-batch is its memory-saving design and stays on)."""
    if last or not hasattr(runner, "no_sync"):
        return contextlib.nullcontext()
    return runner.no_sync()


# -- checkpoints: full, index-keyed, written by rank 0 -------------------------------------------
def checkpoint_state(runner, model, optimizer) -> tuple[dict, dict]:
    """(model state, optimizer state) as a single process would save them; complete on rank 0.

    Under FSDP this is a collective: every rank must call it.
    """
    if not _is_fsdp(runner):
        return model.state_dict(), optimizer.state_dict()
    from torch.distributed.checkpoint.state_dict import StateDictOptions, get_state_dict

    msd, osd = get_state_dict(runner, optimizer,
                              options=StateDictOptions(full_state_dict=True, cpu_offload=True))
    if not msd:  # ranks other than 0 get empty dicts with cpu_offload
        return {}, {}
    names = _param_names(model)
    index = {name: i for i, name in enumerate(names)}
    osd = {"state": {index[k[len(_PREFIX):]]: v for k, v in osd["state"].items()},
           "param_groups": [{**g, "params": [index[p[len(_PREFIX):]] for p in g["params"]]}
                            for g in osd["param_groups"]]}
    return {k[len(_PREFIX):]: v for k, v in msd.items()}, osd


def load_checkpoint_state(runner, model, optimizer, model_state: dict, optim_state: dict) -> None:
    """Load a checkpoint written by `checkpoint_state` (any world size, DDP or FSDP) on every rank."""
    if not _is_fsdp(runner):
        model.load_state_dict(model_state)
        optimizer.load_state_dict(optim_state)
        return
    from torch.distributed.checkpoint.state_dict import StateDictOptions, set_state_dict

    names = _param_names(model)
    osd = {"state": {_PREFIX + names[i]: v for i, v in optim_state["state"].items()},
           "param_groups": [{**g, "params": [_PREFIX + names[i] for i in g["params"]]}
                            for g in optim_state["param_groups"]]}
    set_state_dict(runner, optimizer, model_state_dict={_PREFIX + k: v for k, v in model_state.items()},
                   optim_state_dict=osd, options=StateDictOptions(full_state_dict=True))


def _param_names(model) -> list[str]:
    # named_parameters() lists a tied parameter once, in the order parameters() yields it:
    # exactly the indices torch's optimizer state_dict uses.
    return [name for name, _ in model.named_parameters()]
