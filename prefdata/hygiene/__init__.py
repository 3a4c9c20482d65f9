"""Data hygiene: decontamination against evaluation sets and near-duplicate prompts.

Modules: `tokens` (normalise, hash words and word windows, whole columns),
`decontaminate` (N-gram index of evaluation items), `minhash` (near-duplicates),
`stage` (both as `prefdata.filters` rules with reasons ``contaminated`` and
``near_duplicate``; evaluation-set loading; settings checks).
"""
