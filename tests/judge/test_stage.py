"""judge_candidates: judges only what this judge (name + version) has not judged yet."""

from __future__ import annotations

import pyarrow as pa

from prefdata.judge.base import JudgeItem, Verdict
from prefdata.judge.stage import judge_candidates
from prefdata.store import Workspace


class CountingJudge:
    """A judge whose verdict is the response's length parity; counts what it was asked."""

    name = "count"

    def __init__(self, version="v1", fail_after=None):
        self.version, self.seen, self.fail_after = version, [], fail_after

    def judge(self, items: list[JudgeItem]) -> list[Verdict]:
        if self.fail_after is not None and len(self.seen) >= self.fail_after:
            raise KeyboardInterrupt("killed mid-run")
        self.seen += [it.candidate_id for it in items]
        return [Verdict(float(len(it.response) % 2), None, "ok", it.reference_answer) for it in items]


def make_ws(tmp_path, n=10):
    ws = Workspace.create(tmp_path / "ws")
    prompts = pa.table({"prompt_id": ["p0", "p1"], "source": ["t", "t"], "split": ["train", "train"],
                        "source_index": [0, 1], "prompt": ["q0", "q1"],
                        "reference_solution": ["#### 1", "#### 2"], "reference_answer": ["1", "2"]})
    cands = pa.table({
        "candidate_id": [f"c{i:02d}" for i in range(n)], "prompt_id": [f"p{i % 2}" for i in range(n)],
        "origin": ["policy"] * n, "model_name": ["m"] * n, "model_hash": ["h"] * n, "backend": ["x"] * n,
        "sampling_params": ["{}"] * n, "seed": [0] * n, "sample_index": list(range(n)), "work_key": ["k"] * n,
        "text": ["a" * i for i in range(n)], "token_count": list(range(n)), "finish_reason": ["stop"] * n})
    with ws.writer():
        ws.write_part("prompts", "p", prompts)
        ws.write_part("candidates", "c", cands)
    return ws


def test_resumable_without_duplicates(tmp_path):
    ws = make_ws(tmp_path)
    crashing = CountingJudge(fail_after=4)  # dies on its third batch
    try:
        judge_candidates(ws, crashing, batch_size=2)
    except KeyboardInterrupt:
        pass
    assert ws.count("judgments") == 4
    judge = CountingJudge()
    counts = judge_candidates(ws, judge, batch_size=2)
    assert counts == {"judged": 6, "ok": 6}
    assert judge.seen == [f"c{i:02d}" for i in range(4, 10)]  # only the rest
    rows = ws.read_polars("judgments").sort("candidate_id")
    assert rows["candidate_id"].to_list() == [f"c{i:02d}" for i in range(10)]
    assert rows["score"].to_list() == [float(i % 2) for i in range(10)]
    assert rows["raw_output"].to_list() == [str(i % 2 + 1) for i in range(10)]  # the prompt's reference
    assert judge_candidates(ws, CountingJudge()) == {"judged": 0}  # nothing left
    assert ws.manifest()["tables"]["judgments"]["rows"] == 10


def test_new_version_rejudges_everything(tmp_path):
    ws = make_ws(tmp_path, n=4)
    judge_candidates(ws, CountingJudge("v1"))
    assert judge_candidates(ws, CountingJudge("v2"))["judged"] == 4
    assert ws.count("judgments") == 8
