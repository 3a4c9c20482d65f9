"""Typed, frozen configuration of the generate stage.

>>> cfg = GenerationConfig(model="prefdata/toy/weights/policy", backend="transformers",
...                        sampling=SamplingConfig(n=8, temperature=1.0, max_tokens=128))
>>> cfg.sampling.params_json()
'{"max_tokens": 128, "n": 8, "stop": [], "temperature": 1.0, "top_p": 1.0}'
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field

from prefdata.errors import PrefdataError

ORIGINS = ("policy", "other")
BACKENDS = ("auto", "vllm", "transformers", "openai")
DTYPES = ("auto", "float32", "bfloat16", "float16")


@dataclass(frozen=True)
class SamplingConfig:
    """How many samples per prompt and how they are drawn.

    `seed` is the run seed; every prompt gets its own seed derived from it and
    the prompt id (see `prefdata.generate.stage.prompt_seed`), and sample i of a
    prompt uses prompt seed + i (vLLM's convention for `n > 1`), so a prompt's
    samples do not depend on which other prompts share its batch.
    `temperature == 0` means greedy decoding.
    """

    n: int = 8
    temperature: float = 1.0
    top_p: float = 1.0
    max_tokens: int = 256
    stop: tuple[str, ...] = ()
    seed: int = 0

    def __post_init__(self):
        # Lists from TOML/JSON become tuples, so the config stays hashable and frozen.
        object.__setattr__(self, "stop", tuple(self.stop))
        _check(isinstance(self.n, int) and self.n >= 1, f"sampling n={self.n!r}", "use n >= 1")
        _check(self.temperature >= 0, f"temperature={self.temperature}", "use temperature >= 0 (0 = greedy)")
        _check(0 < self.top_p <= 1, f"top_p={self.top_p}", "use 0 < top_p <= 1")
        _check(isinstance(self.max_tokens, int) and self.max_tokens >= 1,
               f"max_tokens={self.max_tokens!r}", "use max_tokens >= 1")
        _check(all(isinstance(s, str) and s for s in self.stop), f"stop={self.stop!r}",
               "stop strings must be non-empty strings")
        _check(isinstance(self.seed, int) and self.seed >= 0, f"seed={self.seed!r}", "use a seed >= 0")

    def params(self) -> dict:
        """The sampling parameters that shape the output distribution (the seed is keyed separately)."""
        return {"n": self.n, "temperature": float(self.temperature), "top_p": float(self.top_p),
                "max_tokens": self.max_tokens, "stop": list(self.stop)}

    def params_json(self) -> str:
        """Canonical JSON of `params()`: stored per row and part of the work key."""
        return json.dumps(self.params(), sort_keys=True)


@dataclass(frozen=True)
class GenerationConfig:
    """One generate run: one model, one origin, one sampling config.

    model: local model directory (config.json, tokenizer with a chat template,
        *.safetensors). For `backend="openai"` the weights may be absent (a
        hosted model); the tokenizer is still needed to render the chat template.
    origin: "policy" or "other"; part of the work key, so the same model can
        serve as both without the two sets colliding.
    backend: "vllm", "transformers", "openai", or "auto" (vLLM if importable).
    shard_size: prompts per part file; a killed run loses at most one shard.
    prune: after the run, drop rows of this origin that the run did not ask
        for (e.g. samples made with an older temperature), so the candidates
        table of an origin always mirrors the last run's config.
    batch_size: transformers only: sequences (prompts x n) per `generate` call.
    dtype: the weights' dtype while generating, on every backend: "auto" is the
        checkpoint's own (config.json; the toy models are float32), or float32,
        bfloat16, float16. (vLLM's own "auto" would run float32 weights in bfloat16.)
    """

    model: str
    origin: str = "policy"
    backend: str = "auto"
    sampling: SamplingConfig = field(default_factory=SamplingConfig)
    shard_size: int = 64
    model_name: str | None = None
    endpoint_url: str | None = None
    endpoint_model: str | None = None
    endpoint_api_key_env: str = "OPENAI_API_KEY"
    endpoint_concurrency: int = 8
    endpoint_timeout_s: float = 600.0
    trust_remote_code: bool = False
    allow_pickle: bool = False
    max_model_len: int | None = None
    dtype: str = "auto"
    batch_size: int = 64
    prune: bool = True
    quiet: bool = False

    def __post_init__(self):
        object.__setattr__(self, "model", str(self.model))
        if isinstance(self.sampling, dict):
            object.__setattr__(self, "sampling", SamplingConfig(**self.sampling))
        _check(self.origin in ORIGINS, f"origin {self.origin!r}", f"use one of: {', '.join(ORIGINS)}")
        _check(self.backend in BACKENDS, f"backend {self.backend!r}", f"use one of: {', '.join(BACKENDS)}")
        _check(self.dtype in DTYPES, f"dtype {self.dtype!r}", f"use one of: {', '.join(DTYPES)}")
        _check(self.shard_size >= 1, f"shard_size={self.shard_size}", "use shard_size >= 1")
        _check(self.batch_size >= 1, f"batch_size={self.batch_size}", "use batch_size >= 1")
        _check(self.endpoint_concurrency >= 1, f"endpoint_concurrency={self.endpoint_concurrency}",
               "use endpoint_concurrency >= 1")
        _check(self.backend != "openai" or bool(self.endpoint_url), "backend 'openai' without endpoint_url",
               "set endpoint_url, e.g. http://127.0.0.1:8000")

    @property
    def display_name(self) -> str:
        return self.model_name or self.endpoint_model or self.model

    def to_dict(self) -> dict:
        """JSON-ready form, saved in the workspace manifest beside the output."""
        out = asdict(self)
        out["sampling"]["stop"] = list(self.sampling.stop)
        return out


def _check(ok: bool, what: str, fix: str) -> None:
    if not ok:
        raise PrefdataError(f"invalid generation config: {what}", fix)
