import json

import pytest

from prefdata.toy import task


def test_generate_is_deterministic_by_seed():
    a = [p.question for p in task.generate("train", 50, seed=3)]
    b = [p.question for p in task.generate("train", 50, seed=3)]
    c = [p.question for p in task.generate("train", 50, seed=4)]
    assert a == b
    assert a != c


def test_generate_is_prefix_stable():
    small = task.generate("test", 20, seed=1)
    large = task.generate("test", 60, seed=1)
    assert small == large[:20]


def test_splits_are_disjoint_and_unique():
    train = {p.question for p in task.generate("train", 2000, seed=0)}
    test = [p.question for p in task.generate("test", 200, seed=0)]
    assert len(set(test)) == len(test) == 200
    assert train.isdisjoint(test)
    assert all(task.split_of(q) == "test" for q in test)


def test_difficulty_mix_is_respected():
    ps = task.generate("train", 3000, seed=0, mix=(0.0, 1.0, 0.0), unique=False)
    assert {p.difficulty for p in ps} == {2}
    ps = task.generate("train", 3000, seed=0, unique=False)
    share = sum(p.difficulty == 1 for p in ps) / len(ps)
    assert abs(share - task.DEFAULT_MIX[0]) < 0.05


def test_values_stay_in_range_and_answer_is_chain_result():
    for p in task.generate("train", 2000, seed=2, unique=False):
        cur = p.start
        for (a, op, b, r), (op2, b2) in zip(p.steps, p.ops):
            assert (a, op, b) == (cur, op2, b2)
            assert r == eval(f"{a} {op} {b}")
            assert 0 <= r <= task.MAX_VALUE
            cur = r
        assert p.answer == cur
        # The question text evaluates (with Python precedence) to the answer.
        assert eval(p.question.removeprefix("What is ").removesuffix("?")) == p.answer


def test_reference_solution_ends_with_gsm8k_marker():
    for p in task.generate("test", 50, seed=0):
        last = p.reference_solution.splitlines()[-1]
        assert last == f"#### {p.answer}"
        assert len(p.reference_solution.splitlines()) == p.difficulty + 1


def test_styles_are_distinct_and_all_extractable():
    for p in task.generate("test", 50, seed=0):
        texts = [p.solution(s) for s in ("reference", "policy", "other")]
        assert len(set(texts)) == 3
        assert [task.extract_answer(t) for t in texts] == [p.answer] * 3
    with pytest.raises(ValueError):
        p.solution("nope")


@pytest.mark.parametrize("text,expected", [
    ("We compute 2 + 3 = 5.\n#### 5", 5),
    ("####12", 12),
    ("2+3=5. The answer is 5.", 5),
    ("the Answer is 7", 7),
    ("<<2+3=5>> Answer: 5", 5),
    ("<<2+3=5>> Answer: 5 ... Answer: 6", 6),
    ("#### -4", -4),
    ("2+3=5", None),
    ("The answer is", None),
    ("", None),
])
def test_extract_answer(text, expected):
    assert task.extract_answer(text) == expected


def test_write_split_is_gsm8k_compatible(tmp_path):
    path = task.write_split(tmp_path / "d" / "test.jsonl", "test", 30, seed=5)
    rows = [json.loads(line) for line in path.read_text().splitlines()]
    assert len(rows) == 30
    expected = task.generate("test", 30, seed=5)
    for row, p in zip(rows, expected):
        assert row["question"] == p.question
        assert row["answer"].endswith(f"#### {p.answer}")
        assert task.extract_answer(row["answer"]) == row["final_answer"] == p.answer


def test_bad_arguments():
    with pytest.raises(ValueError):
        task.generate("validation", 3)
    with pytest.raises(ValueError):
        task.generate("train", 3, mix=(0, 0, 0))
