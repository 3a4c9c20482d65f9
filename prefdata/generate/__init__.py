"""The generate stage: candidates from a policy or other model, and from references.

Public API::

    SamplingConfig, GenerationConfig          typed, frozen configs
    generate_candidates(ws, prompts, cfg, backend=None) -> GenerationStats
    reference_candidates(prompts, tokenizer) -> pa.Table
    model_hash(path) -> str
    make_backend(cfg, model_hash, tokenizer) and the backends (imported lazily):
    prefdata.generate.vllm_backend.VLLMBackend, .hf_backend.TransformersBackend,
    .openai_backend.OpenAIBackend

Importing this package does not import torch, transformers or vLLM.
"""

from prefdata.generate.base import Backend, Completion, Request
from prefdata.generate.registry import make_backend, resolve_backend_name
from prefdata.generate.config import GenerationConfig, SamplingConfig
from prefdata.generate.model import load_tokenizer, model_hash, render, template_hash, validate_model_dir
from prefdata.generate.reference import reference_candidates, write_reference_candidates
from prefdata.generate.stage import (GenerationStats, candidate_id, generate_candidates, prompt_seed,
                                     work_key)

__all__ = [
    "Backend", "Completion", "GenerationConfig", "GenerationStats", "Request", "SamplingConfig",
    "candidate_id", "generate_candidates", "load_tokenizer", "make_backend", "model_hash", "prompt_seed", "resolve_backend_name",
    "reference_candidates", "render", "template_hash", "validate_model_dir", "work_key",
    "write_reference_candidates",
]
