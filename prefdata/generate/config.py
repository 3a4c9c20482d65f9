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
from prefdata.fields import at_least, between, check_instance, one_of

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

    n: int = field(default=8, metadata=at_least(1))
    temperature: float = field(default=1.0, metadata=at_least(0))  # finite: checked by the schema
    top_p: float = field(default=1.0, metadata=between(0, 1, lo_open=True))
    max_tokens: int = field(default=256, metadata=at_least(1))
    stop: tuple[str, ...] = ()
    seed: int = field(default=0, metadata=at_least(0))

    def __post_init__(self):
        # Types and ranges come from the fields above (lists from TOML/JSON become tuples,
        # so the config stays hashable and frozen).
        check_instance(self)
        _check(all(s for s in self.stop), f"stop={self.stop!r}", "stop strings must be non-empty strings")

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
    batch_size: transformers only: sequences (prompts x n) per `generate` call.
    dtype: the weights' dtype while generating, on every backend: "auto" is the
        checkpoint's own (config.json; the toy models are float32), or float32,
        bfloat16, float16. (vLLM's own "auto" would run float32 weights in bfloat16.)
    """

    model: str
    origin: str = field(default="policy", metadata=one_of(*ORIGINS))
    backend: str = field(default="auto", metadata=one_of(*BACKENDS))
    sampling: SamplingConfig = field(default_factory=SamplingConfig)
    shard_size: int = field(default=64, metadata=at_least(1))
    model_name: str | None = None
    endpoint_url: str | None = None
    endpoint_model: str | None = None
    endpoint_api_key_env: str = "OPENAI_API_KEY"
    endpoint_concurrency: int = field(default=8, metadata=at_least(1))
    endpoint_timeout_s: float = field(default=600.0, metadata=at_least(0, open=True))
    trust_remote_code: bool = False
    allow_pickle: bool = False
    max_model_len: int | None = field(default=None, metadata=at_least(1))
    dtype: str = field(default="auto", metadata=one_of(*DTYPES))
    batch_size: int = field(default=64, metadata=at_least(1))
    quiet: bool = False

    def __post_init__(self):
        object.__setattr__(self, "model", str(self.model))
        if isinstance(self.sampling, dict):
            object.__setattr__(self, "sampling", SamplingConfig(**self.sampling))
        check_instance(self)
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
