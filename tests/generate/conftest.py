"""Fixtures for the generate tests: a tiny model directory and a prompts table.

The model is the shipped toy policy when its weights are present (a trained
model that ends its answers with EOS), else a freshly initialised model of the
same shape built by `prefdata.toy.model`, else one built here. All are Llama
with head_dim 64 (vLLM's CPU attention rejects smaller heads) and a character
tokenizer with a chat template.
"""

from __future__ import annotations

import os
from pathlib import Path

import pyarrow as pa
import pytest

os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "1")

CHAT_TEMPLATE = ("{{ bos_token }}{% for m in messages %}{% if m['role'] == 'user' %}Q: {{ m['content'] }}\n"
                 "{% elif m['role'] == 'assistant' %}A: {{ m['content'] }}{{ eos_token }}\n"
                 "{% else %}{{ m['content'] }}\n{% endif %}{% endfor %}"
                 "{% if add_generation_prompt %}A: {% endif %}")


def build_char_model(out: Path) -> Path:
    """A random-init LlamaForCausalLM (hidden 128, 2 heads of 64, 2 layers) with a char tokenizer."""
    import torch
    from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    specials = ["<pad>", "<s>", "</s>", "<unk>"]
    vocab = {t: i for i, t in enumerate(specials + [chr(c) for c in range(32, 127)] + ["\n"])}
    raw = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    raw.pre_tokenizer = pre_tokenizers.Split(Regex(r"[\s\S]"), behavior="isolated")
    raw.decoder = decoders.Fuse()
    raw.add_special_tokens(specials)
    tok = PreTrainedTokenizerFast(tokenizer_object=raw, bos_token="<s>", eos_token="</s>", pad_token="<pad>",
                                  unk_token="<unk>", chat_template=CHAT_TEMPLATE, clean_up_tokenization_spaces=False)
    config = LlamaConfig(vocab_size=len(vocab), hidden_size=128, intermediate_size=256, num_hidden_layers=2,
                         num_attention_heads=2, num_key_value_heads=2, head_dim=64, max_position_embeddings=2048,
                         tie_word_embeddings=True, bos_token_id=1, eos_token_id=2, pad_token_id=0)
    torch.manual_seed(0)
    LlamaForCausalLM(config).save_pretrained(out, safe_serialization=True)
    tok.save_pretrained(out)
    return out


@pytest.fixture(scope="session")
def model_dir(tmp_path_factory) -> Path:
    try:
        from prefdata.toy.train import policy_path

        if (policy_path() / "config.json").is_file():
            return policy_path()
    except ImportError:
        pass
    out = tmp_path_factory.mktemp("tiny-model")
    try:
        from prefdata.toy.model import build_model, save_model
    except ImportError:
        return build_char_model(out)
    return save_model(build_model(seed=0), out, name="test")


def make_prompts(n: int, offset: int = 0) -> pa.Table:
    from prefdata.schemas import conform

    questions = [f"What is {i} + {2 * i + 1}?" for i in range(offset, offset + n)]
    return conform("prompts", pa.table({
        "prompt_id": [f"p{i:04d}" for i in range(offset, offset + n)],
        "source": ["test"] * n,
        "split": ["train"] * n,
        "source_index": list(range(offset, offset + n)),
        "prompt": questions,
        "reference_solution": [f"We compute {i} + {2 * i + 1} = {3 * i + 1}.\n#### {3 * i + 1}"
                               for i in range(offset, offset + n)],
        "reference_answer": [str(3 * i + 1) for i in range(offset, offset + n)],
    }))


@pytest.fixture
def prompts() -> pa.Table:
    return make_prompts(6)
