"""Log-probs the obvious way, from the tokenizer and the model alone (no prefdata code).

The token ids come from the tokenizer's own chat template (with the generation prompt),
the completion text, then the tokenizer's EOS id; the log-probs from one full-logits
forward per sequence, log_softmax, gather. Tests compare prefdata's packed, chunked
scoring and the trainer's reports against these.
"""

from __future__ import annotations


def reference_ids(tokenizer, prompt, messages, response):
    """(prompt ids, completion ids) from the tokenizer alone: its chat template, the text, its EOS."""
    turns = messages or [{"role": "user", "content": prompt}]
    rendered = tokenizer.apply_chat_template([dict(t) for t in turns], add_generation_prompt=True,
                                             tokenize=False)
    # the template writes BOS itself; the tokenizer must not add special tokens a second time
    p = tokenizer(rendered, add_special_tokens=False)["input_ids"]
    eos = tokenizer.convert_tokens_to_ids(tokenizer.eos_token)
    c = tokenizer(response, add_special_tokens=False)["input_ids"] + [eos]
    return p, c


def plain_logp(model, tokenizer, prompt, messages, response):
    """(summed completion log-prob, completion tokens): full logits, log_softmax, gather, sum."""
    import torch

    p, c = reference_ids(tokenizer, prompt, messages, response)
    ids = torch.tensor([p + c])
    with torch.no_grad():
        logp = model(ids).logits.float().log_softmax(-1)[0, :-1]
    token = logp.gather(-1, ids[0, 1:, None]).squeeze(-1)[len(p) - 1:]
    return token.double().sum().item(), len(c)  # fp64 sum: compare token values, not rounding
