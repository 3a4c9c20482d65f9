"""The dataset card (README.md) written into a workspace after each build."""

from __future__ import annotations

import json

from prefdata.info import workspace_info
from prefdata.store import Workspace

SCENARIO_RULES = {
    1: ("on-policy", "best of N policy samples", "worst of N policy samples"),
    2: ("mixed", "dataset reference solution", "worst policy sample"),
    3: ("mixed", "best policy sample", "worst of M other-model samples"),
    4: ("off-policy", "dataset reference solution", "other-model sample"),
    0: ("imported", "the imported file's chosen response", "the imported file's rejected response"),
}


def _reasons(dropped: dict) -> str:
    return ", ".join(f"{k} {v}" for k, v in dropped.items()) or "none"


def dataset_card(ws: Workspace) -> str:
    info = workspace_info(ws)
    manifest = ws.manifest()
    lines = [
        "# Preference-pair dataset built by prefdata", "",
        f"Built with prefdata {info['prefdata_version']} (table schema v{info['schema_version']}), "
        f"last updated {info['updated_at']}. Scenarios follow \"3D-Properties: Identifying Challenges in DPO\".",
        "", "## Datasets", "", "| dataset | scenario | kind | chosen | rejected | pairs | scored |",
        "|---|---|---|---|---|---|---|",
    ]
    for d in info["datasets"]:
        kind, chosen, rejected = SCENARIO_RULES[d["scenario"]]
        lines.append(f"| {d['dataset']} | {d['scenario']} | {kind} | {chosen} | {rejected} | {d['pairs']} | {d['scored']} |")
    lines += ["", "## Tables", "", "| table | rows | parts |", "|---|---|---|"]
    lines += [f"| {name} | {t['rows']} | {t['parts']} |" for name, t in info["tables"].items()]
    if info.get("hygiene"):
        lines += ["", "## Data hygiene", "",
                  "Prompts sharing a run of N words (after lower-casing and dropping punctuation) with an "
                  "evaluation item were dropped as `contaminated`; near-duplicate prompts (MinHash, exact "
                  "Jaccard of word shingles at or above the threshold) were collapsed to one as `near_duplicate`.",
                  "", "| build | evaluation sets | N | contaminated prompts | contaminated chosen | "
                  "near-duplicates | threshold |", "|---|---|---|---|---|---|---|"]
        lines += [f"| {h['build']} | {h['evaluation_sets']} | {h['ngram_words']} | {h['contaminated_prompts']} | "
                  f"{h['contaminated_chosen']} | {h['near_duplicates']} | {h['near_duplicate_threshold']} |"
                  for h in info["hygiene"]]
    lines += ["", "## Provenance", "", "Sources:", ""]
    lines += [f"- `{s['source']}` split `{s['split']}`: {s['prompts']} prompts" for s in info["sources"]]
    lines += ["", "Models (candidates by origin):", ""]
    lines += [f"- {m['origin']}: `{m['model_name']}` weights `{m['model_hash']}` via {m['backend']}: "
              f"{m['candidates']} candidates" for m in info["models"]]
    if info["imports"]:
        lines += ["", "Imported files (rows dropped with their reasons):", ""]
        lines += [f"- `{i['file']}` (sha256 `{i['sha256'][:16]}`) as {i['as']} ({i['layout']}): {i['rows_read']} rows "
                  f"read, {i['kept']} kept, dropped: {_reasons(i['dropped'])}" for i in info["imports"]]
    lines += ["", "Judges:", ""]
    lines += [f"- `{j['judge_name']}` version `{j['judge_version']}`: {j['judgments']} {j['status']}"
              for j in info["judges"]]
    lines += ["", "Build configurations (resolved):", ""]
    for stage, entry in sorted(manifest.get("stages", {}).items()):
        config = entry.get("config", {}).get("config", entry.get("config", {}))
        lines += [f"<details><summary>{stage} ({entry.get('finished_at')})</summary>", "", "```json",
                  json.dumps(config, indent=2, default=str), "```", "</details>", ""]
    lines += ["## Use", "", "```bash",
              f'prefdata query {ws.root} "SELECT dataset, count(*) FROM pairs GROUP BY 1"',
              f"prefdata export {ws.root} --format trl --out trl-data",
              "```", "", "```python", "import datasets",
              f'pairs = datasets.load_dataset("parquet", data_files="{ws.root}/pairs/*.parquet")["train"]',
              "```", ""]
    return "\n".join(lines)
