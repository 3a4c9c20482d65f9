"""Generation and judging on a Ray cluster: actors each own an engine, the driver owns the workspace.

The design is a proxy, not a second pipeline. `RayBackend` is a `prefdata.generate`
backend whose `generate(requests, sampling)` cuts the requests into one contiguous
slice per actor (sizes differ by at most one, nothing dropped), runs the slices on
Ray actors that each hold a real backend (vLLM on a GPU, or transformers), and returns
the completions in request order. The single-process stage `generate_candidates` runs
unchanged around it on the driver: it holds the workspace writer lock, computes the work
keys, skips what is cached, writes each shard as one atomic content-keyed part and
writes the manifest. So a Ray run writes exactly the rows a single-process run
writes (a prompt's samples depend only on its seed, never on its batch), and resumes
from the same parts: killing the driver loses at most the shard in flight; a
dead actor fails the run, and the next run redoes only the missing shards.

`RayJudge` does the same for the judge stage around `judge_candidates`.

The cost of the proxy: all actors finish a shard before the next starts, so use a
`shard_size` of many prompts per actor (e.g. 64 x actors) to keep stragglers small.

    ray start --head                        # on the head node; `ray start --address=HEAD:6379` on the others
    >>> stats = generate_with_ray(ws, prompts, cfg, actors=8, address="auto")   # doctest: +SKIP
"""

from __future__ import annotations

from typing import Callable, Sequence

from prefdata.generate.base import Backend, Completion, Request
from prefdata.generate.config import GenerationConfig, SamplingConfig


def split_evenly(n: int, parts: int) -> list[range]:
    """`parts` contiguous ranges covering 0..n-1 exactly once, sizes differing by at most one.

    >>> [list(r) for r in split_evenly(7, 3)]
    [[0, 1, 2], [3, 4], [5, 6]]
    >>> [list(r) for r in split_evenly(1, 3)]
    [[0], [], []]
    """
    base, extra = divmod(n, parts)
    starts = [k * base + min(k, extra) for k in range(parts + 1)]
    return [range(starts[k], starts[k + 1]) for k in range(parts)]


def _init_ray(address: str | None) -> None:
    import ray

    if not ray.is_initialized():
        # address=None starts a local cluster; "auto" joins the one `ray start` made on this node
        ray.init(address=address, include_dashboard=False, log_to_driver=False)


def _actor_options(options: dict | None) -> dict:
    """One GPU per actor when the cluster has GPUs, else one CPU: an engine per device."""
    if options is not None:
        return dict(options)
    import ray

    return {"num_gpus": 1} if ray.cluster_resources().get("GPU", 0) >= 1 else {"num_cpus": 1}


def _threads_for_actor() -> None:
    # Ray reserves CPUs for an actor but torch would still start one thread per core of
    # the node; several actors on one node would then fight over the same cores.
    import ray
    import torch

    cpus = ray.get_runtime_context().get_assigned_resources().get("CPU")
    if cpus:
        torch.set_num_threads(max(1, int(cpus)))


class _EngineActor:
    """Holds one backend (made by `make_backend` from the run's config) for the actor's lifetime."""

    def __init__(self, cfg: GenerationConfig, model_hash: str):
        from prefdata.generate.registry import make_backend
        from prefdata.generate.model import load_tokenizer

        _threads_for_actor()
        tokenizer = load_tokenizer(cfg.model, trust_remote_code=cfg.trust_remote_code)
        self.backend = make_backend(cfg, model_hash, tokenizer)

    def identity(self) -> str:
        return self.backend.name

    def generate(self, requests: list[Request], sampling: SamplingConfig) -> tuple[list[list[Completion]], int]:
        before = self.backend.calls
        out = self.backend.generate(requests, sampling)
        return out, self.backend.calls - before

    def close(self) -> None:
        self.backend.close()


class RayBackend(Backend):
    """A backend that spreads each `generate` call over `actors` Ray actors.

    Actors start on the first call (a fully cached run starts none). `name` is the
    actors' engine (e.g. "transformers"), since that is what generated the text; Ray is
    only the transport. `dispatched[k]` lists the requests actor k received, for tests
    and logs.
    """

    def __init__(self, cfg: GenerationConfig, model_hash: str, actors: int = 2, address: str | None = None,
                 actor_options: dict | None = None):
        from prefdata.errors import PrefdataError
        from prefdata.generate.registry import resolve_backend_name

        if actors < 1:
            raise PrefdataError(f"actors={actors}", "use at least one Ray actor")
        super().__init__(cfg.model, model_hash)
        self.cfg, self.n_actors, self.address, self.options = cfg, actors, address, actor_options
        self.name = resolve_backend_name(cfg.backend)
        self._actors: list = []
        self.dispatched: list[list[Request]] = [[] for _ in range(actors)]

    def _start(self) -> None:
        import ray

        _init_ray(self.address)
        remote = ray.remote(**_actor_options(self.options))(_EngineActor)
        self._actors = [remote.remote(self.cfg, self.model_hash) for _ in range(self.n_actors)]
        names = ray.get([a.identity.remote() for a in self._actors])  # surfaces load errors here
        self.name = names[0]

    def generate(self, requests: list[Request], sampling: SamplingConfig) -> list[list[Completion]]:
        import ray

        if not requests:
            return []
        if not self._actors:
            self._start()
        slices = split_evenly(len(requests), self.n_actors)
        futures = []
        for k, (actor, part) in enumerate(zip(self._actors, slices)):
            if part:
                chunk = [requests[i] for i in part]
                self.dispatched[k].extend(chunk)
                futures.append(actor.generate.remote(chunk, sampling))
        out: list[list[Completion]] = []
        for completions, calls in ray.get(futures):  # slices are contiguous: concatenating keeps order
            out.extend(completions)
            self.calls += calls
        if len(out) != len(requests):
            raise RuntimeError(f"Ray actors returned {len(out)} results for {len(requests)} requests")
        return out

    def close(self) -> None:
        import ray

        for actor in self._actors:
            try:
                ray.get(actor.close.remote())
            except Exception:  # an actor that died already has nothing to release
                pass
            ray.kill(actor)
        self._actors = []


def generate_with_ray(ws, prompts, cfg: GenerationConfig, actors: int = 2, address: str | None = None,
                      actor_options: dict | None = None):
    """`prefdata.generate.generate_candidates` with the model work spread over Ray actors.

    Same arguments, same `GenerationStats`, same rows in the workspace, same resume.
    `address`: None starts a local Ray (this machine), "auto" or "HOST:6379" joins a
    cluster made by `ray start`. `actor_options` are Ray resources per actor (default one
    GPU if the cluster has GPUs, else one CPU).
    """
    from prefdata.generate.model import model_hash
    from prefdata.generate.stage import generate_candidates

    backend = RayBackend(cfg, model_hash(cfg.model, allow_pickle=cfg.allow_pickle), actors, address, actor_options)
    try:
        return generate_candidates(ws, prompts, cfg, backend=backend)
    finally:
        backend.close()


# -- judging -----------------------------------------------------------------------------------
class _JudgeActor:
    def __init__(self, make_judge: Callable):
        _threads_for_actor()
        self.judge = make_judge()

    def identity(self) -> tuple[str, str]:
        return self.judge.name, self.judge.version

    def run(self, items) -> list:
        return self.judge.judge(items)

    def close(self) -> None:
        if hasattr(self.judge, "close"):
            self.judge.close()


class RayJudge:
    """A `Judge` whose `judge(items)` splits the items over actors that each build a judge with
    `make_judge()` (a picklable factory: the judge itself may hold a model or a process pool).
    Name and version come from the actors' judges, so the judgments are keyed exactly as the
    single-process judge keys them."""

    def __init__(self, make_judge: Callable, actors: int = 2, address: str | None = None,
                 actor_options: dict | None = None):
        import ray

        _init_ray(address)
        remote = ray.remote(**_actor_options(actor_options))(_JudgeActor)
        self._actors = [remote.remote(make_judge) for _ in range(actors)]
        identities = set(ray.get([a.identity.remote() for a in self._actors]))
        if len(identities) != 1:
            raise RuntimeError(f"the judge actors disagree on name/version: {sorted(identities)}")
        self.name, self.version = identities.pop()
        self.dispatched: list[int] = [0] * actors

    def judge(self, items: Sequence) -> list:
        import ray

        items = list(items)
        futures = []
        for k, part in enumerate(split_evenly(len(items), len(self._actors))):
            if part:
                self.dispatched[k] += len(part)
                futures.append(self._actors[k].run.remote(items[part.start:part.stop]))
        return [v for verdicts in ray.get(futures) for v in verdicts]

    def close(self) -> None:
        import ray

        for actor in self._actors:
            try:
                ray.get(actor.close.remote())
            except Exception:
                pass
            ray.kill(actor)
        self._actors = []

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def judge_with_ray(ws, make_judge: Callable, actors: int = 2, address: str | None = None,
                   actor_options: dict | None = None, **kwargs) -> dict[str, int]:
    """`prefdata.judge.stage.judge_candidates` with the judging spread over Ray actors.

    `kwargs` go to `judge_candidates` (batch_size, origins, on_batch). A batch is one
    part, split over the actors, so use a batch_size of many items per actor.
    """
    from prefdata.judge.stage import judge_candidates

    with RayJudge(make_judge, actors, address, actor_options) as judge:
        return judge_candidates(ws, judge, **kwargs)
