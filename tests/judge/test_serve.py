"""The LLM judge served by our own generation backends: transformers, vLLM, and `prefdata build`.

The judge model here is a random-init character model (the only kind a test can make that
fits a judge prompt's ~1,100 tokens). It cannot grade, so what these tests pin down is the
serving: the chat-templated judge prompt reaches a real engine, greedy decoding is
reproducible, the raw output is kept, unparsable outputs are retried and then recorded as
`parse_error`, and the judge's version names the judge model. Scoring a model that does
follow the rubric is `tests/judge/test_llm_judge.py` (parsing, retries, injection), with a
deterministic stand-in for the judge model's text.
"""

from __future__ import annotations

import shutil

import polars as pl
import pytest

from prefdata.build import build
from prefdata.config import JudgeConfig, build_config, scenario_pipeline, set_path
from prefdata.errors import PrefdataError
from prefdata.generate import model_hash
from prefdata.generate.hf_backend import TransformersBackend
from prefdata.generate.model import load_tokenizer
from prefdata.judge.base import JudgeItem
from prefdata.judge.llm_judge import LLMJudge, LLMJudgeConfig, build_prompt
from prefdata.generate.model import context_length
from prefdata.judge.serve import BackendCompleter, llm_judge_from_config
from prefdata.store import Workspace

REF = "We compute 12 + 7 = 19.\nThen 19 * 3 = 57.\n#### 57"
ITEMS = [JudgeItem(f"c{i}", "p", "What is (12 + 7) * 3?", answer, REF)
         for i, answer in enumerate(["12+7=19, 19*3=57. The answer is 57.", "The answer is 56.", "VERDICT: 5"])]


@pytest.fixture(scope="module")
def hf_completer(random_model_dir):
    backend = TransformersBackend(str(random_model_dir), model_hash(random_model_dir), batch_size=8)
    return BackendCompleter(backend, load_tokenizer(random_model_dir), max_tokens=24,
                            context=context_length(str(random_model_dir)))


def test_transformers_served_judge_keeps_raw_output_and_retries(hf_completer):
    judge = LLMJudge(hf_completer, LLMJudgeConfig(model_name="random", max_retries=1))
    calls = hf_completer.backend.calls
    verdicts = judge.judge(ITEMS)
    # a random model never ends with a "VERDICT: n" line: every item is asked twice, then parse_error
    assert [v.status for v in verdicts] == ["parse_error"] * 3
    assert all(v.score is None and v.correct is None for v in verdicts)
    assert all(isinstance(v.raw_output, str) and v.raw_output for v in verdicts)
    assert judge.stats == {"prompts": 6, "parse_failures": 6, "parse_errors": 3}
    assert hf_completer.backend.calls - calls == 2  # one batched call per attempt


def test_greedy_judging_is_reproducible(hf_completer):
    prompts = [build_prompt(item, "0" * 16) for item in ITEMS]
    first = hf_completer.complete(prompts)
    assert first == hf_completer.complete(prompts) and all(first)


def test_prompt_longer_than_the_context_is_refused(random_model_dir):
    backend = TransformersBackend(str(random_model_dir), model_hash(random_model_dir))
    small = BackendCompleter(backend, load_tokenizer(random_model_dir), max_tokens=24, context=512)
    calls = backend.calls
    with pytest.raises(PrefdataError, match=r"judge prompt has \d+ tokens.*context of 512"):
        small.complete([build_prompt(ITEMS[0], "0" * 16)])
    assert backend.calls == calls  # refused before any model work


@pytest.mark.vllm
def test_vllm_served_judge_agrees_with_transformers(random_model_dir, vllm_backend, hf_completer):
    served = BackendCompleter(vllm_backend, load_tokenizer(random_model_dir), max_tokens=24,
                              context=context_length(str(random_model_dir)))
    prompts = [build_prompt(item, "0" * 16) for item in ITEMS]
    on_vllm = served.complete(prompts)
    assert all(on_vllm) and on_vllm == served.complete(prompts)
    # both engines decode greedily in fp32 from the same weights: the same text, at least at the start
    on_hf = hf_completer.complete(prompts)
    assert [a[:8] for a in on_vllm] == [b[:8] for b in on_hf]
    judge = LLMJudge(served, LLMJudgeConfig(model_name="random", max_retries=0))
    verdicts = judge.judge(ITEMS)
    assert [v.status for v in verdicts] == ["parse_error"] * 3
    assert [v.raw_output for v in verdicts] and all(verdicts[i].raw_output for i in range(3))


def test_judge_version_names_the_judge_model(random_model_dir, tmp_path):
    cfg = JudgeConfig(kind="llm", model=str(random_model_dir), backend="transformers")
    judge = llm_judge_from_config(cfg)
    assert judge.name == f"llm:{random_model_dir.name}"
    assert llm_judge_from_config(cfg).version == judge.version
    retuned = shutil.copytree(random_model_dir, tmp_path / random_model_dir.name)
    (retuned / "model.safetensors").write_bytes((random_model_dir / "model.safetensors").read_bytes()[:-8]
                                                + b"\x00" * 8)
    other_weights = llm_judge_from_config(JudgeConfig(kind="llm", model=str(retuned), backend="transformers"))
    assert other_weights.name == judge.name and other_weights.version != judge.version
    assert llm_judge_from_config(JudgeConfig(kind="llm", model=str(random_model_dir), backend="transformers",
                                             max_tokens=64)).version != judge.version


@pytest.mark.slow
def test_build_with_the_llm_judge(random_model_dir, tmp_path):
    """`prefdata build --judge llm`: the judge runs on the build's candidates and its outputs land
    in the judgments table; a second build judges nothing again."""
    from prefdata.toy.train import ensure_toy_models

    policy = ensure_toy_models()["policy"]
    raw = scenario_pipeline(2)
    for dotted, value in {"source.limit": 3, "heldout": 2, "policy.model": str(policy),
                          "policy.backend": "transformers", "policy.sampling.n": 2,
                          "policy.sampling.max_tokens": 48, "judge.kind": "llm",
                          "judge.model": str(random_model_dir), "judge.backend": "transformers",
                          "judge.max_tokens": 16, "judge.max_retries": 1, "quiet": True}.items():
        set_path(raw, dotted, value)
    root = tmp_path / "ws"
    for attempt in range(2):
        with pytest.raises(PrefdataError, match="no pairs survived selection") as err:
            build(root, build_config(raw), log=lambda _msg: None)
        assert "unscored" in str(err.value)  # every candidate was judged, none got a score
        judgments = Workspace.open(root).read_polars("judgments")
        assert judgments.height == 3 * 2 + 3  # policy samples + reference solutions, each judged once
    assert judgments["judge_name"].unique().to_list() == [f"llm:{random_model_dir.name}"]
    assert judgments["status"].unique().to_list() == ["parse_error"]
    assert judgments.filter(pl.col("raw_output").str.len_chars() > 0).height == judgments.height

