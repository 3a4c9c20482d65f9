"""Reward-model judge: a sequence classifier's scalar logit is the score.

Loads ``AutoModelForSequenceClassification`` from local safetensors only (a
pickle checkpoint can run code on load) with ``trust_remote_code`` off unless
the config says otherwise. Scores are computed batched, without grad, on
(prompt, response) rendered by the tokenizer's chat template when it has one.
Batches group texts of similar length (fewer pad tokens) and scores are put
back in input order; padding is on the right with an attention mask, so a
text's score does not depend on what it was batched with.

Long inputs are truncated from the left: the classifier reads the last token,
which is the end of the response, so that end is what must survive.
``stats["truncated"]`` counts them.

``correct`` is None: a reward model ranks, it does not check answers.
"""

from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

from prefdata.errors import PrefdataError
from prefdata.judge.base import JudgeItem, Verdict


@dataclass(frozen=True)
class RewardModelConfig:
    model_path: str
    batch_size: int = 8
    max_length: int = 2048  # tokens of prompt + response, chat template included
    device: str = "cpu"
    dtype: str = "float32"  # "bfloat16" on GPU
    trust_remote_code: bool = False
    label_index: int | None = None  # which logit is the reward when num_labels > 1


def weights_hash(path: Path) -> str:
    """sha256 (12 hex) of config.json and the safetensors files: the judge's version."""
    digest = hashlib.sha256()
    files = sorted(path.glob("*.safetensors"))
    for file in [path / "config.json", *files]:
        digest.update(file.name.encode())
        with open(file, "rb") as fh:
            for block in iter(lambda: fh.read(1 << 20), b""):
                digest.update(block)
    return digest.hexdigest()[:12]


class RewardModelJudge:
    def __init__(self, config: RewardModelConfig):
        import torch
        from transformers import AutoModelForSequenceClassification, AutoTokenizer

        from prefdata.generate.model import validate_model_dir

        path = Path(config.model_path)
        if path.is_dir():  # config, custom code, sizes and weights, before transformers sees it
            validate_model_dir(path, trust_remote_code=config.trust_remote_code)
        if not (path / "config.json").is_file():
            raise PrefdataError(f"no reward model at {path} (config.json missing)",
                                "pass a local Hugging Face model directory")
        if not list(path.glob("*.safetensors")):
            raise PrefdataError(f"reward model {path} has no .safetensors weights",
                                "convert the checkpoint to safetensors; pickle weights are not loaded")
        self.config = config
        self.name = f"rm:{path.name}"
        self.version = f"{weights_hash(path)}-{config.max_length}-{config.label_index}"
        self.tokenizer = AutoTokenizer.from_pretrained(path, trust_remote_code=config.trust_remote_code)
        self.tokenizer.padding_side = "right"
        self.tokenizer.truncation_side = "left"
        if self.tokenizer.pad_token is None:
            self.tokenizer.pad_token = self.tokenizer.eos_token
        self.model = AutoModelForSequenceClassification.from_pretrained(
            path, use_safetensors=True, trust_remote_code=config.trust_remote_code,
            dtype=getattr(torch, config.dtype)).to(config.device).eval()
        # Llama-style classifiers find each row's last real token through pad_token_id.
        self.model.config.pad_token_id = self.tokenizer.pad_token_id
        labels = self.model.config.num_labels
        if labels != 1 and config.label_index is None:
            raise PrefdataError(f"reward model {path} has {labels} output labels",
                                "set label_index to the logit that is the reward")
        self._label = config.label_index or 0
        self.stats = {"truncated": 0}

    def render(self, item: JudgeItem) -> str:
        if getattr(self.tokenizer, "chat_template", None):
            messages = [{"role": "user", "content": item.prompt},
                        {"role": "assistant", "content": item.response}]
            return self.tokenizer.apply_chat_template(messages, tokenize=False)
        return f"{item.prompt}\n\n{item.response}"

    def score_texts(self, texts: Sequence[str]) -> list[float]:
        import torch

        encoded = [self.tokenizer(t, add_special_tokens=True)["input_ids"] for t in texts]
        self.stats["truncated"] += sum(len(ids) > self.config.max_length for ids in encoded)
        order = sorted(range(len(texts)), key=lambda i: (len(encoded[i]), i))
        scores = [0.0] * len(texts)
        size = self.config.batch_size
        with torch.inference_mode():
            for start in range(0, len(order), size):
                chunk = order[start:start + size]
                batch = self.tokenizer([texts[i] for i in chunk], padding=True, truncation=True,
                                       max_length=self.config.max_length, return_tensors="pt")
                batch = {k: v.to(self.config.device) for k, v in batch.items() if k != "token_type_ids"}
                logits = self.model(**batch).logits[:, self._label].float().cpu().tolist()
                for i, value in zip(chunk, logits):
                    scores[i] = value
        return scores

    def judge(self, items: Sequence[JudgeItem]) -> list[Verdict]:
        scores = self.score_texts([self.render(item) for item in items])
        bad = sum(not math.isfinite(score) for score in scores)
        if bad:  # a NaN would sort above every real score and silently pick pairs
            raise PrefdataError(f"reward model {self.config.model_path} gave non-finite scores (NaN/inf) "
                                f"for {bad} of {len(scores)} responses",
                                "check its weights and dtype (float16 overflows), or use another judge")
        return [Verdict(score, None, "ok", f"{score:.6g}") for score in scores]
