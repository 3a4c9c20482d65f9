"""What the words in prefdata's output mean: drop reasons and terms.

One source for `docs/glossary.md` (`python -m prefdata.glossary > docs/glossary.md`;
a test checks the two agree) and for the dataset card, which explains the drop
reasons its workspace actually has.
"""

from __future__ import annotations

# (term, meaning); a section is a (title, intro, terms) triple
SECTIONS: list[tuple[str, str, list[tuple[str, str]]]] = [
    ("Candidate drop reasons",
     "Applied to candidates (one row per generated sample or reference solution) before pairs are "
     "picked, in this order; a candidate gets the first reason that matches. Counts are candidates.",
     [("empty", "the response text is empty or whitespace only."),
      ("truncated", "generation stopped at `max_tokens` or at the model's context (finish_reason "
                    "`length`), so the answer is probably cut off."),
      ("over_budget", "prompt plus response, in the policy's tokens with its chat template, exceed "
                      "`select.max_tokens`."),
      ("unscored", "the judge gave no score (e.g. no final answer could be parsed, or the judge was not "
                   "run on it)."),
      ("duplicate", "the same prompt already has a candidate of the same origin with the same text "
                    "(whitespace-normalised); the first surviving copy is kept. Small models sampled N "
                    "times often repeat themselves, so many duplicates are normal: the toy policy answers "
                    "short arithmetic the same way most of the time.")]),
    ("Pair drop reasons",
     "Applied per prompt once chosen and rejected are picked. Counts are prompts.",
     [("prompt_too_long", "the rendered prompt fills the model's context (config.json's position limit or "
                          "`max_model_len`), leaving no room for a response; it is dropped before "
                          "generation, on every backend. In `score`: the prompt alone fills the "
                          "reference model's context."),
      ("no_policy", "the prompt has no usable policy sample left (all were dropped above)."),
      ("no_other", "the prompt has no usable other-model sample left."),
      ("no_reference", "the prompt has no reference solution (or it was dropped above)."),
      ("reference_incorrect", "scenarios 2 and 4: the judge marks the dataset's own reference solution "
                              "incorrect, so it is never chosen."),
      ("uniform", "scenario 1 (on-policy): every policy sample is correct, or every one is wrong, so "
                  "there is no better and worse sample to pair (the study's MATH* filter)."),
      ("tie", "chosen and rejected have the same score (margin 0)."),
      ("inverted", "the chosen side scores lower than the rejected side."),
      ("below_margin", "the score margin is positive but below `select.min_margin`."),
      ("same_text", "chosen and rejected are the same text after whitespace normalisation."),
      ("judge_failed", "a candidate of the scenario's origins has no verdict because judging failed "
                       "(`parse_error` from the LLM judge after its retries, or a verifier `timeout`): "
                       "the prompt is set aside rather than paired without that candidate, which could "
                       "otherwise never be picked as the rejected side."),
      ("suspect_injection", "llm and reward-model judges (`select.screen_injection`): a candidate's text "
                            "addresses the judge (a verdict-like line, instructions to the grader, a fence "
                            "tag), so its verdict cannot be trusted; the prompt is set aside."),
      ("contaminated", "the prompt (or, with `select.decontaminate_chosen`, the chosen response) shares a "
                       "run of `select.decontaminate_n` words with an evaluation item or a held-out prompt."),
      ("over_cap", "`select.pairing = \"all_pairs\"` only: a candidate pair beyond the first "
                   "`select.max_pairs_per_prompt` of its prompt (largest margins first). With `all_pairs` "
                   "the pair reasons count candidate pairs, not prompts, and a prompt with no "
                   "positive-margin pair produces no row to count.")]),
    ("Prompt drop reasons",
     "Applied to the source's prompts before any generation. Counts are prompts.",
     [("near_duplicate", "the prompt's word shingles have a Jaccard similarity of at least "
                         "`select.near_duplicate_threshold` with an earlier prompt's; the first is kept."),
      ("prompt_too_large", "the prompt text, a chat turn or the reference solution is over "
                           "`source.max_prompt_bytes` (1 MB by default), dropped before any tokenizer sees it.")]),
    ("Scoring and training",
     "",
     [("too_long", "`score`: prompt plus the chosen or rejected response exceed the reference model's "
                   "context; the pair keeps null log-probs and training leaves it out."),
      ("left out (max_length)", "`train`: pairs longer than `--max-length` tokens are not trained on; "
                                "the report counts them.")]),
    ("Terms",
     "",
     [("origin", "where a candidate comes from: `policy` (the model being aligned), `other` (a different "
                 "model) or `reference` (the dataset's solution)."),
      ("kind", "`on-policy` (both sides sampled from the policy: scenario 1), `off-policy` (neither: "
               "scenario 4) or `mixed` (one side each: scenarios 2 and 3)."),
      ("dataset", "a named set of pairs in a workspace, e.g. `scenario2` or a mix "
                  "`mix-1x0.5-4x0.5`; each is one Hugging Face config in the dataset card."),
      ("mix", "a seeded blend of scenarios by proportion (`--mix 1=0.5,4=0.5`)."),
      ("margin", "chosen score minus rejected score."),
      ("workspace", "a directory holding the tables (prompts, candidates, judgments, pairs), "
                    "`manifest.json`, this card, `logs/` and training `runs/`."),
      ("part", "one Parquet file of a table (`TABLE/part-KEY.parquet`), written atomically; a "
               "dataset's pairs are one part named after it."),
      ("manifest", "`manifest.json`: versions, row counts, content hashes of every part and the full "
                   "resolved configuration of every stage that ran."),
      ("work key", "hash of model, origin, prompt, sampling parameters and seed: a prompt whose work key "
                   "is already stored is not generated again."),
      ("judge version", "hash of the judge's model, template and settings; a new version judges again."),
      ("reference log-prob", "`ref_chosen_logp` / `ref_rejected_logp`: summed log-probability of the "
                             "response (plus EOS) under the reference model, stored by `score`; "
                             "`*_mean` is per token."),
      ("unpaired", "in the training report: responses to the trained prompts that are in no pair (other "
                   "samples, unused reference solutions, held-out references). If chosen and rejected "
                   "both fall during DPO, this shows whether probability mass moves to them "
                   "(the study's dispersion)."),
      ("held-out accuracy", "greedy answers to test-split prompts never trained on, graded against "
                            "their reference answers, before and after training (the study's Table 2)."),
      ("gradient norm", "L2 norm of the loss gradient flowing through the chosen log-probs alone and "
                        "through the rejected ones alone, on a fixed probe batch.")]),
]


def definitions() -> dict[str, str]:
    return {term: meaning for _, _, terms in SECTIONS for term, meaning in terms}


def markdown() -> str:
    lines = ["# Glossary", "",
             "The words prefdata prints in build summaries, `info`, dataset cards and training reports.",
             "This page is generated from `prefdata/glossary.py`.", ""]
    for title, intro, terms in SECTIONS:
        lines += [f"## {title}", ""]
        if intro:
            lines += [intro, ""]
        lines += [f"- **{term}**: {meaning}" for term, meaning in terms]
        lines.append("")
    return "\n".join(lines)


if __name__ == "__main__":
    print(markdown(), end="")
