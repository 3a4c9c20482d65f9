"""transformers backend: batched `generate` with left padding and vLLM's semantics.

Why a custom sampler: `generate(do_sample=True)` draws every row from one
global RNG, so a prompt's samples would change with whatever else shares its
batch. Here `generate` runs greedy over logits that `_RowSampler` has already
reduced to one token per row, drawn from that row's own `torch.Generator`
seeded with prompt seed + sample index (vLLM's child-seed rule). So a prompt's
samples depend only on its seed, and a resumed run reproduces a full one.
The sampler also records each drawn token's raw log-prob, as vLLM reports it.
"""

from __future__ import annotations

from prefdata.errors import PrefdataError
from prefdata.generate.base import Backend, Completion, Request
from prefdata.generate.config import SamplingConfig
from prefdata.generate.model import checkpoint_dtype, load_tokenizer, validate_model_dir


class _RowSampler:
    """A LogitsProcessor that samples each row itself and returns one-hot logits."""

    def __init__(self, seeds: list[int], temperature: float, top_p: float, device):
        import torch

        self.temperature, self.top_p = temperature, top_p
        self.generators = []
        for seed in seeds:
            gen = torch.Generator(device=device)
            gen.manual_seed(seed)
            self.generators.append(gen)
        self.tokens: list = []  # per step: [rows] chosen ids
        self.logprobs: list = []  # per step: [rows] raw log-prob of the chosen id

    def __call__(self, input_ids, scores):
        import torch

        raw = torch.log_softmax(scores.float(), dim=-1)
        if self.temperature == 0:
            chosen = raw.argmax(dim=-1)
        else:
            probs = torch.softmax(scores.float() / self.temperature, dim=-1)
            if self.top_p < 1.0:
                probs = _top_p(probs, self.top_p)
            chosen = torch.stack([torch.multinomial(probs[i], 1, generator=g)[0]
                                  for i, g in enumerate(self.generators)])
        self.tokens.append(chosen)
        self.logprobs.append(raw.gather(1, chosen[:, None])[:, 0].double())
        out = torch.full_like(scores, float("-inf"))
        out.scatter_(1, chosen[:, None], 0.0)
        return out


class _StopStrings:
    """A StoppingCriteria that, like vLLM, looks for stop strings in the generated
    text only (transformers' own also matches across the prompt boundary)."""

    def __init__(self, tokenizer, stops, prompt_width: int):
        self.tokenizer, self.stops, self.width = tokenizer, stops, prompt_width
        # A token decodes to at least one character, so the last len(stop) tokens
        # hold any stop string that just ended; the margin covers partial UTF-8 pieces.
        self.window = max(len(s) for s in stops) + 4

    def __call__(self, input_ids, scores, **kwargs):
        import torch

        start = max(self.width, input_ids.shape[1] - self.window)
        tails = self.tokenizer.batch_decode(input_ids[:, start:], skip_special_tokens=True)
        return torch.tensor([any(s in t for s in self.stops) for t in tails], device=input_ids.device)


def _top_p(probs, top_p: float):
    """Keep the smallest set of most likely tokens whose mass reaches top_p (at least one)."""
    import torch

    sorted_probs, order = probs.sort(dim=-1, descending=True)
    mass_before = sorted_probs.cumsum(dim=-1) - sorted_probs
    sorted_probs = sorted_probs.masked_fill(mass_before >= top_p, 0.0)
    kept = torch.zeros_like(probs).scatter_(-1, order, sorted_probs)
    return kept / kept.sum(dim=-1, keepdim=True)


class TransformersBackend(Backend):
    name = "transformers"

    def __init__(self, model_path: str, model_hash: str, *, tokenizer=None, batch_size: int = 64,
                 trust_remote_code: bool = False, allow_pickle: bool = False, device: str | None = None,
                 dtype: str | None = None):
        super().__init__(model_path, model_hash)
        import torch
        from transformers import AutoModelForCausalLM

        validate_model_dir(model_path, allow_pickle=allow_pickle, trust_remote_code=trust_remote_code)
        self.tokenizer = tokenizer or load_tokenizer(model_path, trust_remote_code=trust_remote_code)
        self.device = device or ("cuda" if torch.cuda.is_available() else "cpu")
        try:
            self.model = AutoModelForCausalLM.from_pretrained(
                str(model_path), use_safetensors=not allow_pickle, trust_remote_code=trust_remote_code,
                # the checkpoint's dtype unless told, as the vLLM backend runs it
                dtype=getattr(torch, dtype or checkpoint_dtype(model_path)),
            ).to(self.device).eval()
        except (OSError, ValueError) as err:
            first = (str(err).strip().splitlines() or [type(err).__name__])[0]
            raise PrefdataError(f"transformers could not load {model_path}: {first}",
                                "check the model directory (safetensors weights, config.json)") from None
        self.batch_size = batch_size
        gen_eos = self.model.generation_config.eos_token_id
        gen_eos = gen_eos if isinstance(gen_eos, list) else [gen_eos]
        # Like vLLM: the tokenizer's EOS and the generation config's EOS ids all stop.
        self.eos_ids = sorted({i for i in [self.tokenizer.eos_token_id, *gen_eos] if i is not None})
        pad = self.tokenizer.pad_token_id
        self.pad_id = pad if pad is not None else self.eos_ids[0]

    def generate(self, requests: list[Request], sampling: SamplingConfig) -> list[list[Completion]]:
        # One row per (request, sample); rows sorted by prompt length so a batch pads little.
        rows = [(r, i) for r in range(len(requests)) for i in range(sampling.n)]
        rows.sort(key=lambda ri: len(requests[ri[0]].prompt_ids))
        done: dict[tuple[int, int], Completion] = {}
        for start in range(0, len(rows), self.batch_size):
            batch = rows[start:start + self.batch_size]
            results = self._generate_batch([requests[r] for r, _ in batch],
                                           [requests[r].seed + i for r, i in batch], sampling)
            done.update(zip(batch, results))
        return [[done[(r, i)] for i in range(sampling.n)] for r in range(len(requests))]

    def _generate_batch(self, requests: list[Request], seeds: list[int], sampling) -> list[Completion]:
        import torch
        from transformers import GenerationConfig, LogitsProcessorList, StoppingCriteriaList

        self.calls += 1
        width = max(len(r.prompt_ids) for r in requests)
        ids = torch.full((len(requests), width), self.pad_id, dtype=torch.long)
        mask = torch.zeros((len(requests), width), dtype=torch.long)
        for row, r in enumerate(requests):  # left padding: generation continues at the right edge
            ids[row, width - len(r.prompt_ids):] = torch.tensor(r.prompt_ids)
            mask[row, width - len(r.prompt_ids):] = 1
        sampler = _RowSampler(seeds, sampling.temperature, sampling.top_p, "cpu")
        # A fresh config, so the model's own defaults (top_k, repetition penalty...) do not leak in.
        # Each row stops where its own context ends (cut in _finish); the batch runs to the longest.
        limits = [r.max_new_tokens(sampling.max_tokens) for r in requests]
        gen_cfg = GenerationConfig(do_sample=False, max_new_tokens=max(limits), eos_token_id=self.eos_ids,
                                   pad_token_id=self.pad_id)
        stopping = StoppingCriteriaList([_StopStrings(self.tokenizer, sampling.stop, width)] if sampling.stop else [])
        with torch.inference_mode():
            self.model.generate(input_ids=ids.to(self.device), attention_mask=mask.to(self.device),
                                generation_config=gen_cfg, logits_processor=LogitsProcessorList([sampler]),
                                stopping_criteria=stopping)
        tokens = torch.stack(sampler.tokens, dim=1).cpu().tolist()
        logprobs = torch.stack(sampler.logprobs, dim=1).cpu().tolist()
        return [self._finish(t[:limit], lp, sampling) for t, lp, limit in zip(tokens, logprobs, limits)]

    def _finish(self, tokens: list[int], logprobs: list[float], sampling: SamplingConfig) -> Completion:
        """Cut a row where vLLM would have: at the first EOS, else after the token completing a stop
        string, else at its max_tokens (the caller passes only that many tokens)."""
        eos = next((k for k, t in enumerate(tokens) if t in self.eos_ids), None)
        if eos is not None:
            tokens = tokens[:eos + 1]  # the EOS counts as generated, as in vLLM
        text = self._decode(tokens)
        cut = _first_stop(text, sampling.stop)
        if cut is not None:
            # Shortest prefix whose text already holds a stop string: generation stopped there.
            lo, hi = 1, len(tokens)
            while lo < hi:
                mid = (lo + hi) // 2
                if _first_stop(self._decode(tokens[:mid]), sampling.stop) is None:
                    lo = mid + 1
                else:
                    hi = mid
            tokens = tokens[:lo]
            text = self._decode(tokens)
            text = text[:_first_stop(text, sampling.stop)]
            reason = "stop"
        else:
            reason = "stop" if eos is not None else "length"
        return Completion(text=text, finish_reason=reason, logprob=float(sum(logprobs[:len(tokens)])),
                          num_tokens=len(tokens))

    def _decode(self, tokens: list[int]) -> str:
        return self.tokenizer.decode(tokens, skip_special_tokens=True)

    def close(self) -> None:
        self.model = None


def _first_stop(text: str, stops) -> int | None:
    hits = [text.find(s) for s in stops if s in text]
    return min(hits) if hits else None
