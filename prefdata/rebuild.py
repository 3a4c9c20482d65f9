"""What a build in an existing workspace must refuse or explain.

* A prompt's id is a hash of its text and source, so a source re-read with another
  column mapping (`--solution-column` added, a corrected reference) yields the same
  ids with different content. Storing the new rows beside the old ones would give a
  prompt two versions; keeping the old ones silently would build from stale data
  (every candidate judged against a missing reference). `refuse_changed_prompts`
  stops the build instead, naming what changed and how to rebuild.
* When no pair survives selection, `no_pairs_error` names the dominant drop reason
  and what causes it, with the judge's own words where the judge gave no score.

>>> reason_text("uniform", 12)[0]
'12 prompts had policy samples that were all judged alike (all right or all wrong)'
"""

from __future__ import annotations

import polars as pl
import pyarrow as pa

from prefdata.errors import PrefdataError

CONTENT = ("prompt", "messages", "reference_solution", "reference_answer")  # split/index may differ


def refuse_changed_prompts(known: pa.Table, incoming: pa.Table, root) -> None:
    """Raise if a prompt of `incoming` is stored in `known` (same prompt_id) with other content."""
    if known.num_rows == 0 or incoming.num_rows == 0:
        return
    columns = ["prompt_id", *CONTENT]
    old = pl.from_arrow(known.select(columns)).unique("prompt_id", keep="first")
    new = pl.from_arrow(incoming.select(columns)).unique("prompt_id", keep="first")
    both = old.join(new, on="prompt_id", suffix="_new")
    if both.height == 0:
        return
    differs = both.select([pl.col(c).ne_missing(pl.col(f"{c}_new")).alias(c) for c in CONTENT])
    changed = differs.select(pl.any_horizontal(CONTENT)).to_series()
    n = int(changed.sum())
    if not n:
        return
    fields = [c for c in CONTENT if differs[c].any()]
    example = both.filter(changed)["prompt_id"][0]
    raise PrefdataError(
        f"workspace {root} holds an older version of {n} of this source's prompts ({', '.join(fields)} "
        f"differ{'s' if len(fields) == 1 else ''}, e.g. prompt {example}); a build never rewrites the rows "
        "that the workspace's candidates, verdicts and datasets were made from",
        "build into a new workspace path with the new source or column mapping (e.g. "
        "`prefdata build NEW-WS ...`), or keep the mapping the workspace was built with")


# reason -> (what happened, what to do); counts are candidates or prompts (see prefdata.select)
_CAUSES = {
    "unscored": ("candidates got no score from the judge", None),
    "uniform": ("prompts had policy samples that were all judged alike (all right or all wrong)",
                "use more prompts (--limit), more samples (--n) or a higher --temperature"),
    "truncated": ("candidates stopped at the token limit (no final answer)",
                  "raise --max-tokens, or keep them with --set select.drop_truncated=false"),
    "over_budget": ("candidates were longer than select.max_tokens", "raise select.max_tokens"),
    "empty": ("candidates were empty", "check the model and its chat template"),
    "duplicate": ("candidates repeated another sample of the same prompt",
                  "use a higher --temperature or more samples (--n)"),
    "no_reference": ("prompts have no reference solution",
                     "map the source's solution column (--solution-column, or --preset gsm8k/math)"),
    "reference_incorrect": ("prompts' reference solutions were judged wrong by the judge",
                            "check the reference and answer columns (--solution-column, --answer-column)"),
    "no_policy": ("prompts had no usable policy sample", "see the candidate drop reasons above"),
    "no_other": ("prompts had no usable other-model sample", "see the candidate drop reasons above"),
    "tie": ("prompts had chosen and rejected with equal scores", "use a judge with finer scores, or more samples"),
    "inverted": ("prompts had a rejected side scoring above the chosen one",
                 "check the judge: the reference should out-score the samples"),
    "below_margin": ("prompts had a score margin below --min-margin", "lower --min-margin"),
    "same_text": ("prompts had the same text on both sides", "use more samples (--n)"),
}
_UNSCORED_FIX = {
    "no reference answer for this prompt": "the prompts have no reference answer: map the source's solution or "
                                           "answer column (--solution-column, --answer-column, --preset gsm8k)",
    "no answer found": "the responses hold no final answer the verifier can read: raise --max-tokens, or "
                       "use a model that ends with a final answer",
}


def reason_text(reason: str, count: int, judge_says: str | None = None) -> tuple[str, str]:
    what, fix = _CAUSES.get(reason, (f"rows were dropped as {reason}", None))
    if reason == "unscored" and judge_says:
        what = f"{what} (the judge: {judge_says!r})"
        fix = _UNSCORED_FIX.get(judge_says, fix)
    return f"{count} {what}", fix or "use more prompts (--limit), more samples (--n) or a lower --min-margin"


def no_pairs_error(name: str, drops: dict[str, dict[str, int]], unscored_outputs: list[str]) -> PrefdataError:
    """The error for a build whose selection kept nothing: the dominant reason first, its cause, a fix."""
    totals: dict[str, int] = {}
    for per_dataset in drops.values():
        for reason, n in per_dataset.items():
            totals[reason] = totals.get(reason, 0) + n
    if not totals:
        return PrefdataError(f"no pairs survived selection for {name}: no candidates reached selection",
                             "use more prompts (--limit) and check the source")
    reason = max(sorted(totals), key=lambda r: totals[r])
    judge_says = max(set(unscored_outputs), key=unscored_outputs.count) if unscored_outputs else None
    what, fix = reason_text(reason, totals[reason], judge_says)
    others = ", ".join(f"{r}={n}" for r, n in sorted(totals.items(), key=lambda x: -x[1]) if r != reason)
    return PrefdataError(f"no pairs survived selection for {name}: mostly {reason}: {what}"
                         + (f" (other drops: {others})" if others else ""), fix)
