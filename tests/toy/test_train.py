import pytest

from prefdata.toy import task, train
from prefdata.toy.model import ToyModelConfig, build_tokenizer

TINY = ToyModelConfig(num_layers=1, intermediate_size=64)


def test_encode_example_masks_the_prompt():
    tok = build_tokenizer()
    p = task.generate("train", 1, seed=0)[0]
    ids, plen = train.encode_example(tok, p.question, p.policy_solution)
    assert tok.decode(ids[:plen]) == f"<|bos|>Q: {p.question}\nA: "
    assert tok.decode(ids[plen:]) == p.policy_solution + "<|eos|>"


def test_batches_put_loss_on_completion_tokens_only():
    tok = build_tokenizer()
    cfg = train.TrainConfig(style="other", model=TINY, steps=2, batch_size=4)
    batches = list(train._batches(tok, cfg, seed=0))
    assert len(batches) == 2
    ids, mask, labels = batches[0]
    for row_ids, row_mask, row_labels in zip(ids, mask, labels):
        kept = row_ids[row_labels != -100].tolist()
        text = tok.decode(kept)
        assert text.startswith("<<") and text.endswith("<|eos|>")
        assert "Q:" not in text
        assert (row_labels[row_mask == 0] == -100).all()


def _weights(path):
    from safetensors.torch import load_file

    return load_file(str(path / "model.safetensors"))


def test_training_is_reproducible_by_seed(tmp_path):
    cfg = train.TrainConfig(style="policy", model=TINY, steps=3, batch_size=4)
    a = train.train_one("policy", tmp_path / "a", seed=1, cfg=cfg, quiet=True)
    b = train.train_one("policy", tmp_path / "b", seed=1, cfg=cfg, quiet=True)
    c = train.train_one("policy", tmp_path / "c", seed=2, cfg=cfg, quiet=True)
    wa, wb, wc = (_weights(tmp_path / x) for x in "abc")
    assert wa.keys() == wb.keys()
    assert all((wa[k] == wb[k]).all() for k in wa)
    assert any((wa[k] != wc[k]).any() for k in wa)
    assert a["final_loss"] == b["final_loss"]
    assert (tmp_path / "a" / "toy_meta.json").is_file()


def test_lr_schedule_warms_up_and_decays():
    cfg = train.TrainConfig(style="policy", steps=100, warmup=10, lr=1.0)
    lrs = [train._lr_at(s, cfg) for s in range(100)]
    assert lrs[0] == pytest.approx(0.1) and lrs[9] == pytest.approx(1.0)
    assert all(x >= y for x, y in zip(lrs[10:], lrs[11:]))
    assert lrs[-1] >= 0.1 - 1e-9


def test_ensure_toy_models_prefers_shipped_weights():
    paths = train.ensure_toy_models()
    assert paths == {"policy": train.policy_path(), "other": train.other_path()}
    for p in paths.values():
        assert (p / "model.safetensors").is_file()
