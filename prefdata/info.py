"""`prefdata info`: what a workspace holds and where it came from."""

from __future__ import annotations

from prefdata.query import connect
from prefdata.schemas import TABLES
from prefdata.store import Workspace


def workspace_info(ws: Workspace) -> dict:
    """Tables, row counts, scenarios and provenance, as plain data."""
    manifest = ws.manifest()
    info = {"workspace": str(ws.root), "prefdata_version": manifest.get("prefdata_version"),
            "schema_version": manifest.get("schema_version"), "updated_at": manifest.get("updated_at"),
            "tables": {}, "stages": sorted(manifest.get("stages", {}))}
    # each imported file's counts and drop reasons, as recorded by `prefdata import`
    info["imports"] = [{k: entry["config"].get(k) for k in ("file", "sha256", "as", "layout", "rows_read", "kept",
                                                             "dropped", "added")}
                       for stage, entry in sorted(manifest.get("stages", {}).items()) if stage.startswith("import:")]
    for table in TABLES:
        parts = ws.parts(table)
        info["tables"][table] = {"rows": ws.count(table), "parts": len(parts),
                                 "bytes": sum(p.stat().st_size for p in parts)}
    with connect(ws) as con:
        def rows(sql: str) -> list[dict]:
            return con.sql(sql).to_arrow_table().to_pylist()

        info["sources"] = rows("SELECT source, split, count(*) AS prompts FROM prompts "
                               "GROUP BY ALL ORDER BY ALL")
        info["models"] = rows("SELECT origin, model_name, model_hash, backend, count(*) AS candidates "
                              "FROM candidates GROUP BY ALL ORDER BY ALL")
        info["judges"] = rows("SELECT judge_name, judge_version, status, count(*) AS judgments "
                              "FROM judgments GROUP BY ALL ORDER BY ALL")
        info["datasets"] = rows("SELECT dataset, scenario, kind, count(*) AS pairs, "
                                "count(ref_chosen_logp) AS scored FROM pairs GROUP BY ALL ORDER BY ALL")
    info["hygiene"] = hygiene_entries(manifest)
    return info


def hygiene_entries(manifest: dict) -> list[dict]:
    """Per build: what its prompts were decontaminated against (and with n-grams of how many
    words), and how many prompts and chosen responses were dropped as contaminated or as
    near-duplicates (counted over the source, before sampling and --limit)."""
    entries = []
    for stage, entry in sorted(manifest.get("stages", {}).items()):
        summary = (entry.get("config") or {}).get("summary") or {}
        h = summary.get("hygiene")
        if not stage.startswith("build:") or not h:
            continue
        sets = [f"{s['source']}/{s['split']} ({s['items']} items)" for s in h.get("decontaminate", [])]
        sets.append(f"held-out prompts ({h.get('heldout_items', 0)})")
        chosen = sum(d.get("contaminated", 0) for d in summary.get("dropped", {}).values())
        entries.append({"build": stage.split(":", 1)[1], "evaluation_sets": ", ".join(sets), "ngram_words": h.get("n"),
                        "contaminated_prompts": h.get("contaminated", 0),
                        "contaminated_chosen": chosen if h.get("chosen_checked") else "not checked",
                        "near_duplicates": h.get("near_duplicate", 0),
                        "near_duplicate_threshold": h.get("near_duplicate_threshold") or "off"})
    return entries


def format_info(info: dict) -> str:
    if info["prefdata_version"] is None:  # parts but no manifest: a first build killed before it wrote one
        header = "(no manifest yet: a build was interrupted before its first stage finished)"
    else:
        header = (f"(prefdata {info['prefdata_version']}, schema v{info['schema_version']}, "
                  f"updated {info['updated_at']})")
    lines = [f"workspace {info['workspace']}  {header}", "", "tables:"]
    for name, t in info["tables"].items():
        lines.append(f"  {name:<11} {t['rows']:>9,} rows  {t['parts']:>4} parts  {t['bytes'] / 1e6:8.2f} MB")

    def section(title: str, entries: list[dict]) -> None:
        lines.extend(["", f"{title}:"])
        if not entries:
            lines.append("  (none)")
        for entry in entries:
            lines.append("  " + "  ".join(f"{k}={v}" for k, v in entry.items()))

    section("sources", info["sources"])
    section("models", info["models"])
    if info["imports"]:
        section("imports", [{"file": i["file"], "as": i["as"], "read": i["rows_read"], "kept": i["kept"],
                             "dropped": ",".join(f"{k}:{v}" for k, v in i["dropped"].items()) or "none"}
                            for i in info["imports"]])
    section("judges", info["judges"])
    section("datasets (pairs)", info["datasets"])
    section("data hygiene (prompts dropped before generation)", info.get("hygiene", []))
    lines.extend(["", "stages done: " + (", ".join(info["stages"]) or "(none)")])
    return "\n".join(lines)
