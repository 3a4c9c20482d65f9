"""The backend interface: token ids and seeds in, n completions per prompt out.

Every backend follows vLLM's semantics, so a run means the same thing on each:
sample i of a request is drawn with seed `request.seed + i`; `finish_reason`
is "stop" (EOS or a stop string, which is cut from the text) or "length"
(max_tokens reached); `logprob` is the summed log-prob of the generated tokens
(the EOS or the tokens completing a stop string included) under the model's
raw, untempered distribution (vLLM's default `logprobs_mode="raw_logprobs"`).
"""

from __future__ import annotations

import abc
from dataclasses import dataclass

from prefdata.errors import BackendFailed, PrefdataError
from prefdata.generate.config import SamplingConfig


@dataclass(frozen=True)
class Request:
    """One prompt to complete: its rendered text (already templated), its token ids, its seed.

    `room`: new tokens that still fit in the model's context after the prompt (None: unknown).
    Backends stop a sample there, finish_reason "length", as vLLM does at max_model_len.
    """

    prompt: str
    prompt_ids: tuple[int, ...]
    seed: int
    room: int | None = None

    def max_new_tokens(self, max_tokens: int) -> int:
        return max_tokens if self.room is None else max(1, min(max_tokens, self.room))


@dataclass(frozen=True)
class Completion:
    text: str
    finish_reason: str  # "stop" | "length"
    logprob: float | None
    num_tokens: int  # tokens generated, EOS included: what throughput counts


class Backend(abc.ABC):
    """Generates completions. `calls` counts batches that reached the model, so
    tests can prove that a cached run did no model work."""

    name: str = "?"

    def __init__(self, model_path: str, model_hash: str):
        self.model_path = model_path
        self.model_hash = model_hash
        self.calls = 0

    @abc.abstractmethod
    def generate(self, requests: list[Request], sampling: SamplingConfig) -> list[list[Completion]]:
        """For each request, `sampling.n` completions in sample-index order."""

    def close(self) -> None:
        """Release the model (engines, worker processes)."""

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def run_backend(backend: Backend, requests: list[Request], sampling: SamplingConfig,
                model_name: str) -> list[list[Completion]]:
    """`backend.generate`, its failures as one line: a PrefdataError passes as it is; anything
    else the backend raises is a bug here or in the backend (exit 1), named with its first line."""
    try:
        return backend.generate(requests, sampling)
    except PrefdataError:
        raise
    except Exception as err:  # noqa: BLE001 - vLLM/torch raise many types; all end the run the same way
        first = (str(err).strip().splitlines() or [type(err).__name__])[0][:300]
        raise BackendFailed(f"the {backend.name} backend failed while generating for {model_name}: "
                            f"{type(err).__name__}: {first}",
                            "re-run to resume; if it repeats, report it with PREFDATA_DEBUG=1 for the traceback"
                            ) from err
