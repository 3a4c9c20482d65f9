import json

import pytest

from prefdata.toy import model, task

tok = model.build_tokenizer()


@pytest.mark.parametrize("text", [
    "We compute 12 + 7 = 19.\nThen 19 * 3 = 57.\n#### 57",
    "12+7=19, 19*3=57. The answer is 57.",
    "<<12+7=19>> <<19*3=57>> Answer: 57",
    "  two  spaces,\ttab and trailing newline\n\n",
    "What is ((3 - 1) * 4) + 2?",
])
def test_round_trip(text):
    ids = tok(text, add_special_tokens=False)["input_ids"]
    assert len(ids) == len(text)  # one token per character
    assert tok.unk_token_id not in ids
    assert tok.decode(ids) == text


def test_round_trip_all_task_texts():
    for p in task.generate("test", 100, seed=0):
        for style in ("reference", "policy", "other"):
            text = p.solution(style)
            assert tok.decode(tok(text, add_special_tokens=False)["input_ids"]) == text


def test_special_tokens_are_single_ids_and_skipped():
    ids = tok("<|bos|>1+1<|eos|>", add_special_tokens=False)["input_ids"]
    assert ids[0] == tok.bos_token_id and ids[-1] == tok.eos_token_id and len(ids) == 5
    assert tok.decode(ids, skip_special_tokens=True) == "1+1"
    assert len({tok.pad_token_id, tok.bos_token_id, tok.eos_token_id, tok.unk_token_id}) == 4


def test_unknown_characters_map_to_unk():
    ids = tok("é", add_special_tokens=False)["input_ids"]
    assert ids == [tok.unk_token_id]


def test_chat_template():
    msgs = [{"role": "user", "content": "What is 1 + 2?"}]
    prompt = tok.apply_chat_template(msgs, add_generation_prompt=True, tokenize=False)
    assert prompt == "<|bos|>Q: What is 1 + 2?\nA: "
    no_gen = tok.apply_chat_template(msgs, add_generation_prompt=False, tokenize=False)
    assert not no_gen.endswith("A: ")
    full = tok.apply_chat_template(msgs + [{"role": "assistant", "content": "3"}], tokenize=False)
    assert full.startswith(no_gen) and full.endswith("A: 3<|eos|>")
    # Encoding the rendered prompt must not add a second BOS.
    ids = tok(prompt)["input_ids"]
    assert ids.count(tok.bos_token_id) == 1


def test_saved_model_dir_loads_with_auto_classes(tmp_path):
    from transformers import AutoConfig, AutoTokenizer

    m = model.build_model(model.ToyModelConfig(num_layers=1, intermediate_size=64))
    model.save_model(m, tmp_path, name="t", meta={"x": 1})
    t = AutoTokenizer.from_pretrained(tmp_path)
    text = "<<1+2=3>> Answer: 3\n#### 3"
    assert t.decode(t(text, add_special_tokens=False)["input_ids"]) == text
    assert t.apply_chat_template([{"role": "user", "content": "hi"}], add_generation_prompt=True,
                                 tokenize=False) == "<|bos|>Q: hi\nA: "
    cfg = AutoConfig.from_pretrained(tmp_path)
    assert cfg.head_dim == 64 and cfg.vocab_size == len(t)
    gen = json.loads((tmp_path / "generation_config.json").read_text())
    assert gen["eos_token_id"] == t.eos_token_id and gen["pad_token_id"] == t.pad_token_id
    assert not list(tmp_path.glob("*.bin"))
