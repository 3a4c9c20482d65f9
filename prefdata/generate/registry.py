"""Which backend serves a generation config: the registry that sits above the backends.

`base.py` defines the interface the backends implement; this module is the one place that
knows the concrete backends, so the interface never imports its own implementations.
Each backend is imported only when it is asked for, so naming one never loads another's
heavy dependencies (vLLM, torch, an HTTP client).
"""

from __future__ import annotations

import importlib.util
from typing import Callable

from prefdata.errors import PrefdataError
from prefdata.generate.base import Backend
from prefdata.generate.config import GenerationConfig
from prefdata.generate.model import resolve_dtype


def _vllm(cfg: GenerationConfig, model_hash: str, tokenizer) -> Backend:
    from prefdata.generate.vllm_backend import VLLMBackend

    return VLLMBackend(cfg.model, model_hash, trust_remote_code=cfg.trust_remote_code,
                       allow_pickle=cfg.allow_pickle, max_model_len=cfg.max_model_len,
                       dtype=resolve_dtype(cfg.model, cfg.dtype))


def _transformers(cfg: GenerationConfig, model_hash: str, tokenizer) -> Backend:
    from prefdata.generate.hf_backend import TransformersBackend

    return TransformersBackend(cfg.model, model_hash, tokenizer=tokenizer, batch_size=cfg.batch_size,
                               trust_remote_code=cfg.trust_remote_code, allow_pickle=cfg.allow_pickle,
                               dtype=resolve_dtype(cfg.model, cfg.dtype))


def _openai(cfg: GenerationConfig, model_hash: str, tokenizer) -> Backend:
    from prefdata.generate.openai_backend import OpenAIBackend

    return OpenAIBackend(cfg.model, model_hash, url=cfg.endpoint_url, served_model=cfg.endpoint_model,
                         api_key_env=cfg.endpoint_api_key_env, concurrency=cfg.endpoint_concurrency,
                         timeout_s=cfg.endpoint_timeout_s)


BACKENDS: dict[str, Callable[[GenerationConfig, str, object], Backend]] = {
    "vllm": _vllm,
    "transformers": _transformers,
    "openai": _openai,
}


def resolve_backend_name(name: str) -> str:
    """"auto" means vLLM when it is installed, else transformers; other names pass through."""
    if name != "auto":
        return name
    return "vllm" if importlib.util.find_spec("vllm") is not None else "transformers"


def make_backend(cfg: GenerationConfig, model_hash: str, tokenizer) -> Backend:
    """The backend named by `cfg.backend` ("auto": vLLM when installed, else transformers)."""
    name = resolve_backend_name(cfg.backend)
    factory = BACKENDS.get(name)
    if factory is None:
        raise PrefdataError(f"unknown backend {name!r}", "use " + ", ".join(BACKENDS) + " or auto")
    return factory(cfg, model_hash, tokenizer)
