"""The build's first step: the source's prompts, cleaned of contamination and near-duplicates,
stored in the workspace beside the held-out prompts the trainer measures on.

The toy world is written as GSM8K-style JSONL on first use (`toy_source_dir`), so
every source, toy or real, goes through the same loader.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import replace
from pathlib import Path

from prefdata.build_state import BuildState
from prefdata.config import TOY
from prefdata.errors import PrefdataError
from prefdata.store import Workspace

TOY_ROWS = {"train": 4000, "test": 1000}  # toy split sizes written for the source (prefix-stable)


def toy_source_dir(seed: int) -> Path:
    """The toy task written as GSM8K-style JSONL (`toy/train.jsonl`, `toy/test.jsonl`), cached."""
    from prefdata.toy import task
    from prefdata.toy.train import cache_dir

    folder = cache_dir() / "data" / f"seed{seed}" / TOY
    for split, rows in TOY_ROWS.items():
        path = folder / f"{split}.jsonl"
        if not path.exists():
            task.write_split(path, split, rows, seed=seed)
    return folder


def resolve_toy(spec, seed: int):
    return replace(spec, path_or_name=str(toy_source_dir(seed))) if spec.path_or_name == TOY else spec


def step_ingest(state: BuildState) -> BuildState:
    """Load the source's prompts, drop contaminated and near-duplicate ones (before
    sampling and --limit); store the ones the workspace does not have yet. With no source
    named and imported candidates present, build on the imported candidates' prompts."""
    from prefdata.importing.reuse import imported_prompts
    from prefdata.sources import load_prompts

    if state.cfg.source.path_or_name == TOY:
        imported = imported_prompts(state.ws)
        if imported is not None:
            state.prompts = imported
            state.summary["prompts"] = {"source": "imported", "rows_kept": imported.num_rows,
                                        "duplicates_removed": 0, "new_in_workspace": 0, "heldout_stored": 0}
            state.log(f"prompts: {imported.num_rows} from imported candidates")
            return state
    spec = resolve_toy(state.cfg.source, state.cfg.seed)
    heldout = _load_heldout(state, spec)
    hygiene = _prompt_hygiene(state, heldout)
    prompts, stats = load_prompts(spec, prefilter=hygiene)
    if prompts.num_rows == 0:
        raise PrefdataError(f"source {spec.path_or_name} gave no prompts"
                            + (f" ({hygiene.counts} dropped by data hygiene)" if hygiene.counts else ""),
                            "check --split, --limit and the file")
    new = _new_prompts(state.ws, prompts)
    if new.num_rows:
        key = "src-" + _digest(sorted(new.column("prompt_id").to_pylist()))
        state.ws.write_part("prompts", key, new)
    state.prompts = prompts
    state.hygiene = hygiene
    dropped = {reason: hygiene.counts.get(reason, 0) for reason in ("contaminated", "near_duplicate")}
    state.summary["prompts"] = {**stats.to_dict(), **dropped, "new_in_workspace": new.num_rows,
                                "heldout_stored": _store_heldout(state, heldout)}
    state.summary["hygiene"] = {**state.summary.get("hygiene", {}), **dropped}
    too_large = f"{stats.too_large} dropped as prompt_too_large, " if stats.too_large else ""
    state.log(f"prompts: {stats.rows_read} read, {too_large}{stats.duplicates_removed} duplicates removed, "
              f"{dropped['contaminated']} contaminated, {dropped['near_duplicate']} near-duplicates, "
              f"{prompts.num_rows} used ({new.num_rows} new to the workspace)")
    return state


def _prompt_hygiene(state: BuildState, heldout):
    """The ingest filter: evaluation sets of `select.decontaminate` plus the workspace's held-out
    prompts (stored ones and the ones this build is about to store), and near-duplicates."""
    import polars as pl

    from prefdata.hygiene.stage import PromptHygiene, item_texts, load_eval_sets
    from prefdata.select import SelectConfig

    sel = SelectConfig(**state.cfg.select)
    evals, sets = load_eval_sets(sel.decontaminate, resolve=lambda spec: resolve_toy(spec, state.cfg.seed))
    stored = state.ws.read_polars("prompts").filter(pl.col("split") == "test")
    if heldout is not None:
        stored = pl.concat([stored, pl.from_arrow(heldout).select(stored.columns)])
    evals = pl.concat([evals, item_texts(stored, "heldout", heldout=True)])
    threshold = sel.near_duplicate_threshold if sel.near_duplicates else None
    state.summary["hygiene"] = {
        "decontaminate": sets, "heldout_items": stored["prompt_id"].n_unique(), "n": sel.decontaminate_n,
        "chosen_checked": sel.decontaminate_chosen, "near_duplicate_threshold": threshold}
    return PromptHygiene(evals, n=sel.decontaminate_n, near_threshold=threshold, seed=state.cfg.seed)


def _load_heldout(state: BuildState, spec):
    """Up to `cfg.heldout` prompts of the source's test split (never generated for): the
    trainer measures held-out accuracy on them. A source without a test split has none."""
    from prefdata.sources import load_prompts

    if state.cfg.heldout <= 0 or spec.split == "test":
        return None
    try:
        return load_prompts(replace(spec, split="test", limit=state.cfg.heldout, sample=None, offset=0))[0]
    except PrefdataError:
        return None


def _store_heldout(state: BuildState, heldout) -> int:
    """Store the held-out prompts the workspace does not have yet; returns how many."""
    if heldout is None:
        return 0
    heldout = _new_prompts(state.ws, heldout)
    if heldout.num_rows:
        state.ws.write_part("prompts", "heldout-" + _digest(sorted(heldout.column("prompt_id").to_pylist())),
                            heldout)
    return heldout.num_rows


def _new_prompts(ws: Workspace, prompts):
    """The rows of `prompts` the workspace lacks; refuses a stored prompt whose content changed."""
    import pyarrow.compute as pc

    from prefdata.rebuild import CONTENT, refuse_changed_prompts

    known = ws.read("prompts", ["prompt_id", *CONTENT])
    refuse_changed_prompts(known, prompts, ws.root)
    return prompts.filter(pc.invert(pc.is_in(prompts.column("prompt_id"), value_set=known.column("prompt_id"))))


def _digest(values) -> str:
    return hashlib.sha256(json.dumps(values).encode()).hexdigest()[:16]
