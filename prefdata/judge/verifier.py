"""Rule verifier for math answers: extract the final answer, compare with math-verify.

Answer extraction, first rule that matches wins (the *last* match in the text,
because solutions restate intermediate numbers before the final one):

1. GSM8K style ``#### 57`` (dataset references, the toy world's references);
2. ``\\boxed{57}`` (MATH-style solutions, most reasoning models), braces nested
   up to three deep (``\\boxed{\\frac{1}{2}}``);
3. ``The answer is 57.`` / ``Answer: 57`` (the toy policy and other models,
   and most chat models);
4. ``A: 57`` at the start of a line (few-shot Q:/A: prompting);
5. otherwise math-verify's own extraction over the text (the last LaTeX or
   plain expression).

Rules 1-4 give the answer directly, so a plain-number answer is checked in
process; only rule 5 and non-numeric answers go to the slow math-verify path.

Two plain numbers are compared in-process (exact decimal equality, commas
ignored), which covers GSM8K-like data without touching sympy; everything else
goes to math-verify (``verify(gold, answer)``) in a `TimeoutPool` of worker
processes, because sympy on adversarial model output can run for minutes.
Identical (answer, reference) pairs are checked once (an in-memory cache).

Outcomes: ``ok`` with score 1.0/0.0 and ``correct``; ``unverifiable`` (no answer
found, or the reference cannot be parsed) with score null; ``timeout`` with
score null when one check passes ``timeout_s``.

>>> extract_answer("We compute 2 + 3 = 5.\\n#### 5")
'5'
>>> extract_answer("2+3=5. The answer is 5.")
'5'
>>> extract_answer("<<2+3=5>> Answer: 5")
'5'
>>> extract_answer("So the total is $\\\\boxed{5}$.")
'5'
>>> extract_answer("Q: 2+3?\\nA: 5")
'5'
>>> extract_answer("no digits here") is None
True
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from typing import Sequence

from prefdata.judge.base import JudgeItem, Verdict, config_hash

RULES_VERSION = 2  # bump when extraction rules change: judgments are re-computed
_GSM8K = re.compile(r"####\s*([^\n]*\S)")
_BOXED = re.compile(r"\\boxed\s*\{((?:[^{}]|\{(?:[^{}]|\{(?:[^{}]|\{[^{}]*\})*\})*\})*)\}")
_PHRASE = re.compile(r"\banswer(?:\s+is\s*:?|\s*:)\s*([^\n]*\S)", re.IGNORECASE)
_QA = re.compile(r"^[ \t]*A:[ \t]*([^\n]*\S)", re.MULTILINE)
_NUMBER = re.compile(r"-?(?:\d{1,3}(?:,\d{3})+|\d+)(?:\.\d+)?|-?\.\d+")
# "$18", "18 apples", "-3.5 km": a number with a currency sign or one unit word is that number
_NUMBER_WITH_UNIT = re.compile(r"\$?(-?(?:\d{1,3}(?:,\d{3})+|\d+)(?:\.\d+)?)(?:\s*[A-Za-z%]+)?")
_MAX_FALLBACK_CHARS = 2000  # math-verify sees the tail only: the final answer is there


def extract_answer(text: str) -> str | None:
    """The anchored final answer of `text` (rules 1-4), or None when there is no anchor."""
    for pattern in (_GSM8K, _BOXED, _PHRASE, _QA):
        matches = pattern.findall(text)
        if matches:
            answer = _clean(matches[-1])
            if answer:
                return answer
    return None


def _clean(answer: str) -> str:
    # "57." ends a sentence; "$57$" is LaTeX-wrapped; neither is part of the value.
    answer = answer.strip().rstrip(".").strip()
    if len(answer) > 1 and answer.startswith("$") and answer.endswith("$"):
        answer = answer.strip("$").strip()
    unit = _NUMBER_WITH_UNIT.fullmatch(answer)
    return unit.group(1) if unit else answer


def plain_number(text: str) -> Decimal | None:
    """`text` as a Decimal when it is exactly one plain number (``1,234.5``, ``-3``)."""
    text = text.strip()
    if not _NUMBER.fullmatch(text):
        return None
    try:
        return Decimal(text.replace(",", ""))
    except InvalidOperation:
        return None


def _init_worker() -> None:
    import logging

    import math_verify  # noqa: F401 - import once, before the worker reports ready

    # It warns once per process that its own timeouts are off; that is deliberate here.
    logging.getLogger("math_verify").setLevel(logging.ERROR)


def check_with_math_verify(answer: str, reference: str) -> tuple[str, bool | None, str]:
    """Worker-side check: (status, correct, detail). Module-level so `spawn` can pickle it."""
    from math_verify import parse, verify

    # math-verify's own signal timeouts are off: TimeoutPool is the one authority,
    # so a slow item reads "timeout", never a silent "incorrect".
    gold = parse(reference, parsing_timeout=None)
    if not gold:
        return "unverifiable", None, f"reference unparsable: {reference[:200]!r}"
    pred = parse(answer, parsing_timeout=None)
    if not pred:
        return "unverifiable", None, "no answer found"
    ok = verify(gold, pred, timeout_seconds=None)
    return "ok", bool(ok), f"answer={str(pred[-1])[:200]!r}; reference={str(gold[-1])[:200]!r}"


@dataclass(frozen=True)
class VerifierConfig:
    timeout_s: float = 5.0  # per (answer, reference) check, in a worker process
    workers: int = 2
    chunk_size: int = 32  # items per message to a worker: amortises pickling
    start_timeout_s: float = 120.0  # worker start-up (math_verify import) budget


class RuleVerifier:
    """Judge correctness of final answers against the prompt's reference.

    Use as a context manager (or call `close()`) to stop the worker processes.
    """

    name = "verifier"

    def __init__(self, config: VerifierConfig | None = None, *, check_fn=None):
        from importlib.metadata import version

        self.config = config or VerifierConfig()
        # check_fn exists so tests can exercise the timeout path with a function that
        # sleeps; it must be importable by module path (spawned workers import it).
        self._check_fn = check_fn or check_with_math_verify
        self.version = config_hash({"rules": RULES_VERSION, "math_verify": version("math-verify"),
                                    "check": f"{self._check_fn.__module__}.{self._check_fn.__qualname__}"})
        self._cache: dict[tuple[str, str], Verdict] = {}
        self._pool = None
        self.stats = {"fast_path": 0, "pool": 0, "cache_hits": 0, "timeouts": 0}

    def __enter__(self) -> "RuleVerifier":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        if self._pool is not None:
            self._pool.close()
            self._pool = None

    def _reference_of(self, item: JudgeItem) -> str | None:
        if item.reference_answer and item.reference_answer.strip():
            return _clean(item.reference_answer)
        if item.reference_solution and item.reference_solution.strip():
            return extract_answer(item.reference_solution) or item.reference_solution[-_MAX_FALLBACK_CHARS:]
        return None

    def judge(self, items: Sequence[JudgeItem]) -> list[Verdict]:
        verdicts: list[Verdict | None] = [None] * len(items)
        slow: dict[tuple[str, str], list[int]] = {}  # unique slow checks -> item positions
        for i, item in enumerate(items):
            reference = self._reference_of(item)
            if reference is None:
                verdicts[i] = Verdict(None, None, "unverifiable", "no reference answer for this prompt")
                continue
            answer = extract_answer(item.response)
            if answer is None:
                answer = item.response[-_MAX_FALLBACK_CHARS:]
                if not answer.strip():
                    verdicts[i] = Verdict(None, None, "unverifiable", "no answer found")
                    continue
            key = (answer, reference)
            if key in self._cache:
                self.stats["cache_hits"] += 1
                verdicts[i] = self._cache[key]
                continue
            a, r = plain_number(answer), plain_number(reference)
            if a is not None and r is not None:
                self.stats["fast_path"] += 1
                correct = a == r
                verdict = Verdict(1.0 if correct else 0.0, correct, "ok",
                                  f"answer={answer!r}; reference={reference!r}")
                self._cache[key] = verdicts[i] = verdict
                continue
            slow.setdefault(key, []).append(i)
        if slow:
            self._run_slow(slow, verdicts)
        return verdicts  # type: ignore[return-value]

    def _run_slow(self, slow: dict[tuple[str, str], list[int]], verdicts: list) -> None:
        from prefdata.judge.pool import OK, TIMEOUT, TimeoutPool

        if self._pool is None:
            cfg = self.config
            self._pool = TimeoutPool(self._check_fn, workers=cfg.workers, timeout_s=cfg.timeout_s,
                                     chunk_size=cfg.chunk_size, initializer=_init_worker,
                                     start_timeout_s=cfg.start_timeout_s, name="verifier's worker pool")
        keys = list(slow)
        self.stats["pool"] += len(keys)
        for key, (status, value) in zip(keys, self._pool.map(keys)):
            if status == OK:
                check_status, correct, detail = value
                score = None if check_status != "ok" else (1.0 if correct else 0.0)
                verdict = Verdict(score, correct, check_status, detail)
            elif status == TIMEOUT:
                self.stats["timeouts"] += 1
                verdict = Verdict(None, None, "timeout",
                                  f"check ran past {self.config.timeout_s}s; answer={key[0][:200]!r}")
            else:  # the check raised: nothing to verify against, say why
                verdict = Verdict(None, None, "unverifiable", f"verifier error: {value}")
            if status != TIMEOUT:  # a timeout may pass on a less loaded machine: don't cache it
                self._cache[key] = verdict
            for i in slow[key]:
                verdicts[i] = verdict
