"""OpenAI-compatible endpoint backend: `POST /v1/completions` over plain HTTP.

Used for the "other" model (or any model) served elsewhere, e.g. by
`vllm serve MODEL`. The chat template is still applied locally by the model's
own tokenizer and the prompt is sent as token ids, so the endpoint generates
from exactly the stored `rendered_prompt` (no server-side template, no double
BOS). One request per prompt carries `n`, so the server's parallel sampling
(seed + i for sample i under vLLM) gives the same samples as the vLLM backend.

>>> OpenAIBackend("models/other", "0123abcd", url="http://127.0.0.1:8000")  # doctest: +SKIP
"""

from __future__ import annotations

import json
import os
import time
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor

from prefdata.errors import PrefdataError
from prefdata.generate.base import Backend, Completion, Request
from prefdata.generate.config import SamplingConfig

_RETRYABLE = {408, 409, 429, 500, 502, 503, 504}


class OpenAIBackend(Backend):
    name = "openai"

    def __init__(self, model_path: str, model_hash: str, *, url: str, served_model: str | None = None,
                 api_key_env: str = "OPENAI_API_KEY", concurrency: int = 8, timeout_s: float = 600.0,
                 retries: int = 3, send_token_ids: bool = True):
        super().__init__(model_path, model_hash)
        base = url.rstrip("/")
        self.base = base[:-3] if base.endswith("/v1") else base
        self.api_key = os.environ.get(api_key_env) if api_key_env else None
        self.concurrency, self.timeout_s, self.retries = concurrency, timeout_s, retries
        # Hosted endpoints may accept text prompts only; vLLM accepts token ids.
        self.send_token_ids = send_token_ids
        self.requests_sent = 0
        self.served_model = served_model or self._first_served_model()

    # -- HTTP ------------------------------------------------------------------
    def _call(self, method: str, path: str, body: dict | None = None) -> dict:
        headers = {"Content-Type": "application/json"}
        if self.api_key:
            headers["Authorization"] = f"Bearer {self.api_key}"
        data = json.dumps(body).encode() if body is not None else None
        for attempt in range(self.retries + 1):
            request = urllib.request.Request(self.base + path, data=data, headers=headers, method=method)
            try:
                with urllib.request.urlopen(request, timeout=self.timeout_s) as response:
                    return json.loads(response.read())
            except urllib.error.HTTPError as err:
                detail = _error_text(err)
                if err.code not in _RETRYABLE or attempt == self.retries:
                    raise PrefdataError(f"endpoint {self.base}{path} answered HTTP {err.code}: {detail}",
                                        "check endpoint_url, endpoint_model and the sampling parameters"
                                        ) from None
            except (urllib.error.URLError, TimeoutError, ConnectionError) as err:
                if attempt == self.retries:
                    reason = getattr(err, "reason", err)
                    raise PrefdataError(f"cannot reach endpoint {self.base}: {reason}",
                                        "start the server (e.g. `vllm serve MODEL`) or fix endpoint_url"
                                        ) from None
            time.sleep(min(2 ** attempt, 30))  # transient: overload or a restarting server
        raise AssertionError("unreachable")

    def _first_served_model(self) -> str:
        models = self._call("GET", "/v1/models").get("data") or []
        if not models:
            raise PrefdataError(f"endpoint {self.base} serves no model", "set endpoint_model explicitly")
        return models[0]["id"]

    # -- generation -----------------------------------------------------------
    def _complete(self, request: Request, sampling: SamplingConfig) -> list[Completion]:
        body = {
            "model": self.served_model,
            "prompt": list(request.prompt_ids) if self.send_token_ids else request.prompt,
            "n": sampling.n,
            "temperature": sampling.temperature,
            "top_p": sampling.top_p,
            "max_tokens": request.max_new_tokens(sampling.max_tokens),
            "seed": request.seed,
            "logprobs": 0,  # the sampled tokens' log-probs, summed below
        }
        if sampling.stop:
            body["stop"] = list(sampling.stop)
        answer = self._call("POST", "/v1/completions", body)
        self.requests_sent += 1
        choices = sorted(answer.get("choices") or [], key=lambda c: c.get("index", 0))
        if len(choices) != sampling.n:
            raise PrefdataError(f"endpoint returned {len(choices)} choices for n={sampling.n}",
                                "use a server that supports n > 1 in /v1/completions (vLLM does)")
        return [_completion(choice) for choice in choices]

    def generate(self, requests: list[Request], sampling: SamplingConfig) -> list[list[Completion]]:
        if not requests:
            return []
        self.calls += 1
        with ThreadPoolExecutor(max_workers=self.concurrency) as pool:
            return list(pool.map(lambda r: self._complete(r, sampling), requests))


def _completion(choice: dict) -> Completion:
    reason = choice.get("finish_reason")
    if reason not in ("stop", "length"):
        raise PrefdataError(f"endpoint finished a completion with reason {reason!r}",
                            "check the server log; re-run to retry")
    logprobs = (choice.get("logprobs") or {}).get("token_logprobs")
    total = float(sum(lp for lp in logprobs if lp is not None)) if logprobs else None
    return Completion(text=choice.get("text") or "", finish_reason=reason, logprob=total,
                      num_tokens=len(logprobs) if logprobs else 0)


def _error_text(err) -> str:
    try:
        payload = json.loads(err.read())
        message = payload.get("error", payload)
        message = message.get("message", message) if isinstance(message, dict) else message
    except (ValueError, OSError, AttributeError):
        message = err.reason
    return " ".join(str(message).split())[:300]
