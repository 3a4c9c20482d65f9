"""Shared fixtures. Tests run offline on CPU; slow/vllm-marked tests run in CI too."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "1")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


def pytest_configure(config):
    # One intra-op thread: on a 2-core machine shared with worker processes (vLLM,
    # the verifier pool) two threads per test process are several times slower.
    try:
        import torch
    except ImportError:
        return
    torch.set_num_threads(1)


@pytest.fixture(scope="session")
def random_model_dir(tmp_path_factory) -> Path:
    """Always a random-init model: its samples are diverse, so seeds visibly matter. Its context
    (2048) fits an LLM-judge prompt, so the same engine also serves the judge tests."""
    from tests.generate.conftest import build_char_model

    return build_char_model(tmp_path_factory.mktemp("random-model"))


@pytest.fixture(scope="session")
def vllm_backend(random_model_dir):
    """One vLLM engine for the whole session: starting one takes about a minute on CPU."""
    pytest.importorskip("vllm")
    from prefdata.generate import model_hash
    from prefdata.generate.vllm_backend import VLLMBackend

    backend = VLLMBackend(str(random_model_dir), model_hash(random_model_dir), max_model_len=2048)
    yield backend
    backend.close()
