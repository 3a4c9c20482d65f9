from __future__ import annotations

import time

import pytest

from prefdata.judge.base import JudgeItem
from prefdata.judge.pool import TimeoutPool
from prefdata.judge.verifier import RuleVerifier, VerifierConfig, extract_answer, plain_number
from prefdata.errors import PrefdataError
from tests.judge.helpers import die_at_start, fail_at_start, slow_check

REF = "We compute 12 + 7 = 19.\nThen 19 * 3 = 57.\n#### 57"


def item(response, reference_solution=REF, reference_answer=None, cid="c"):
    return JudgeItem(cid, "p", "What is (12 + 7) * 3?", response, reference_solution, reference_answer)


@pytest.mark.parametrize("text, expected", [
    ("We compute 2 + 3 = 5.\n#### 5", "5"),
    ("#### 1,234", "1,234"),
    ("12+7=19, 19*3=57. The answer is 57.", "57"),
    ("<<12+7=19>> <<19*3=57>> Answer: 57", "57"),
    ("the answer is: $\\frac{1}{2}$.", "\\frac{1}{2}"),
    # the last anchor wins: solutions restate intermediate answers
    ("The answer is 3. Wait, no.\nThe answer is 4.", "4"),
    # GSM8K marker outranks phrases, wherever they are
    ("#### 9\nThe answer is 8.", "9"),
    ("12 + 7 = 19", None),
    ("", None),
])
def test_extract_answer(text, expected):
    assert extract_answer(text) == expected


def test_plain_number():
    assert plain_number("1,234.50") == plain_number("1234.5")
    assert plain_number("-3") == -3
    assert plain_number("\\frac{1}{2}") is None
    assert plain_number("1,23") is None  # not a thousands grouping


def test_toy_styles_and_outcomes():
    items = [
        item("12+7=19, 19*3=57. The answer is 57."),           # policy style, right
        item("<<12+7=19>> <<19*3=57>> Answer: 56"),             # other style, wrong
        item(REF),                                              # the reference judged like a candidate
        item("x = \\frac{1}{2}", None, "0.5"),                  # math-verify path, right
        item("so we get 57", None, "57"),                       # no anchor: last expression
        item("I do not know.", None, "57"),                     # no answer at all
        item("The answer is 3.", None, "not a number"),         # reference unparsable
        item("The answer is 3.", None, None),                   # no reference at all
    ]
    with RuleVerifier(VerifierConfig(workers=1)) as verifier:
        verdicts = verifier.judge(items)
    assert [(v.score, v.correct, v.status) for v in verdicts] == [
        (1.0, True, "ok"), (0.0, False, "ok"), (1.0, True, "ok"), (1.0, True, "ok"), (1.0, True, "ok"),
        (None, None, "unverifiable"), (None, None, "unverifiable"), (None, None, "unverifiable"),
    ]
    assert "no answer" in verdicts[5].raw_output
    assert "reference unparsable" in verdicts[6].raw_output
    assert all(v.raw_output for v in verdicts)


def test_fast_path_and_cache_avoid_the_pool():
    with RuleVerifier(VerifierConfig(workers=1)) as verifier:
        items = [item(f"The answer is {i % 60}.", cid=str(i)) for i in range(5000)]
        start = time.perf_counter()
        verdicts = verifier.judge(items)
        elapsed = time.perf_counter() - start
        assert sum(v.correct for v in verdicts) == sum(1 for i in range(5000) if i % 60 == 57)
        assert verifier._pool is None  # plain numbers never start a worker
        assert verifier.stats["fast_path"] == 60 and verifier.stats["cache_hits"] == 4940
    assert elapsed < 2.0


def test_timeout_is_per_item_and_pool_recovers():
    config = VerifierConfig(workers=1, timeout_s=1.0, chunk_size=4)
    with RuleVerifier(config, check_fn=slow_check) as verifier:
        items = [item("x = \\frac{1}{2}", None, "0.5", cid="a"),
                 item("The answer is SLEEP", None, "0.5", cid="b"),
                 item("x = \\frac{2}{4}", None, "0.5", cid="c"),
                 item("The answer is CRASH", None, "0.5", cid="d")]
        start = time.perf_counter()
        verdicts = verifier.judge(items)
        assert time.perf_counter() - start < 30  # the sleeping item did not hold the pool for 60 s
    assert [v.status for v in verdicts] == ["ok", "timeout", "ok", "unverifiable"]
    assert verdicts[1].score is None and verdicts[1].correct is None
    assert verdicts[2].correct is True  # re-queued onto a fresh worker after the kill
    assert "boom" in verdicts[3].raw_output
    assert verifier.stats["timeouts"] == 1


def test_pool_keeps_input_order_with_two_workers():
    with TimeoutPool(slow_check, workers=2, timeout_s=30, chunk_size=3) as pool:
        out = pool.map([(str(i), str(i % 2)) for i in range(10)])
    assert [status for status, _ in out] == ["ok"] * 10
    assert [value[1] for _, value in out] == [i % 2 == i for i in range(10)]


@pytest.mark.parametrize("initializer, why", [(die_at_start, "died at start (exit code 3)"),
                                              (fail_at_start, "ImportError: No module named")])
def test_pool_gives_up_after_bounded_failed_starts(initializer, why):
    """A worker that never becomes ready is replaced a bounded number of times, then the pool
    stops with one line saying why; before, it respawned about once a second, forever."""
    pool = TimeoutPool(slow_check, workers=2, timeout_s=30, initializer=initializer, max_start_failures=3,
                       name="test pool")
    start = time.perf_counter()
    with pytest.raises(PrefdataError) as caught:
        pool.map([("1", "1"), ("2", "2")])
    assert time.perf_counter() - start < 60
    message = str(caught.value)
    assert "test pool could not start a worker process: 3 failed starts in a row" in message
    assert why in message and "\n" not in message
    assert pool._workers == []  # every process it started is gone


# Final-answer styles of real model outputs, written by hand; each must be read by a rule
# (not the math-verify fallback), so that plain numbers are checked in process.
STYLES = [
    ("Natalia sold 48 clips in April and 24 in May.\n48 + 24 = 72\n#### 72", "72"),
    ("She sold 48 + 24 = 72 clips altogether. The answer is 72.", "72"),
    ("Q: How many clips did Natalia sell?\nA: 72", "72"),
    ("Q: How many clips?\nA: 72 clips", "72"),
    ("Adding, $48 + 24 = 72$, so the total is $\\boxed{72}$.", "72"),
    ("The sum is \\boxed{72}. The answer is \\boxed{72}", "72"),
    ("First \\boxed{70}, corrected: \\boxed{72}", "72"),
    ("It costs $\\boxed{\\frac{3}{4}}$ dollars.", "\\frac{3}{4}"),
    ("The answer is $18.", "18"),
    ("The answer is 3.5 km.", "3.5"),
]


@pytest.mark.parametrize("text, expected", STYLES)
def test_extract_answer_reads_common_styles(text, expected):
    assert extract_answer(text) == expected


def test_common_styles_are_judged_without_the_pool():
    responses = [text for text, answer in STYLES if answer == "72"]
    wrong = ["So the total is $\\boxed{71}$.", "Q: total?\nA: 70", "#### 7", "The answer is 720."]
    items = [item(r, None, "72", cid=str(i)) for i, r in enumerate(responses + wrong)]
    with RuleVerifier(VerifierConfig(workers=1)) as verifier:
        verdicts = verifier.judge(items)
        assert verifier._pool is None  # every answer was read by a rule and compared in process
    assert [v.correct for v in verdicts] == [True] * len(responses) + [False] * len(wrong)
    assert verifier.stats["fast_path"] == 5  # "72" once (then cached), the four wrong answers
