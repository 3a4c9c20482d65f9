"""Reward-model judge on a tiny random-init Llama sequence classifier built here."""

from __future__ import annotations

import pytest

from prefdata.errors import PrefdataError
from prefdata.judge.base import JudgeItem

CHARS = [chr(c) for c in range(32, 127)] + ["\n"]


@pytest.fixture(scope="module")
def tiny_rm(tmp_path_factory):
    import torch
    from tokenizers import Regex, Tokenizer, models, pre_tokenizers
    from transformers import LlamaConfig, LlamaForSequenceClassification, PreTrainedTokenizerFast

    path = tmp_path_factory.mktemp("tiny-rm")
    vocab = {"[PAD]": 0, "[UNK]": 1, "[BOS]": 2}
    vocab.update({ch: i + 3 for i, ch in enumerate(CHARS)})
    tok = Tokenizer(models.WordLevel(vocab, unk_token="[UNK]"))
    tok.pre_tokenizer = pre_tokenizers.Split(Regex(r"[\s\S]"), behavior="isolated")  # one char = one token
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="[PAD]", unk_token="[UNK]",
                                        bos_token="[BOS]")
    tokenizer.save_pretrained(path)
    torch.manual_seed(0)
    config = LlamaConfig(vocab_size=len(vocab), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=512,
                         num_labels=1, pad_token_id=0)
    LlamaForSequenceClassification(config).save_pretrained(path, safe_serialization=True)
    return path


def items(n):
    return [JudgeItem(f"c{i}", "p", f"What is {i} + {i}?", f"{i}+{i}={2 * i}." + " ok" * (i % 5), None)
            for i in range(n)]


def test_batched_scores_equal_one_by_one(tiny_rm):
    from prefdata.judge.reward_model import RewardModelConfig, RewardModelJudge

    batched = RewardModelJudge(RewardModelConfig(str(tiny_rm), batch_size=4))
    single = RewardModelJudge(RewardModelConfig(str(tiny_rm), batch_size=1))
    data = items(11)  # lengths differ, so batches are padded; 11 is not a multiple of 4
    a, b = batched.judge(data), single.judge(data)
    assert len(a) == len(data)
    assert all(v.status == "ok" and v.correct is None and isinstance(v.score, float) for v in a)
    assert [v.score for v in a] == pytest.approx([v.score for v in b], abs=1e-5)
    # order: each item's score is its own, not its sorted-by-length neighbour's
    reversed_scores = [v.score for v in batched.judge(data[::-1])]
    assert reversed_scores[::-1] == pytest.approx([v.score for v in a], abs=1e-5)
    assert len(set(round(v.score, 6) for v in a)) > 1
    assert batched.name == f"rm:{tiny_rm.name}" and batched.version == single.version


def test_refuses_pickle_only_checkpoints(tmp_path, tiny_rm):
    from prefdata.judge.reward_model import RewardModelConfig, RewardModelJudge

    (tmp_path / "config.json").write_text((tiny_rm / "config.json").read_text())
    (tmp_path / "pytorch_model.bin").write_bytes(b"not loaded")
    with pytest.raises(PrefdataError, match="safetensors"):
        RewardModelJudge(RewardModelConfig(str(tmp_path)))
