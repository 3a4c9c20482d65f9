"""Reward-model judge on a tiny Llama sequence classifier built here: random-init, and trained
for a few seconds to prefer solutions that reach their answer."""

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


@pytest.fixture(scope="module")
def trained_rm(tiny_rm, tmp_path_factory):
    """The tiny classifier trained (seconds on CPU) to prefer a solution that reaches its
    `#### N` answer over the same solution cut off before it: a reward model with a real signal."""
    import shutil

    import torch
    from transformers import AutoModelForSequenceClassification

    from prefdata.judge.reward_model import RewardModelConfig, RewardModelJudge
    from prefdata.toy.task import generate

    path = shutil.copytree(tiny_rm, tmp_path_factory.mktemp("trained-rm") / "rm")
    judge = RewardModelJudge(RewardModelConfig(str(path)))
    texts, labels = [], []
    for p in generate("train", 256, seed=0):
        for response, label in ((p.reference_solution, 1.0), (_cut(p.reference_solution), 0.0)):
            texts.append(judge.render(JudgeItem("c", "p", p.question, response)))
            labels.append(label)
    model = AutoModelForSequenceClassification.from_pretrained(path).train()
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3)
    gen = torch.Generator().manual_seed(0)
    for _ in range(150):
        idx = torch.randint(len(texts), (32,), generator=gen).tolist()
        batch = judge.tokenizer([texts[i] for i in idx], padding=True, return_tensors="pt")
        logits = model(**batch).logits.squeeze(-1)
        loss = torch.nn.functional.binary_cross_entropy_with_logits(logits, torch.tensor([labels[i] for i in idx]))
        loss.backward()
        opt.step()
        opt.zero_grad()
    model.save_pretrained(path, safe_serialization=True)
    return path


def _cut(solution: str) -> str:
    return solution[:solution.rindex("####")].rstrip()


def test_trained_classifier_ranks_finished_solutions_first(trained_rm, tiny_rm):
    from prefdata.judge.reward_model import RewardModelConfig, RewardModelJudge
    from prefdata.toy.task import generate

    held_out = generate("test", 40, seed=1)
    data = [JudgeItem(f"c{i}{k}", f"p{i}", p.question, text)
            for i, p in enumerate(held_out) for k, text in enumerate((p.reference_solution, _cut(p.reference_solution)))]
    trained = RewardModelJudge(RewardModelConfig(str(trained_rm), batch_size=16))
    scores = [v.score for v in trained.judge(data)]
    wins = sum(scores[2 * i] > scores[2 * i + 1] for i in range(len(held_out)))
    assert wins >= 0.95 * len(held_out)
    untrained = [v.score for v in RewardModelJudge(RewardModelConfig(str(tiny_rm))).judge(data)]
    # the ranking comes from training: the same classifier before it does not rank this way (7/40 here)
    assert sum(untrained[2 * i] > untrained[2 * i + 1] for i in range(len(held_out))) < 0.95 * len(held_out)
    # new weights are a new judge version: its scores never mix with the untrained model's
    assert trained.version != RewardModelJudge(RewardModelConfig(str(tiny_rm))).version
