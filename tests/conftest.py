"""Shared fixtures. Tests run offline on CPU; slow/vllm-marked tests run in CI too."""

from __future__ import annotations

import os

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
