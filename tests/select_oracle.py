"""A per-row Python statement of select_pairs' rules, every SelectConfig option included.

Written from the rules in prefdata/select.py's and prefdata/filters.py's docstrings, one
prompt at a time with dicts and loops, so it shares no code with the column version it
checks (tests/test_select.py compares the two on hand-made and hypothesis-generated
candidates). Null scores, ties, duplicate texts and every option are handled here:

- candidate rules, first match wins: rows of origins the scenario does not use are set
  aside (not counted); empty (no non-whitespace character); truncated (finish_reason
  "length", when drop_truncated); over_budget (token column > max_tokens, when set);
  unscored (score null, after unscored_score filled it in when set); duplicate (when
  dedupe: same prompt, origin and whitespace-normalised text as a surviving row with a
  smaller candidate_id);
- picks: best = highest score, worst = lowest, ties to the smallest candidate_id;
  other_pick="random" draws one number per prompt that has a surviving other-model row,
  from numpy's PCG64(seed), in prompt_id order, and takes the floor(u * m)-th of the
  prompt's m rows in candidate_id order; pairing="mean_minus_2std" rejects, instead of the
  worst, the row whose score is nearest the mean minus twice the population standard
  deviation of its side's live scores in that prompt (ties to the smallest candidate_id);
- pair rules, first match wins: no_<chosen origin>, no_<rejected origin>,
  reference_incorrect, uniform (scenarios in uniform_scenarios: all surviving policy
  samples correct, or all wrong, among those with a known verdict; by="score": all
  their scores equal), tie, inverted, below_margin (min_margin > 0), same_text.
"""

from __future__ import annotations

import hashlib

import numpy as np

ROLES = {1: (("policy", "best"), ("policy", "worst")), 2: (("reference", "best"), ("policy", "worst")),
         3: (("policy", "best"), ("other", None)), 4: (("reference", "best"), ("other", None))}
KINDS = {1: "on-policy", 2: "mixed", 3: "mixed", 4: "off-policy"}


def _norm(text):
    return " ".join(text.split()) if text is not None else None


def _blank(text) -> bool:
    return text is None or not text.strip()


def _strategy(scenario: int, other_pick: str, pairing: str = "best_vs_worst") -> str:
    worst = "mean_minus_2std" if pairing == "mean_minus_2std" else "worst"
    other = worst if other_pick == "worst" else other_pick
    return {1: f"best_vs_{worst}_policy", 2: f"reference_vs_{worst}_policy",
            3: f"best_policy_vs_{other}_other", 4: f"reference_vs_{other}_other"}[scenario]


def oracle_select(rows: list[dict], scenario: int, cfg) -> tuple[list[dict], dict[str, int]]:
    """(pair records sorted by prompt_id with select_pairs' columns, drop counts per reason)."""
    (c_origin, c_how), (r_origin, r_how) = ROLES[scenario]
    c_how, r_how = c_how or cfg.other_pick, r_how or cfg.other_pick
    if cfg.pairing == "mean_minus_2std" and r_how == "worst":
        r_how = "mean_minus_2std"
    counts: dict[str, int] = {}

    def drop(reason):
        counts[reason] = counts.get(reason, 0) + 1

    by_prompt: dict[str, list[dict]] = {}
    first_row: dict[str, dict] = {}
    for row in rows:
        row = dict(row)
        if row["score"] is None and cfg.unscored_score is not None:
            row["score"] = float(cfg.unscored_score)
        first_row.setdefault(row["prompt_id"], row)
        live = by_prompt.setdefault(row["prompt_id"], [])
        if row["origin"] not in (c_origin, r_origin):
            continue
        if _blank(row["text"]):
            drop("empty")
        elif cfg.drop_truncated and row.get("finish_reason") == "length":
            drop("truncated")
        elif cfg.max_tokens is not None and row.get(cfg.token_column) is not None \
                and row[cfg.token_column] > cfg.max_tokens:
            drop("over_budget")
        elif row["score"] is None:
            drop("unscored")
        else:
            live.append(row)
    if cfg.dedupe:
        for prompt_id, live in by_prompt.items():
            survivor: dict[tuple, dict] = {}
            for row in live:
                key = (row["origin"], _norm(row["text"]))
                if key not in survivor or row["candidate_id"] < survivor[key]["candidate_id"]:
                    survivor[key] = row
            kept = [row for row in live if survivor[(row["origin"], _norm(row["text"]))] is row]
            for _ in range(len(live) - len(kept)):
                drop("duplicate")
            by_prompt[prompt_id] = kept

    def extreme(cands, best):
        pick = None
        for row in cands:
            if pick is None:
                pick = row
                continue
            better = row["score"] > pick["score"] if best else row["score"] < pick["score"]
            if better or (row["score"] == pick["score"] and row["candidate_id"] < pick["candidate_id"]):
                pick = row
        return pick

    draws: dict[str, float] = {}
    if "random" in (c_how, r_how):
        holders = sorted(p for p, live in by_prompt.items() if any(r["origin"] == "other" for r in live))
        draws = dict(zip(holders, np.random.default_rng(cfg.seed).random(len(holders)).tolist()))

    def pick(cands, how, prompt_id):
        if how == "mean_minus_2std":
            if not cands:
                return None
            scores = [r["score"] for r in cands]
            mean = sum(scores) / len(scores)
            target = mean - 2 * (sum((x - mean) ** 2 for x in scores) / len(scores)) ** 0.5
            return min(cands, key=lambda r: (abs(r["score"] - target), r["candidate_id"]))
        if how == "random":
            if not cands:
                return None
            ordered = sorted(cands, key=lambda r: r["candidate_id"])
            return ordered[int(draws[prompt_id] * len(ordered))]
        return extreme(cands, how == "best")

    dataset = cfg.dataset or f"scenario{scenario}"
    pairs = []
    for prompt_id in sorted(by_prompt):
        live = by_prompt[prompt_id]
        chosen = pick([r for r in live if r["origin"] == c_origin], c_how, prompt_id)
        rejected = pick([r for r in live if r["origin"] == r_origin], r_how, prompt_id)
        if chosen is None:
            drop(f"no_{c_origin}")
            continue
        if rejected is None:
            drop(f"no_{r_origin}")
            continue
        if c_origin == "reference" and chosen.get("correct") is False:
            drop("reference_incorrect")
            continue
        if scenario in cfg.uniform_scenarios:
            policy = [r for r in live if r["origin"] == "policy"]
            if cfg.uniform_by == "correct":
                known = [r["correct"] for r in policy if r.get("correct") is not None]
                uniform = bool(known) and (all(known) or not any(known))
            else:
                uniform = bool(policy) and len({r["score"] for r in policy}) == 1
            if uniform:
                drop("uniform")
                continue
        margin = chosen["score"] - rejected["score"]
        if margin == 0:
            drop("tie")
        elif margin < 0:
            drop("inverted")
        elif cfg.min_margin > 0 and margin < cfg.min_margin:
            drop("below_margin")
        elif _norm(chosen["text"]) == _norm(rejected["text"]):
            drop("same_text")
        else:
            ids = f"{dataset}\x1f{chosen['candidate_id']}\x1f{rejected['candidate_id']}"
            pairs.append({
                "pair_id": hashlib.sha256(ids.encode()).hexdigest()[:16], "prompt_id": prompt_id,
                "dataset": dataset, "scenario": scenario, "kind": KINDS[scenario],
                "prompt": first_row[prompt_id]["prompt"], "chosen": chosen["text"], "rejected": rejected["text"],
                "chosen_candidate_id": chosen["candidate_id"], "rejected_candidate_id": rejected["candidate_id"],
                "chosen_origin": chosen["origin"], "rejected_origin": rejected["origin"],
                "chosen_score": chosen["score"], "rejected_score": rejected["score"], "margin": margin,
                "judge_name": rows[0]["judge_name"] if rows else "",
                "strategy": _strategy(scenario, cfg.other_pick, cfg.pairing)})
    return pairs, counts
