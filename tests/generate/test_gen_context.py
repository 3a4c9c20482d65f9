"""Prompts against the model's context: too long -> dropped as prompt_too_long before any backend
sees them; nearly full -> the samples stop where the context ends. Real transformers and vLLM."""

from __future__ import annotations

import pyarrow as pa
import pytest

from prefdata.generate import GenerationConfig, SamplingConfig, generate_candidates, load_tokenizer, render
from prefdata.generate.model import context_length
from prefdata.store import Workspace

from .conftest import make_prompts

CONTEXT = 2048  # the random test model's max_position_embeddings


def _prompts(model_dir) -> tuple[pa.Table, dict[str, int]]:
    """p0000 short; p0001 leaves 6 tokens of room; p0002 fills the context exactly (no room)."""
    tok = load_tokenizer(model_dir)
    table = make_prompts(3)
    base = [len(tok(render(tok, [{"role": "user", "content": q}]), add_special_tokens=False)["input_ids"])
            for q in table.column("prompt").to_pylist()]
    texts = table.column("prompt").to_pylist()
    texts[1] += " " + "x" * (CONTEXT - 6 - base[1] - 1)
    texts[2] += " " + "y" * (CONTEXT - base[2] - 1)
    table = table.set_column(table.schema.get_field_index("prompt"), "prompt", pa.array(texts))
    lengths = {pid: len(tok(render(tok, [{"role": "user", "content": q}]), add_special_tokens=False)["input_ids"])
               for pid, q in zip(table.column("prompt_id").to_pylist(), texts)}
    return table, lengths


def _check(ws, stats, lengths):
    assert stats.too_long == frozenset({"p0002"})
    assert lengths["p0001"] == CONTEXT - 6 and lengths["p0002"] == CONTEXT
    rows = ws.read("candidates").to_pylist()
    assert {r["prompt_id"] for r in rows} == {"p0000", "p0001"}
    near_full = [r for r in rows if r["prompt_id"] == "p0001"]
    assert len(near_full) == 2
    for r in near_full:  # 6 tokens of room; a sample that did not stop by EOS ends at the context
        assert r["token_count"] <= 6
        assert r["finish_reason"] == "length" or r["token_count"] < 6


def test_transformers_drops_and_stops_at_the_context(random_model_dir, tmp_path):
    assert context_length(random_model_dir) == CONTEXT
    prompts, lengths = _prompts(random_model_dir)
    cfg = GenerationConfig(model=str(random_model_dir), backend="transformers", quiet=True,
                           sampling=SamplingConfig(n=2, max_tokens=32, seed=1))
    ws = Workspace.create(tmp_path / "ws")
    stats = generate_candidates(ws, prompts, cfg)
    _check(ws, stats, lengths)
    assert stats.prompts_generated == 2


@pytest.mark.vllm
def test_vllm_drops_and_stops_at_the_context(random_model_dir, vllm_backend, tmp_path):
    """The session engine's max_model_len is the model's 2048: a 2048-token prompt would make
    vLLM raise 'maximum context length'; it never reaches the engine."""
    import torch

    # the checkpoint's float32, as transformers runs it (vLLM's own "auto" would pick bfloat16)
    assert vllm_backend.llm.model_config.dtype == torch.float32
    prompts, lengths = _prompts(random_model_dir)
    cfg = GenerationConfig(model=str(random_model_dir), backend="vllm", quiet=True,
                           sampling=SamplingConfig(n=2, max_tokens=32, seed=1))
    ws = Workspace.create(tmp_path / "ws")
    stats = generate_candidates(ws, prompts, cfg, backend=vllm_backend)
    _check(ws, stats, lengths)


def test_max_model_len_overrides_the_config(random_model_dir):
    assert context_length(random_model_dir, 40) == 40


def test_dtype_auto_is_the_checkpoints_own(random_model_dir, tmp_path):
    import json

    from prefdata.generate.model import checkpoint_dtype, resolve_dtype

    assert checkpoint_dtype(random_model_dir) == "float32"
    assert resolve_dtype(random_model_dir, "auto") == "float32"
    assert resolve_dtype(random_model_dir, "bfloat16") == "bfloat16"
    (tmp_path / "config.json").write_text(json.dumps({"torch_dtype": "bfloat16"}))
    assert checkpoint_dtype(tmp_path) == "bfloat16"
    assert checkpoint_dtype(tmp_path / "missing") == "float32"


def test_a_backend_failure_is_one_line_exit_1_and_writes_nothing(random_model_dir, tmp_path):
    """An exception escaping a backend (here a backend whose engine dies mid-batch) is an internal
    failure: BackendFailed, exit code 1, one line naming the backend, the model and the cause."""
    from prefdata.errors import BackendFailed
    from prefdata.generate import Backend, model_hash

    class DyingEngine(Backend):
        name = "vllm"

        def generate(self, requests, sampling):
            raise RuntimeError("EngineCore encountered an issue.\nSee stack trace (above) for the root cause.")

    cfg = GenerationConfig(model=str(random_model_dir), backend="transformers", quiet=True,
                           sampling=SamplingConfig(n=1, max_tokens=4))
    ws = Workspace.create(tmp_path / "ws")
    backend = DyingEngine(str(random_model_dir), model_hash(random_model_dir))
    with pytest.raises(BackendFailed) as err:
        generate_candidates(ws, make_prompts(2), cfg, backend=backend)
    assert err.value.exit_code == 1 and "\n" not in str(err.value)
    assert str(err.value).startswith(f"the vllm backend failed while generating for {random_model_dir}: "
                                     "RuntimeError: EngineCore encountered an issue; re-run to resume")
    assert ws.count("candidates") == 0
