"""The transformers backend and the generate stage: samples, seeds, finish reasons, caching."""

from __future__ import annotations

import json

import pyarrow as pa
import pytest

from prefdata.errors import PrefdataError
from prefdata.generate import (GenerationConfig, Request, SamplingConfig, generate_candidates, load_tokenizer,
                               model_hash, prompt_seed, render)
from prefdata.store import Workspace

from .conftest import make_prompts

PROVENANCE = ("candidate_id", "prompt_id", "origin", "model_name", "model_hash", "backend", "sampling_params",
              "seed", "sample_index", "work_key", "rendered_prompt", "template_hash", "text", "token_count",
              "finish_reason", "logprob")


@pytest.fixture(scope="module")
def backend(random_model_dir):
    from prefdata.generate.hf_backend import TransformersBackend

    return TransformersBackend(str(random_model_dir), model_hash(random_model_dir), batch_size=16)


def _cfg(model, **sampling) -> GenerationConfig:
    return GenerationConfig(model=str(model), backend="transformers", quiet=True, shard_size=2,
                            sampling=SamplingConfig(**{"n": 4, "max_tokens": 16, **sampling}))


def _texts(ws) -> dict:
    return {(r["work_key"], r["sample_index"]): r["text"] for r in ws.read("candidates").to_pylist()}


def test_n_samples_per_prompt_with_full_provenance(tmp_path, random_model_dir, backend):
    ws = Workspace.create(tmp_path / "ws")
    prompts = make_prompts(5)
    stats = generate_candidates(ws, prompts, _cfg(random_model_dir), backend=backend)
    assert (stats.prompts, stats.prompts_generated, stats.candidates_written) == (5, 5, 20)
    assert stats.parts_written == 3 and len(ws.parts("candidates")) == 3  # shards of 2, 2, 1 prompts
    table = ws.read("candidates")
    for column in PROVENANCE:
        assert table.column(column).null_count == 0, column
    rows = table.to_pylist()
    tok = load_tokenizer(random_model_dir)
    by_prompt = {}
    for row in rows:
        by_prompt.setdefault(row["prompt_id"], []).append(row["sample_index"])
        assert row["origin"] == "policy" and row["backend"] == "transformers"
        assert row["model_hash"] == model_hash(random_model_dir)
        assert row["seed"] == prompt_seed(0, row["prompt_id"])
        assert json.loads(row["sampling_params"])["n"] == 4
        question = prompts.filter(pa.compute.equal(prompts["prompt_id"], row["prompt_id"]))["prompt"][0].as_py()
        assert row["rendered_prompt"] == render(tok, [{"role": "user", "content": question}])
        assert row["token_count"] == len(tok(row["text"], add_special_tokens=False)["input_ids"])
    assert {k: sorted(v) for k, v in by_prompt.items()} == {p: [0, 1, 2, 3] for p in prompts["prompt_id"].to_pylist()}
    assert len({r["candidate_id"] for r in rows}) == 20
    assert ws.manifest()["stages"]["generate-policy"]["config"]["model_hash"] == model_hash(random_model_dir)


def test_seeded_samples_do_not_depend_on_the_batch(tmp_path, random_model_dir, backend):
    prompts = make_prompts(4)
    full = Workspace.create(tmp_path / "full")
    generate_candidates(full, prompts, _cfg(random_model_dir), backend=backend)
    alone = Workspace.create(tmp_path / "alone")
    backend.batch_size = 3  # other batch boundaries too
    try:
        generate_candidates(alone, prompts.slice(2, 1), _cfg(random_model_dir), backend=backend)
    finally:
        backend.batch_size = 16
    a, f = _texts(alone), _texts(full)
    assert len(a) == 4 and all(f[k] == v for k, v in a.items())
    assert len(set(a.values())) > 1  # the n samples differ from one another
    reseeded = Workspace.create(tmp_path / "reseeded")
    generate_candidates(reseeded, prompts, _cfg(random_model_dir, seed=1), backend=backend)
    assert sorted(_texts(reseeded).values()) != sorted(f.values())


def test_finish_reasons_token_counts_and_logprobs(random_model_dir, backend):
    import torch

    tok = backend.tokenizer
    sampling = SamplingConfig(n=8, max_tokens=12)
    ids = tok(render(tok, [{"role": "user", "content": "What is 1 + 2?"}]), add_special_tokens=False)["input_ids"]
    outs = backend.generate([Request("", tuple(ids), 7)], sampling)[0]
    assert len(outs) == 8
    checked = 0
    for out in outs:
        assert out.finish_reason in ("stop", "length")
        assert out.num_tokens == 12 if out.finish_reason == "length" else out.num_tokens <= 12
        completion = tok(out.text, add_special_tokens=False)["input_ids"]
        completion += [tok.eos_token_id] if out.finish_reason == "stop" else []
        if len(completion) != out.num_tokens:
            continue  # a special token was sampled and is not in the text: cannot re-score from text
        full = torch.tensor([list(ids) + completion])
        with torch.no_grad():
            logp = torch.log_softmax(backend.model(input_ids=full).logits[0, :-1].float(), -1)
        expected = logp.gather(1, full[0, 1:, None])[len(ids) - 1:].sum().item()
        assert out.logprob == pytest.approx(expected, abs=1e-3)
        checked += 1
    assert checked >= 4


def test_stop_strings_are_cut_and_greedy_is_deterministic(tmp_path, random_model_dir, backend):
    stops = tuple("aeiou")
    ws = Workspace.create(tmp_path / "ws")
    generate_candidates(ws, make_prompts(3), _cfg(random_model_dir, max_tokens=40, stop=stops), backend=backend)
    rows = ws.read("candidates").to_pylist()
    assert not any(s in r["text"] for r in rows for s in stops)
    assert sum(r["finish_reason"] == "stop" for r in rows) >= len(rows) // 2
    greedy = Workspace.create(tmp_path / "greedy")
    generate_candidates(greedy, make_prompts(2), _cfg(random_model_dir, temperature=0.0), backend=backend)
    by_prompt = {}
    for r in greedy.read("candidates").to_pylist():
        by_prompt.setdefault(r["prompt_id"], set()).add(r["text"])
    assert all(len(texts) == 1 for texts in by_prompt.values())


def test_rerun_is_free_and_changes_redo_only_what_they_touch(tmp_path, random_model_dir, backend):
    ws = Workspace.create(tmp_path / "ws")
    cfg = _cfg(random_model_dir)
    generate_candidates(ws, make_prompts(4), cfg, backend=backend)
    before = _texts(ws)
    calls = backend.calls
    again = generate_candidates(ws, make_prompts(4), cfg, backend=backend)
    assert (again.model_calls, again.prompts_generated, again.prompts_cached) == (0, 0, 4)
    assert backend.calls == calls and _texts(ws) == before
    # Without a backend, a finished run does not even load the model.
    assert generate_candidates(ws, make_prompts(4), cfg).model_calls == 0

    grown = generate_candidates(ws, make_prompts(6), cfg, backend=backend)  # two new prompts
    assert (grown.prompts_generated, grown.prompts_cached, grown.candidates_written) == (2, 4, 8)
    assert {k: v for k, v in _texts(ws).items() if k in before} == before

    other = generate_candidates(ws, make_prompts(6), GenerationConfig(**{**cfg.__dict__, "origin": "other"}),
                                backend=backend)  # same model as "other": its own rows
    assert other.prompts_generated == 6 and ws.count("candidates") == 48

    hotter = generate_candidates(ws, make_prompts(6), _cfg(random_model_dir, temperature=0.7), backend=backend)
    assert hotter.prompts_generated == 6  # a new work key per prompt
    table = ws.read("candidates").to_pylist()  # the old policy rows stay beside the new ones
    assert len(table) == 72 and len({r["candidate_id"] for r in table}) == 72
    temperatures = [json.loads(r["sampling_params"])["temperature"] for r in table if r["origin"] == "policy"]
    assert sorted(set(temperatures)) == [0.7, cfg.sampling.temperature] and temperatures.count(0.7) == 24


def test_repeated_prompts_and_chat_messages(tmp_path, random_model_dir, backend):
    prompts = make_prompts(2)
    doubled = pa.concat_tables([prompts, prompts])
    ws = Workspace.create(tmp_path / "ws")
    stats = generate_candidates(ws, doubled, _cfg(random_model_dir), backend=backend)
    assert stats.prompts_generated == 2 and ws.count("candidates") == 8
    chat = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi?"}]
    with_messages = prompts.slice(0, 1).set_column(prompts.schema.get_field_index("messages"), "messages",
                                                   pa.array([chat], prompts.schema.field("messages").type))
    ws2 = Workspace.create(tmp_path / "ws2")
    generate_candidates(ws2, with_messages, _cfg(random_model_dir), backend=backend)
    assert ws2.read("candidates")["rendered_prompt"][0].as_py() == render(backend.tokenizer, chat)


def test_progress_bar_and_quiet(tmp_path, random_model_dir, backend, capsys):
    cfg = GenerationConfig(**{**_cfg(random_model_dir).__dict__, "quiet": False})
    generate_candidates(Workspace.create(tmp_path / "a"), make_prompts(2), cfg, backend=backend)
    err = capsys.readouterr().err
    assert "2/2" in err and "prompt/s" in err and "tok/s" in err
    generate_candidates(Workspace.create(tmp_path / "b"), make_prompts(2), _cfg(random_model_dir), backend=backend)
    assert capsys.readouterr().err == ""


def test_backend_of_another_model_is_refused(tmp_path, model_dir, random_model_dir, backend):
    if model_hash(model_dir) == model_hash(random_model_dir):
        pytest.skip("the two fixture models are identical")
    with pytest.raises(PrefdataError, match="another model"):
        generate_candidates(Workspace.create(tmp_path / "ws"), make_prompts(1), _cfg(model_dir), backend=backend)


def test_stop_strings_only_match_generated_text(backend):
    import torch

    from prefdata.generate.hf_backend import _StopStrings

    tok = backend.tokenizer
    prompt = tok("A: ", add_special_tokens=False)["input_ids"]
    crit = _StopStrings(tok, (" x",), prompt_width=len(prompt))
    across = torch.tensor([prompt + tok("x", add_special_tokens=False)["input_ids"]])
    inside = torch.tensor([prompt + tok(" x", add_special_tokens=False)["input_ids"]])
    assert crit(across, None).tolist() == [False]  # vLLM never matches into the prompt
    assert crit(inside, None).tolist() == [True]


def test_empty_prompts_are_refused(tmp_path, random_model_dir):
    with pytest.raises(PrefdataError, match="no prompts"):
        generate_candidates(Workspace.create(tmp_path / "ws"), make_prompts(0), _cfg(random_model_dir))
