"""Serve the LLM judge from our own generation backends (vLLM, transformers, OpenAI-compatible).

`BackendCompleter` turns a generation `Backend` into the judge's
``complete(prompts) -> texts``: each judge prompt becomes one user turn rendered
with the judge model's chat template, decoded greedily (temperature 0, one
sample) so a judge's verdict on a response is reproducible. A prompt that does
not fit the judge model's context is refused up front with a clear error,
rather than failing inside the engine halfway through a run.

`llm_judge_from_config` is what `prefdata build --judge llm --judge-model M`
uses. The judge's version covers the judge model's weights hash, its chat
template and the decoding settings, so a different judge model or setting
re-judges, and the same one never judges a candidate twice.
"""

from __future__ import annotations

import json
from typing import Callable

from prefdata.errors import PrefdataError
from prefdata.generate.base import Backend, Request, run_backend
from prefdata.generate.registry import make_backend, resolve_backend_name
from prefdata.generate.config import GenerationConfig, SamplingConfig
from prefdata.generate.model import (context_length, load_tokenizer, model_hash, render, template_hash,
                                     validate_model_dir)
from prefdata.judge.llm_judge import LLMJudge, LLMJudgeConfig


class BackendCompleter:
    """``complete(prompts)`` over a generation backend: chat-templated, greedy, one sample each.

    ``backend`` is a loaded `Backend` or a function that makes one; a function is called at
    the first batch that passes the context check, so a judge model that is too small is
    refused before an engine starts.
    """

    def __init__(self, backend: Backend | Callable[[], Backend], tokenizer, max_tokens: int = 512,
                 context: int | None = None):
        self._backend = backend
        self.tokenizer = tokenizer
        self.sampling = SamplingConfig(n=1, temperature=0.0, max_tokens=max_tokens)
        self.context = context

    @property
    def backend(self) -> Backend:
        if not isinstance(self._backend, Backend):
            self._backend = self._backend()
        return self._backend

    def complete(self, prompts: list[str]) -> list[str]:
        if not prompts:
            return []
        rendered = [render(self.tokenizer, [{"role": "user", "content": p}]) for p in prompts]
        ids = self.tokenizer(rendered, add_special_tokens=False)["input_ids"]
        if self.context is not None:
            longest = max(len(x) for x in ids)
            if longest + self.sampling.max_tokens > self.context:
                raise PrefdataError(
                    f"a judge prompt has {longest} tokens, which with max_tokens={self.sampling.max_tokens} "
                    f"exceeds the judge model's context of {self.context}",
                    "use a judge model with a longer context, or lower [judge] max_tokens")
        requests = [Request(text, tuple(t), seed=0) for text, t in zip(rendered, ids)]
        outputs = run_backend(self.backend, requests, self.sampling, "the llm judge")
        return [samples[0].text for samples in outputs]

    def close(self) -> None:
        if isinstance(self._backend, Backend):
            self._backend.close()


class ServedLLMJudge(LLMJudge):
    """An `LLMJudge` that owns its completer (and so its engine); `close()` releases it."""

    def __init__(self, completer: BackendCompleter, config: LLMJudgeConfig):
        self.completer = completer
        super().__init__(completer.complete, config)

    def close(self) -> None:
        self.completer.close()


def llm_judge_from_config(judge_cfg) -> ServedLLMJudge:
    """The rubric judge served by ``judge_cfg.model`` through ``judge_cfg.backend`` (a `JudgeConfig`)."""
    backend = resolve_backend_name(judge_cfg.backend)
    remote = backend == "openai"
    if remote and not judge_cfg.endpoint_url:
        raise PrefdataError("the llm judge with backend 'openai' has no endpoint_url",
                            "set [judge] endpoint_url, e.g. http://127.0.0.1:8000")
    path = validate_model_dir(judge_cfg.model, need_weights=not remote, trust_remote_code=judge_cfg.trust_remote_code)
    tokenizer = load_tokenizer(judge_cfg.model, trust_remote_code=judge_cfg.trust_remote_code)
    gen_cfg = GenerationConfig(model=judge_cfg.model, backend=backend, endpoint_url=judge_cfg.endpoint_url,
                               trust_remote_code=judge_cfg.trust_remote_code, quiet=True,
                               max_model_len=judge_cfg.max_model_len)
    mhash = model_hash(judge_cfg.model)
    name = judge_cfg.model_name or path.resolve().name  # as the reward-model judge names itself
    decoding = {"temperature": 0.0, "max_tokens": judge_cfg.max_tokens}
    version = json.dumps({"model_hash": mhash, "template": template_hash(tokenizer), **decoding}, sort_keys=True)
    context = context_length(path, judge_cfg.max_model_len)
    completer = BackendCompleter(lambda: make_backend(gen_cfg, mhash, tokenizer), tokenizer,
                                 judge_cfg.max_tokens, context)
    return ServedLLMJudge(completer, LLMJudgeConfig(model_name=name, max_retries=judge_cfg.max_retries,
                                                    backend_version=version))

