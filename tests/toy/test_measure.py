import pytest

from prefdata.toy import measure, task
from prefdata.toy.model import ToyModelConfig, build_model, build_tokenizer
from prefdata.toy.train import other_path, policy_path


def test_mean_token_logprobs_matches_unbatched_sum():
    import torch

    tok = build_tokenizer()
    model = build_model(ToyModelConfig(num_layers=1, intermediate_size=64), seed=3).eval()
    qs = ["What is 1 + 2?", "What is (10 - 3) * 2?"]
    cs = ["1+2=3. The answer is 3.", "<<10-3=7>> <<7*2=14>> Answer: 14"]
    batched = measure.mean_token_logprobs(model, tok, qs, cs)
    for q, c, got in zip(qs, cs, batched):
        p_ids = tok(measure.render_prompts(tok, [q])[0], add_special_tokens=False)["input_ids"]
        c_ids = tok(c, add_special_tokens=False)["input_ids"] + [tok.eos_token_id]
        ids = torch.tensor([p_ids + c_ids])
        with torch.no_grad():
            logp = torch.log_softmax(model(input_ids=ids).logits[0], -1)
        want = sum(logp[len(p_ids) + i - 1, t].item() for i, t in enumerate(c_ids)) / len(c_ids)
        assert got == pytest.approx(want, abs=1e-4)


@pytest.mark.parametrize("path_fn", [policy_path, other_path])
def test_shipped_model_loads_and_generates(path_fn):
    model, tok = measure.load(path_fn())
    problems = task.generate("test", 10, seed=0)
    texts = measure.sample(model, tok, [p.question for p in problems], seed=0)
    assert len(texts) == 10 and all(texts)
    # Trained models write in their own style and give an extractable answer.
    assert sum(task.extract_answer(t) is not None for t in texts) >= 8
    marker = "The answer is" if path_fn is policy_path else "Answer:"
    assert sum(marker in t for t in texts) >= 8


@pytest.mark.slow
def test_measure_shows_imperfect_policy_and_on_policy_gap():
    m = measure.measure(n=60, seed=0)
    assert 0.3 <= m["policy_accuracy"] <= 0.8  # the 30-80 % band: imperfect, but right often enough to pair
    assert m["other_accuracy"] < 1.0
    own = m["logp_policy_own_samples"]
    assert own > m["logp_policy_reference"] + 0.5
    assert own > m["logp_policy_other_samples"] + 0.5
