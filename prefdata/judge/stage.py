"""The judge stage: judge every candidate that this judge (name + version) has not judged.

Work is keyed by (candidate_id, judge_name, judge_version): the stage reads the
judgments already in the workspace, anti-joins them away, and writes each batch
of new verdicts as one part whose key is a hash of the judge and the batch's
candidate ids. A killed run keeps every batch it finished; the next run judges
only the rest, so no candidate is judged twice and none is lost.
"""

from __future__ import annotations

import hashlib
from typing import Callable, Sequence

import polars as pl
import pyarrow as pa

from prefdata.judge.base import Judge, JudgeItem
from prefdata.schemas import schema


def _key(*parts: str) -> str:
    return hashlib.sha256("\x1f".join(parts).encode()).hexdigest()


def pending_items(ws, judge: Judge, origins: Sequence[str] | None = None) -> list[JudgeItem]:
    """Candidates (with their prompt's reference) not yet judged by this judge, by candidate_id."""
    cands = ws.read_polars("candidates", ["candidate_id", "prompt_id", "origin", "text"])
    if origins is not None:
        cands = cands.filter(pl.col("origin").is_in(list(origins)))
    done = ws.read_polars("judgments", ["candidate_id", "judge_name", "judge_version"]).filter(
        (pl.col("judge_name") == judge.name) & (pl.col("judge_version") == judge.version))
    cands = cands.join(done.select("candidate_id"), on="candidate_id", how="anti")
    prompts = ws.read_polars("prompts", ["prompt_id", "prompt", "reference_solution", "reference_answer"])
    rows = cands.join(prompts, on="prompt_id", how="left").sort("candidate_id")
    return [JudgeItem(r["candidate_id"], r["prompt_id"], r["prompt"] or "", r["text"],
                      r["reference_solution"], r["reference_answer"])
            for r in rows.iter_rows(named=True)]


def judge_candidates(ws, judge: Judge, *, batch_size: int = 256, origins: Sequence[str] | None = None,
                     on_batch: Callable[[int, int], None] | None = None) -> dict[str, int]:
    """Judge the pending candidates in batches; return counts per status (and ``judged``).

    ``on_batch(done, total)`` is called after each part is written (progress bars).
    """
    items = pending_items(ws, judge, origins)
    counts: dict[str, int] = {"judged": 0}
    judge_key = _key(judge.name, judge.version)[:12]
    with ws.writer():
        for start in range(0, len(items), batch_size):
            batch = items[start:start + batch_size]
            verdicts = judge.judge(batch)
            if len(verdicts) != len(batch):
                raise RuntimeError(f"judge {judge.name} returned {len(verdicts)} verdicts for {len(batch)} items")
            table = pa.table({
                "candidate_id": [it.candidate_id for it in batch],
                "prompt_id": [it.prompt_id for it in batch],
                "judge_name": [judge.name] * len(batch),
                "judge_version": [judge.version] * len(batch),
                "score": pa.array([v.score for v in verdicts], pa.float64()),
                "correct": pa.array([v.correct for v in verdicts], pa.bool_()),
                "status": [v.status for v in verdicts],
                "raw_output": pa.array([v.raw_output for v in verdicts], pa.string()),
            }, schema=None).select(schema("judgments").names)
            batch_key = _key(*(it.candidate_id for it in batch))[:16]
            ws.write_part("judgments", f"judge-{judge_key}-{batch_key}", table)
            counts["judged"] += len(batch)
            for v in verdicts:
                counts[v.status] = counts.get(v.status, 0) + 1
            if on_batch is not None:
                on_batch(min(start + batch_size, len(items)), len(items))
        ws.write_manifest(stage=f"judge:{judge.name}", config={"judge_name": judge.name,
                                                              "judge_version": judge.version})
    return counts
