"""The dataset card (`WS/README.md`), rewritten after every command that changes the workspace.

It opens with Hugging Face metadata: one `configs:` entry per dataset, so
`datasets.load_dataset("path/to/ws", "scenario2")` loads that dataset's pairs.
It holds no absolute paths (models and sources are named by their last path
component and content hash) and no configuration dumps: the full resolved
configs live in `manifest.json`, which the card links.
"""

from __future__ import annotations

import json
from pathlib import Path

from prefdata.glossary import definitions
from prefdata.info import workspace_info
from prefdata.store import Workspace, atomic_write_bytes

CARD = "README.md"
GLOSSARY = "docs/glossary.md"
SCENARIO_RULES = {
    1: ("on-policy", "best of N policy samples", "worst of N policy samples"),
    2: ("mixed", "dataset reference solution", "worst policy sample"),
    3: ("mixed", "best policy sample", "worst of M other-model samples"),
    4: ("off-policy", "dataset reference solution", "other-model sample"),
    0: ("imported", "the imported file's chosen response", "the imported file's rejected response"),
}


def _reasons(dropped: dict) -> str:
    return ", ".join(f"{k} {v}" for k, v in dropped.items()) or "none"


def public_name(value) -> str:
    """A path-like value without the local machine's directories: its last component."""
    text = str(value)
    if text.startswith(("/", "~")) or (len(text) > 2 and text[1] == ":" and text[2] in "\\/"):
        return Path(text.rstrip("/\\")).name or text
    return text


def _pair_parts(ws: Workspace) -> dict[str, list[str]]:
    """Dataset name -> the pairs parts (relative paths) holding its rows."""
    import pyarrow.parquet as pq

    out: dict[str, list[str]] = {}
    for path in ws.parts("pairs"):
        names = set(pq.read_table(path, columns=["dataset"]).column("dataset").to_pylist())
        for name in sorted(names):
            out.setdefault(name, []).append(path.relative_to(ws.root).as_posix())
    return out


def _yaml_str(text: str) -> str:
    return json.dumps(text)  # a JSON string is a valid YAML scalar


def metadata(ws: Workspace) -> list[str]:
    """The YAML front matter: one config per dataset (the first is the default)."""
    parts = _pair_parts(ws)
    lines = ["---", "tags:", "- dpo", "- preference", "- prefdata", "configs:"]
    for i, (name, paths) in enumerate(sorted(parts.items())):
        lines += [f"- config_name: {_yaml_str(name)}", "  data_files:", "  - split: train", "    path:"]
        lines += [f"    - {_yaml_str(p)}" for p in paths]
        if i == 0:
            lines.append("  default: true")
    if not parts:
        lines[-1] = "configs: []"
    return lines + ["---", ""]


def _drops(manifest: dict) -> dict[str, dict[str, int]]:
    """Drop counts per dataset from the last build of each, plus the last score's."""
    out: dict[str, dict[str, int]] = {}
    for stage, entry in sorted(manifest.get("stages", {}).items()):
        if stage.startswith("build:"):
            for dataset, reasons in (entry.get("config", {}).get("summary", {}).get("dropped") or {}).items():
                out[dataset] = {k: v for k, v in reasons.items() if v and not k.startswith("_")}
    scored = manifest.get("stages", {}).get("score", {}).get("config", {})
    if any((scored.get("dropped") or {}).values()):
        out[f"score ({scored.get('dataset') or 'all datasets'})"] = {k: v for k, v in scored["dropped"].items() if v}
    return out


def _runs(ws: Workspace) -> list[dict]:
    runs = []
    for path in sorted((ws.root / "runs").glob("*/report.json")):
        try:
            runs.append(json.loads(path.read_text()))
        except (OSError, ValueError):
            continue
    return runs


def _f(value, spec=".3f") -> str:
    return "-" if value is None else format(value, spec)


def dataset_card(ws: Workspace) -> str:
    info = workspace_info(ws)
    manifest = ws.manifest()
    name = ws.root.resolve().name
    lines = metadata(ws) + [
        "# Preference pairs built by prefdata", "",
        f"Built with prefdata {info['prefdata_version']} (table schema v{info['schema_version']}), "
        f"last updated {info['updated_at']}. The scenarios follow \"3D-Properties: Identifying Challenges "
        "in DPO\": where chosen and rejected come from (on-policy or off-policy) decides how DPO behaves.",
        "", "## Datasets", "", "| dataset | scenario | kind | chosen | rejected | pairs | scored |",
        "|---|---|---|---|---|---|---|",
    ]
    for d in info["datasets"]:
        kind, chosen, rejected = SCENARIO_RULES[d["scenario"]]
        lines.append(f"| {d['dataset']} | {d['scenario']} | {kind} | {chosen} | {rejected} | {d['pairs']} "
                     f"| {d['scored']} |")
    lines += ["", "`scored`: pairs carrying reference log-probs (`prefdata score`). A mix lists one row per "
              "scenario it blends.", "", "Load one dataset (each is a config of this folder):", "",
              "```python", "import datasets", "",
              f'pairs = datasets.load_dataset("{name}", "{info["datasets"][0]["dataset"] if info["datasets"] else "NAME"}", '
              'split="train")  # the path of this folder', "```", ""]
    drops = _drops(manifest)
    if drops:
        terms = definitions()
        lines += ["## What was dropped", "", "| dataset | reason | count |", "|---|---|---|"]
        seen = []
        for dataset, reasons in drops.items():
            for reason, count in sorted(reasons.items()):
                lines.append(f"| {dataset} | {reason} | {count} |")
                if reason not in seen:
                    seen.append(reason)
        lines += [""] + [f"- **{r}**: {terms[r]}" for r in seen if r in terms]
        lines += ["", f"Every drop reason and term is explained in `{GLOSSARY}` of prefdata.", ""]
    lines += ["## Tables", "", "| table | rows | parts |", "|---|---|---|"]
    lines += [f"| {t} | {v['rows']} | {v['parts']} |" for t, v in info["tables"].items()]
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
    lines += [f"- `{public_name(s['source'])}` split `{s['split']}`: {s['prompts']} prompts" for s in info["sources"]]
    lines += ["", "Models (candidates by origin):", ""]
    lines += [f"- {m['origin']}: `{public_name(m['model_name'])}` weights `{m['model_hash']}` via {m['backend']}: "
              f"{m['candidates']} candidates" for m in info["models"]]
    if info["imports"]:
        lines += ["", "Imported files (rows dropped with their reasons):", ""]
        lines += [f"- `{i['file']}` (sha256 `{i['sha256'][:16]}`) as {i['as']} ({i['layout']}): {i['rows_read']} rows "
                  f"read, {i['kept']} kept, dropped: {_reasons(i['dropped'])}" for i in info["imports"]]
    lines += ["", "Judges:", ""]
    lines += [f"- `{public_name(j['judge_name'])}` version `{j['judge_version']}`: {j['judgments']} {j['status']}"
              for j in info["judges"]]
    runs = _runs(ws)
    if runs:
        lines += ["", "## Training runs", "", "Mean per-token log-prob under the policy before -> after training, "
                  "and held-out accuracy (`runs/<run>/report.txt`, `report.png`).", "",
                  "| run | pairs | chosen | rejected | held-out accuracy |", "|---|---|---|---|---|"]
        for r in runs:
            t, a = r["table1"], r["accuracy"]
            lines.append(f"| {r['run']} | {r['pairs']} | {_f(t['chosen']['before'])} -> {_f(t['chosen']['after'])} "
                         f"| {_f(t['rejected']['before'])} -> {_f(t['rejected']['after'])} "
                         f"| {_f(a['before'])} -> {_f(a['after'])} |")
    lines += ["", "## Configuration", "",
              "The full resolved configuration of every stage, the package versions and a content hash of every "
              "part are in [manifest.json](manifest.json). Stages run:", ""]
    lines += [f"- `{stage}` ({entry.get('finished_at')})" for stage, entry in sorted(manifest.get("stages", {}).items())]
    lines += ["", "## Use", "", "```bash",
              f'prefdata query {name} "SELECT dataset, kind, count(*) FROM pairs GROUP BY ALL"',
              f"prefdata export {name} --out trl-data      # TRL's DPOTrainer format, chat template kept",
              "```", ""]
    return "\n".join(lines)


def write_card(ws: Workspace) -> Path:
    """(Re)write `WS/README.md` atomically; the caller holds the writer lock."""
    path = ws.root / CARD
    atomic_write_bytes(path, dataset_card(ws).encode())
    return path



def refresh_card(ws: Workspace) -> Path:
    """`write_card` under the workspace's writer lock: after a command that changed the workspace."""
    with ws.writer():
        return write_card(ws)
