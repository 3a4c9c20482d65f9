"""Tiny causal LMs in Hugging Face format, with a character-level tokenizer.

Llama architecture so that both transformers and vLLM load the checkpoint;
``head_dim`` is 64 because vLLM's CPU attention backend rejects smaller heads.
The tokenizer is a ``tokenizers`` WordLevel model over single characters, so
every task text round-trips exactly and the chat template is plain Jinja.

>>> tok = build_tokenizer()
>>> text = "We compute 1 + 2 = 3.\\n#### 3 <<1+2=3>>"
>>> tok.decode(tok(text)["input_ids"]) == text
True
>>> tok.apply_chat_template([{"role": "user", "content": "What is 1 + 2?"}],
...                         add_generation_prompt=True, tokenize=False)
'<|bos|>Q: What is 1 + 2?\\nA: '
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path

PAD, BOS, EOS, UNK = "<|pad|>", "<|bos|>", "<|eos|>", "<|unk|>"
SPECIALS = (PAD, BOS, EOS, UNK)
# Printable ASCII plus newline and tab: enough for every task text and any
# English prompt; anything else maps to UNK rather than failing.
CHARS = tuple(chr(c) for c in range(32, 127)) + ("\n", "\t")

# One user turn then one assistant turn. BOS comes from the template, not from
# a post-processor, so rendering with the template and then encoding with
# add_special_tokens=True (what vLLM does to a text prompt) never doubles it.
CHAT_TEMPLATE = (
    "{{ bos_token }}"
    "{% for message in messages %}"
    "{% if message['role'] == 'system' %}{{ message['content'] }}\n"
    "{% elif message['role'] == 'user' %}Q: {{ message['content'] }}\n"
    # nothing after EOS: the assistant turn is exactly the response + EOS, the tokens score.py
    # and the trainer sum, and the tokens TRL sums when it applies this template
    "{% elif message['role'] == 'assistant' %}A: {{ message['content'] }}{{ eos_token }}"
    "{% endif %}"
    "{% endfor %}"
    "{% if add_generation_prompt %}A: {% endif %}"
)


@dataclass(frozen=True)
class ToyModelConfig:
    """Shape of a toy model; the defaults are what the shipped weights use."""

    hidden_size: int = 128
    num_layers: int = 2
    num_heads: int = 2
    head_dim: int = 64
    intermediate_size: int = 256
    max_positions: int = 512


def vocab() -> dict[str, int]:
    return {tok: i for i, tok in enumerate(SPECIALS + CHARS)}


def build_tokenizer():
    """A ``PreTrainedTokenizerFast`` over single characters, with the chat template."""
    from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    raw = Tokenizer(models.WordLevel(vocab(), unk_token=UNK))
    # [\s\S] rather than "." so newlines become tokens of their own too.
    raw.pre_tokenizer = pre_tokenizers.Split(Regex(r"[\s\S]"), behavior="isolated")
    # Fuse joins the pieces with nothing between them (the default joins with spaces).
    raw.decoder = decoders.Fuse()
    raw.add_special_tokens(list(SPECIALS))
    return PreTrainedTokenizerFast(
        tokenizer_object=raw,
        bos_token=BOS, eos_token=EOS, pad_token=PAD, unk_token=UNK,
        chat_template=CHAT_TEMPLATE,
        # Clean-up would eat the space in "1 ." style text and break round-trips.
        clean_up_tokenization_spaces=False,
        model_max_length=ToyModelConfig.max_positions,
        padding_side="left",  # batched generation continues from the right edge
    )


def build_model(cfg: ToyModelConfig = ToyModelConfig(), seed: int = 0):
    """A freshly initialised ``LlamaForCausalLM`` sized by ``cfg``."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    ids = vocab()
    config = LlamaConfig(
        vocab_size=len(ids),
        hidden_size=cfg.hidden_size,
        intermediate_size=cfg.intermediate_size,
        num_hidden_layers=cfg.num_layers,
        num_attention_heads=cfg.num_heads,
        num_key_value_heads=cfg.num_heads,
        head_dim=cfg.head_dim,
        max_position_embeddings=cfg.max_positions,
        rope_theta=10000.0,
        tie_word_embeddings=True,
        bos_token_id=ids[BOS], eos_token_id=ids[EOS], pad_token_id=ids[PAD],
        dtype="float32",
    )
    torch.manual_seed(seed)
    return LlamaForCausalLM(config)


def save_model(model, out_dir: str | Path, *, name: str, meta: dict | None = None) -> Path:
    """Write weights (safetensors), config, tokenizer and generation config to ``out_dir``."""
    from transformers import GenerationConfig

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    ids = vocab()
    model.config.name_or_path = f"prefdata-toy-{name}"
    model.generation_config = GenerationConfig(
        bos_token_id=ids[BOS], eos_token_id=ids[EOS], pad_token_id=ids[PAD],
        do_sample=True, temperature=1.0, max_new_tokens=96,
    )
    model.save_pretrained(out, safe_serialization=True)
    build_tokenizer().save_pretrained(out)
    if meta is not None:
        (out / "toy_meta.json").write_text(json.dumps(meta, indent=2, sort_keys=True) + "\n")
    return out


def config_dict(cfg: ToyModelConfig) -> dict:
    return asdict(cfg)
