"""`prefdata build`: prompts -> candidates -> judgments -> pairs, in one workspace.

The build is a list of steps sharing one contract: each takes the `BuildState`
(the tables this build has produced so far) and returns it with one more table
filled in. Every step writes through the workspace store, keyed by content, so:

* policy samples are generated and judged once and reused by scenarios 1, 2, 3
  (the other model's by 3 and 4): a second build in the same workspace finds
  them by work key and does no model work;
* a killed build resumes where it stopped (finished shards and judge batches
  are parts on disk; the rest is redone);
* the pairs of a dataset are one part named after it, replaced atomically when
  the dataset is rebuilt.

>>> summary = build(Path("ws"), build_config(scenario_pipeline(2)))  # doctest: +SKIP
"""

from __future__ import annotations

import time
from dataclasses import replace
from pathlib import Path
from types import SimpleNamespace
from typing import Callable

from prefdata import pause
from prefdata.build_state import BuildState
from prefdata.config import SCENARIO_ORIGINS, TOY, BuildConfig
from prefdata.errors import PrefdataError
from prefdata.ingest import step_ingest
from prefdata.store import Workspace

GLOSSARY = "docs/glossary.md"  # in the prefdata repository; `prefdata.glossary` holds the same text


def step_generate(state: BuildState) -> BuildState:
    """Sample the policy and/or other model, as the scenarios need; cached by work key."""
    from prefdata.generate import generate_candidates, reference_candidates, write_reference_candidates
    from prefdata.importing.reuse import imported_work_keys

    origins = state.cfg.origins()
    state.summary["generation"] = {}
    for origin in ("policy", "other"):
        if origin not in origins:
            continue
        keys, n_imported = imported_work_keys(state.ws, state.prompts.column("prompt_id"), origin)
        if n_imported:  # imported responses stand in for this origin's samples: no model is loaded
            state.work_keys |= keys
            state.summary["generation"][origin] = {"imported": n_imported, "candidates_written": 0}
            state.log(f"{origin}: {n_imported} imported candidates used, nothing generated")
            continue
        gen_cfg = getattr(state.cfg, origin)
        stats = generate_candidates(state.ws, state.prompts, gen_cfg)
        state.work_keys |= set(stats.work_keys)
        state.too_long[origin] = stats.too_long
        state.summary["generation"][origin] = {
            "model": gen_cfg.display_name, "model_hash": stats.model_hash, "backend": stats.backend,
            "prompts_cached": stats.prompts_cached, "prompts_generated": stats.prompts_generated,
            "candidates_written": stats.candidates_written, "model_calls": stats.model_calls,
            "tokens_generated": stats.tokens_generated, "seconds": round(stats.seconds, 2),
            "prompt_too_long": len(stats.too_long)}
        state.log(f"{origin}: {stats.prompts_generated} prompts generated, {stats.prompts_cached} cached"
                  + (f", {len(stats.too_long)} dropped as prompt_too_long" if stats.too_long else "")
                  + f" ({stats.backend}, {stats.tokens_generated} tokens, {stats.seconds:.1f}s)")
    if "reference" in origins:
        tokenizer = _reference_tokenizer(state.cfg)
        written = write_reference_candidates(state.ws, state.prompts, tokenizer)
        state.work_keys |= set(reference_candidates(state.prompts, tokenizer).column("work_key").to_pylist())
        state.summary["generation"]["reference"] = {"candidates_written": written}
    return state


def _reference_tokenizer(cfg: BuildConfig):
    """Reference solutions are counted in the policy's tokens (the model DPO trains), the same in
    every scenario; a build that samples only the other model (scenario 4) and whose policy
    cannot be loaded counts them in the other model's."""
    from prefdata.config import resolve_model
    from prefdata.generate import load_tokenizer

    try:
        return load_tokenizer(resolve_model(cfg.policy.model), trust_remote_code=cfg.policy.trust_remote_code)
    except PrefdataError:
        if "policy" in cfg.origins():
            raise
        return load_tokenizer(resolve_model(cfg.other.model), trust_remote_code=cfg.other.trust_remote_code)


def make_judge(cfg: BuildConfig):
    from prefdata.judge import RuleVerifier, VerifierConfig

    judge_cfg = cfg.judge
    if judge_cfg.kind == "verifier":
        return RuleVerifier(VerifierConfig(timeout_s=judge_cfg.timeout_s))
    if judge_cfg.kind == "reward_model":
        from prefdata.judge import RewardModelConfig, RewardModelJudge

        return RewardModelJudge(RewardModelConfig(model_path=judge_cfg.model,
                                                  trust_remote_code=judge_cfg.trust_remote_code))
    from prefdata.judge.serve import llm_judge_from_config

    return llm_judge_from_config(judge_cfg)


def step_judge(state: BuildState) -> BuildState:
    """Judge this build's candidates that the judge has not seen, then gather the verdicts."""
    import polars as pl

    from prefdata.importing.reuse import JUDGE_VERSION, imported_verdicts
    from prefdata.judge import judge_candidates

    if state.cfg.judge.kind == "imported":  # the file's ratings are the verdicts: nothing to judge
        judge = SimpleNamespace(name=f"imported:{state.cfg.judge.model}", version=JUDGE_VERSION)
        verdicts = imported_verdicts(state.ws, judge.name)
        counts = {"judged": 0}
    else:
        judge = make_judge(state.cfg)
        try:
            counts = judge_candidates(state.ws, judge, batch_size=state.cfg.judge.batch_size)
        finally:
            getattr(judge, "close", lambda: None)()
        verdicts = state.ws.read_polars("judgments").filter(
            (pl.col("judge_name") == judge.name) & (pl.col("judge_version") == judge.version)).select(
            "candidate_id", "score", "correct", "status")
    prompt_ids = state.prompts.column("prompt_id").to_pylist()
    # this build's rows only: older settings' rows (kept for other datasets) are not its candidates
    candidates = state.ws.read_polars("candidates").filter(pl.col("prompt_id").is_in(prompt_ids)).filter(
        pl.col("work_key").is_in(list(state.work_keys)))
    prompts = pl.from_arrow(state.prompts.select(["prompt_id", "prompt", "messages"]))
    state.scored = (candidates.join(verdicts, on="candidate_id", how="left").join(prompts, on="prompt_id")
                    .with_columns(pl.lit(judge.name).alias("judge_name")))
    state.summary["judging"] = {"judge": judge.name, "version": judge.version, **counts,
                                "candidates_in_build": state.scored.height}
    state.log(f"judge {judge.name}: {counts.get('judged', 0)} judged now, "
              f"{state.scored.height} candidates in this build")
    return state


def step_select(state: BuildState) -> BuildState:
    """Select the pairs of each scenario (blend them for a mix), then write the dataset's part."""
    import polars as pl

    from prefdata.mix import mix_pairs
    from prefdata.rebuild import no_pairs_error
    from prefdata.select import SelectConfig, select_pairs

    cfg = state.cfg
    select_cfg = SelectConfig(**{"seed": cfg.seed, **cfg.select})
    if select_cfg.max_tokens is not None and select_cfg.token_column not in state.scored.columns:
        state.scored = _with_train_tokens(state.scored, cfg, select_cfg.token_column)
    per_scenario, drops = {}, {}
    for scenario in cfg.scenarios:
        dataset = f"scenario{scenario}" if cfg.mix else cfg.name
        # a prompt too long for a model the scenario samples has no pair; counted as such, not as no_<origin>
        too_long = set().union(*(state.too_long.get(o, ()) for o in SCENARIO_ORIGINS[scenario]))
        scored = state.scored.filter(~pl.col("prompt_id").is_in(list(too_long))) if too_long else state.scored
        pairs, dropped = select_pairs(scored, scenario, replace(select_cfg, dataset=dataset),
                                      eval_index=state.hygiene.index if state.hygiene else None)
        if too_long:
            dropped = {"prompt_too_long": len(too_long), **dropped}
        per_scenario[scenario] = pairs
        drops[dataset] = dropped
    pairs = mix_pairs(per_scenario, cfg.mix, seed=cfg.seed, dataset=cfg.name) if cfg.mix \
        else per_scenario[cfg.scenarios[0]]
    if pairs.height == 0:
        raise no_pairs_error(cfg.name, drops, _unscored_outputs(state))
    pause.point("selected")
    state.ws.write_part("pairs", cfg.name, _keep_reference_logps(state.ws, cfg.name, pairs.to_arrow()))
    state.pairs[cfg.name] = pairs
    state.summary["dropped"] = drops
    state.summary["pairs"] = {cfg.name: pairs.height}
    if cfg.mix:
        state.summary["mix"] = pairs.group_by("scenario").len().sort("scenario").to_dicts()
    state.log(f"pairs: {pairs.height} in dataset {cfg.name}")
    return state


def _unscored_outputs(state: BuildState) -> list[str]:
    """The judge's raw output for this build's unscored candidates (why it gave no score)."""
    import polars as pl

    ids = state.scored.filter(pl.col("score").is_null())["candidate_id"]
    if ids.len() == 0:
        return []
    judge = state.summary.get("judging", {})
    rows = state.ws.read_polars("judgments", ["candidate_id", "judge_name", "judge_version", "raw_output"]).filter(
        pl.col("candidate_id").is_in(ids.implode()) & (pl.col("judge_name") == judge.get("judge"))
        & (pl.col("judge_version") == judge.get("version")))
    return [text[:120] for text in rows["raw_output"].drop_nulls().to_list()]


def _keep_reference_logps(ws: Workspace, name: str, new):
    """Rebuilding a dataset to the same pairs keeps the reference log-probs already scored for
    them (a pair id is a hash of its dataset and candidate ids, so the same id means the same
    texts); only new pairs start unscored."""
    import pyarrow as pa
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    path = ws.table_dir("pairs") / f"part-{name}.parquet"
    if not path.is_file():
        return new
    old = pq.read_table(path)
    scored = old.filter(pc.is_valid(old["ref_model_hash"]))
    if scored.num_rows == 0:
        return new
    from prefdata.schemas import conform

    new = conform("pairs", new)
    index = {pid: i for i, pid in enumerate(scored["pair_id"].to_pylist())}
    rows = [index.get(pid, -1) for pid in new["pair_id"].to_pylist()]
    take = pa.array([max(r, 0) for r in rows])
    found = pa.array([r >= 0 for r in rows])
    for column in ("ref_chosen_logp", "ref_rejected_logp", "ref_chosen_logp_mean", "ref_rejected_logp_mean",
                   "chosen_tokens", "rejected_tokens", "ref_model_hash"):
        at = new.schema.get_field_index(column)
        values = pc.if_else(found, scored[column].take(take), new[column])
        new = new.set_column(at, new.schema.field(column), values.cast(new.schema.field(column).type))
    return new


def _with_train_tokens(scored, cfg: BuildConfig, column: str):
    """Prompt + response tokens as training will see them: the policy (the model DPO trains)
    tokenizer and its chat template, counted once per distinct (prompt, response)."""
    from prefdata.filters import add_token_counts, chat_token_counter
    from prefdata.generate import load_tokenizer

    tokenizer = load_tokenizer(cfg.policy.model, trust_remote_code=cfg.policy.trust_remote_code)
    return add_token_counts(scored, chat_token_counter(tokenizer), column)


def step_finish(state: BuildState) -> BuildState:
    """Manifest last (it describes the parts above), then the dataset card."""
    from prefdata.card import write_card

    state.ws.write_manifest(f"build:{state.cfg.name}", {"config": state.cfg.to_dict(), "summary": state.summary})
    write_card(state.ws)
    return state


STEPS = [step_ingest, step_generate, step_judge, step_select, step_finish]


def preflight(cfg: BuildConfig, workspace: Path | None = None) -> None:
    """Check every path and model the build will use before the workspace is touched or any
    model loads: a misspelled judge model fails now, not after all policy generation. An
    origin whose candidates were imported into `workspace` needs no model, so none is checked."""
    from prefdata.generate import validate_model_dir
    from prefdata.generate.registry import resolve_backend_name
    from prefdata.importing.reuse import imported_origins

    spec = cfg.source
    if spec.path_or_name != TOY and not Path(spec.path_or_name).expanduser().exists():
        from prefdata.sources.readers import _looks_like_hub_id, read_source

        if not _looks_like_hub_id(spec.path_or_name):
            read_source(spec)  # a mistyped path fails here with its message (a hub id loads at ingest)
    imported = imported_origins(workspace) if workspace is not None else set()
    for origin in sorted(cfg.origins() & {"policy", "other"} - imported):
        gen = getattr(cfg, origin)
        remote = resolve_backend_name(gen.backend) == "openai"
        validate_model_dir(gen.model, need_weights=not remote, allow_pickle=gen.allow_pickle,
                           trust_remote_code=gen.trust_remote_code)
    judge = cfg.judge
    if judge.kind not in ("verifier", "imported"):
        remote = judge.kind == "llm" and resolve_backend_name(judge.backend) == "openai"
        validate_model_dir(judge.model, need_weights=not remote, trust_remote_code=judge.trust_remote_code)


def build(workspace: Path, cfg: BuildConfig, log: Callable[[str], None] = print) -> dict:
    """Run the whole build; returns its summary (also saved in the manifest)."""
    started = time.time()
    if cfg.quiet:
        _silence_library_progress()
    from prefdata.check import refuse_if_damaged

    refuse_if_damaged(Path(workspace))  # before the lock: a damaged workspace is left exactly as it was
    preflight(cfg, Path(workspace))  # reads the workspace's parts (imported origins), so after the check
    ws = Workspace.create(workspace)
    with ws.writer():
        if ws.recovered_lock_from:
            log(f"recovered a lock left by dead process {ws.recovered_lock_from}; resuming")
        if not ws.manifest():  # a build killed before its first stage still leaves a described workspace
            ws.write_manifest()
        parts_before = _part_names(ws)
        state = BuildState(cfg=cfg, ws=ws, log=log)
        try:
            for step in STEPS:
                pause.enter_stage(step.__name__[len("step_"):])  # named points for the crash tests
                state = step(state)
        except BaseException:
            # Only when the build wrote something: a build refused for bad input leaves the
            # workspace byte for byte as it was, manifest and card included.
            if _part_names(ws) != parts_before:
                _describe_after_failure(ws)
            raise
    state.summary["seconds"] = round(time.time() - started, 1)
    return state.summary


def _part_names(ws: Workspace) -> set[str]:
    from prefdata.schemas import TABLES

    return {f"{table}/{path.name}" for table in TABLES for path in ws.parts(table)}


def _describe_after_failure(ws: Workspace) -> None:
    """Re-derive the manifest and card from the parts a failed build left, so `info` and the
    card describe them; a failure here must not hide the build's own error."""
    from prefdata.card import write_card

    try:
        ws.write_manifest()
        write_card(ws)
    except Exception:  # noqa: BLE001 - the original error is the one to report
        pass


def _silence_library_progress() -> None:
    """--quiet also silences transformers' and datasets' own progress bars."""
    import os

    os.environ["HF_DATASETS_DISABLE_PROGRESS_BARS"] = "1"
    os.environ["HF_HUB_DISABLE_PROGRESS_BARS"] = "1"
    try:
        from transformers.utils import logging as hf_logging

        hf_logging.disable_progress_bar()
    except ImportError:
        pass


def format_summary(summary: dict) -> str:
    lines = ["", "build summary", "-------------"]
    p = summary["prompts"]
    too_large = f", {p['too_large']} prompt_too_large" if p.get("too_large") else ""
    lines.append(f"prompts in        {p['rows_kept']} ({p['duplicates_removed']} duplicates, "
                 f"{p.get('contaminated', 0)} contaminated, {p.get('near_duplicate', 0)} near-duplicates removed"
                 f"{too_large})")
    h = summary.get("hygiene")
    if h:
        sets = ", ".join(f"{s['source']}/{s['split']} ({s['items']})" for s in h["decontaminate"])
        lines.append(f"decontaminated    against {sets + ' and ' if sets else ''}{h['heldout_items']} held-out "
                     f"prompts, n-grams of {h['n']} words" + (", chosen responses too" if h["chosen_checked"] else ""))
    for origin, g in summary.get("generation", {}).items():
        lines.append(f"candidates {origin:<10}{g.get('candidates_written', 0)} new"
                     + (f", {g['prompts_cached']} prompts cached" if "prompts_cached" in g else "")
                     + (f", {g['imported']} imported" if "imported" in g else ""))
    j = summary["judging"]
    lines.append(f"judged            {j.get('judged', 0)} new by {j['judge']} "
                 f"({j['candidates_in_build']} candidates in this build)")
    for dataset, dropped in summary.get("dropped", {}).items():
        reasons = ", ".join(f"{k}={v}" for k, v in sorted(dropped.items()) if v) or "none"
        lines.append(f"dropped {dataset:<12}{reasons}")
    shares = ", ".join(f"scenario {m['scenario']}: {m['len']}" for m in summary.get("mix", []))
    for dataset, n in summary["pairs"].items():
        lines.append(f"pairs out         {dataset}: {n}" + (f" ({shares})" if shares else ""))
    lines.append(f"time              {summary.get('seconds', 0)} s")
    lines.append(f"terms             drop reasons and terms: {GLOSSARY} (or python -m prefdata.glossary)")
    return "\n".join(lines)

