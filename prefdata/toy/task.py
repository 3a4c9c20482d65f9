"""Synthetic arithmetic task of graded difficulty: the toy world's "GSM8K".

A problem is a left-to-right chain of 1-3 operations on small non-negative
integers, written with explicit parentheses so there is no precedence to get
wrong. Every problem can be rendered in three solution styles that share the
same arithmetic but differ in surface form, so a model's log-prob tells which
"distribution" a text came from:

>>> p = Problem(start=12, ops=(("+", 7), ("*", 3)))
>>> p.question
'What is (12 + 7) * 3?'
>>> print(p.reference_solution)
We compute 12 + 7 = 19.
Then 19 * 3 = 57.
#### 57
>>> p.policy_solution
'12+7=19, 19*3=57. The answer is 57.'
>>> p.other_solution
'<<12+7=19>> <<19*3=57>> Answer: 57'
>>> [extract_answer(s) for s in (p.reference_solution, p.policy_solution, p.other_solution)]
[57, 57, 57]

Splits are assigned by a hash of the question text, so train and test are
disjoint for every seed and every size.
"""

from __future__ import annotations

import hashlib
import json
import random
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, Sequence

SPLITS = ("train", "test")
# Small numbers keep the arithmetic learnable by a tiny character-level model
# in a minute of CPU time; every intermediate result stays in 0..MAX_VALUE.
MAX_VALUE = 40
MAX_START = 20
MAX_OPERAND = 9  # for + and -: one digit to copy
MAX_FACTOR = 3  # for *
# Probability of 1, 2 and 3 operations. The default keeps a tiny model near 50%.
DEFAULT_MIX = (0.4, 0.35, 0.25)
_TEST_BUCKETS = 10  # 1 in 10 questions belongs to the held-out split

_OP_FUNCS = {"+": lambda a, b: a + b, "-": lambda a, b: a - b, "*": lambda a, b: a * b}


@dataclass(frozen=True)
class Problem:
    """One chain problem: ``start`` then each ``(op, operand)`` applied in order."""

    start: int
    ops: tuple[tuple[str, int], ...]

    @property
    def difficulty(self) -> int:
        return len(self.ops)

    @property
    def steps(self) -> list[tuple[int, str, int, int]]:
        """``(left, op, right, result)`` for every operation, in order."""
        out, cur = [], self.start
        for op, b in self.ops:
            res = _OP_FUNCS[op](cur, b)
            out.append((cur, op, b, res))
            cur = res
        return out

    @property
    def answer(self) -> int:
        return self.steps[-1][3]

    @property
    def question(self) -> str:
        expr = str(self.start)
        for i, (op, b) in enumerate(self.ops):
            # Parenthesise everything but the last op so the order is explicit.
            expr = f"{expr} {op} {b}"
            if i < len(self.ops) - 1:
                expr = f"({expr})"
        return f"What is {expr}?"

    @property
    def reference_solution(self) -> str:
        lines = []
        for i, (a, op, b, r) in enumerate(self.steps):
            lead = "We compute" if i == 0 else "Then"
            lines.append(f"{lead} {a} {op} {b} = {r}.")
        lines.append(f"#### {self.answer}")
        return "\n".join(lines)

    @property
    def policy_solution(self) -> str:
        eqs = ", ".join(f"{a}{op}{b}={r}" for a, op, b, r in self.steps)
        return f"{eqs}. The answer is {self.answer}."

    @property
    def other_solution(self) -> str:
        eqs = " ".join(f"<<{a}{op}{b}={r}>>" for a, op, b, r in self.steps)
        return f"{eqs} Answer: {self.answer}"

    def solution(self, style: str) -> str:
        """Solution text in ``style``: ``reference``, ``policy`` or ``other``."""
        try:
            return {"reference": self.reference_solution, "policy": self.policy_solution,
                    "other": self.other_solution}[style]
        except KeyError:
            raise ValueError(f"unknown style {style!r}") from None

    def to_record(self) -> dict:
        """GSM8K-compatible row (``question``, ``answer``) plus toy metadata."""
        return {"question": self.question, "answer": self.reference_solution,
                "final_answer": self.answer, "difficulty": self.difficulty}


def split_of(question: str) -> str:
    """The split a question belongs to, fixed by its text alone."""
    h = int.from_bytes(hashlib.sha256(question.encode()).digest()[:8], "big")
    return "test" if h % _TEST_BUCKETS == 0 else "train"


def random_problem(rng: random.Random, difficulty: int) -> Problem:
    """Draw one problem with ``difficulty`` operations; all values stay in 0..MAX_VALUE."""
    cur = rng.randint(1, MAX_START)
    start, ops = cur, []
    for _ in range(difficulty):
        choices = ["+", "-"]
        if 1 <= cur and cur * 2 <= MAX_VALUE:
            choices.append("*")
        op = rng.choice(choices)
        if op == "+":
            b = rng.randint(1, min(MAX_OPERAND, MAX_VALUE - cur)) if cur < MAX_VALUE else 0
            if b == 0:  # cannot add at the ceiling; subtract instead
                op = "-"
        elif op == "*":
            b = rng.randint(2, min(MAX_FACTOR, MAX_VALUE // cur))
        if op == "-":
            b = rng.randint(min(1, cur), min(MAX_OPERAND, cur))  # never below zero
        ops.append((op, b))
        cur = _OP_FUNCS[op](cur, b)
    return Problem(start=start, ops=tuple(ops))


def generate(split: str, n: int, seed: int = 0,
             mix: Sequence[float] = DEFAULT_MIX, unique: bool = True) -> list[Problem]:
    """``n`` problems of ``split``, deterministic in ``(split, n, seed, mix, unique)``.

    With ``unique`` (the default) no question repeats; training streams pass
    ``unique=False`` because the one-operation space is only ~2k questions.

    A larger ``n`` with the same seed extends a smaller one (prefix-stable).

    >>> [p.question for p in generate("test", 2, seed=0)] == [p.question for p in generate("test", 2, seed=0)]
    True
    """
    if split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
    if len(mix) == 0 or any(w < 0 for w in mix) or sum(mix) <= 0:
        raise ValueError(f"mix must be non-negative weights per difficulty, got {mix!r}")
    rng = random.Random(f"prefdata-toy/{split}/{seed}")
    levels = list(range(1, len(mix) + 1))
    seen: set[str] = set()
    out: list[Problem] = []
    live = list(levels)  # levels that still have unseen questions
    while len(out) < n:
        level = rng.choices(levels, weights=mix)[0]
        if level not in live:  # exhausted: fall back to the nearest harder/easier level
            if not any(mix[lv - 1] > 0 for lv in live):
                raise ValueError(f"ran out of distinct {split} problems after {len(out)}")
            level = min((lv for lv in live if mix[lv - 1] > 0), key=lambda lv: abs(lv - level))
        # Redraw within the level, so duplicates do not skew the difficulty mix.
        for _ in range(5_000):
            p = random_problem(rng, level)
            q = p.question
            if (not unique or q not in seen) and split_of(q) == split:
                break
        else:
            live.remove(level)
            continue
        seen.add(q)
        out.append(p)
    return out


def iter_records(split: str, n: int, seed: int = 0) -> Iterator[dict]:
    for p in generate(split, n, seed):
        yield p.to_record()


def write_split(path: str | Path, split: str, n: int, seed: int = 0) -> Path:
    """Write ``n`` problems of ``split`` as GSM8K-style JSONL (``question``, ``answer``)."""
    from prefdata.paths import check_writable_file

    path = Path(path)
    check_writable_file(path, "--out")
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    with tmp.open("w", encoding="utf-8") as f:
        for rec in iter_records(split, n, seed):
            f.write(json.dumps(rec) + "\n")
    tmp.replace(path)
    return path


_ANSWER_PATTERNS = (
    re.compile(r"####\s*(-?\d+)"),
    re.compile(r"answer is\s*(-?\d+)", re.IGNORECASE),
    re.compile(r"Answer:\s*(-?\d+)"),
)


def extract_answer(text: str) -> int | None:
    """Final integer answer of a solution in any of the three styles, else None.

    The last match wins, so a model that restates its answer is read at its end.

    >>> extract_answer("We compute 1 + 1 = 2.\\n#### 2"), extract_answer("1+1=2. The answer is 2.")
    (2, 2)
    >>> extract_answer("<<1+1=2>> Answer: 2"), extract_answer("1+1=2")
    (2, None)
    """
    for pat in _ANSWER_PATTERNS:
        found = pat.findall(text)
        if found:
            return int(found[-1])
    return None


def is_correct(text: str, answer: int) -> bool:
    return extract_answer(text) == answer
