"""`prefdata import`: bring pre-generated candidates or finished preference pairs into a workspace.

Modules: `spec` (ImportSpec, --map), `read` (the file, via the sources readers),
`prompts` (prompt ids and the prompts table), `candidates` (flat and
multi-completion rows), `pairs` (standard, conversational, implicit-prompt),
`write` (idempotent, crash-safe parts and the manifest entry), `reuse` (what
`prefdata build` takes from imports).

>>> summary = import_file("ws", ImportSpec("gens.jsonl", "candidates", origin="policy",
...                                        model_name="my-model"))      # doctest: +SKIP
>>> summary["added"]["candidates"]                                       # doctest: +SKIP
8000
"""

from __future__ import annotations

import time
from pathlib import Path

from prefdata.importing.spec import ImportSpec, parse_map

__all__ = ["ImportSpec", "format_summary", "import_file", "parse_map"]


def import_file(workspace: str | Path, spec: ImportSpec) -> dict:
    """Read, map and check the file first (a refused file leaves the workspace untouched), then
    write its new rows; returns the summary also stored in the manifest."""
    from prefdata.importing.candidates import import_candidates
    from prefdata.importing.pairs import import_pairs
    from prefdata.importing.read import file_sha256, read_import
    from prefdata.importing.write import already_imported, check_dataset, part_key, write_import
    from prefdata.store import Workspace

    started = time.perf_counter()
    settings = {"as": spec.kind, "format": spec.format, "split": spec.split, "map": dict(spec.mapping),
                "origin": spec.origin, "model_name": spec.model_name, "dataset": spec.dataset,
                "ratings": list(spec.ratings) if spec.ratings is not None else None, "marker": spec.marker,
                "human_marker": spec.human_marker, "source_name": spec.source_name}
    local = Path(spec.path).expanduser()
    if local.exists():
        key = part_key(file_sha256(local), settings)
        done = already_imported(workspace, key)
        if done is not None:  # the same file, the same settings, its parts intact: nothing to do
            zero = {t: 0 for t in done.get("added", {})}
            return {**done, "added": zero, "seconds": round(time.perf_counter() - started, 2)}
    imp = read_import(spec.path, spec.format, spec.split, spec.source_name)
    result = (import_candidates if spec.kind == "candidates" else import_pairs)(imp, spec)
    ws = Workspace.create(workspace)
    if spec.kind == "pairs":
        check_dataset(ws, spec.dataset)
    tables = {t: result.get(t) for t in ("prompts", "candidates", "judgments", "pairs")}
    kept = (tables["candidates"] if spec.kind == "candidates" else tables["pairs"]).height
    record = {"file": str(local.resolve()), "sha256": imp.sha256, "format": imp.format,
              "source": imp.name, "as": spec.kind, "layout": result["layout"], "map": dict(spec.mapping),
              "origin": spec.origin if spec.kind == "candidates" else "imported",
              "model_name": spec.model_name, "dataset": spec.dataset, "rows_read": result["rows_read"],
              "kept": kept, "dropped": dict(sorted(result["dropped"].items())),
              "judges": result.get("ratings", []), "settings": settings}
    if spec.kind == "pairs" and result["layout"] == "implicit":
        record["marker"] = spec.marker
    record["added"] = write_import(ws, tables, part_key(imp.sha256, settings), record)
    record["seconds"] = round(time.perf_counter() - started, 2)
    return record


def format_summary(s: dict) -> str:
    unit = "responses" if s["as"] == "candidates" else "pairs"
    dropped = ", ".join(f"{k}={v}" for k, v in s["dropped"].items()) or "none"
    added = ", ".join(f"{t} +{n}" for t, n in s["added"].items())
    lines = ["", "import summary", "--------------",
             f"file              {s['file']} (sha256 {s['sha256'][:16]}, {s['format']}, {s['layout']})",
             f"rows read         {s['rows_read']}",
             f"{unit + ' kept':<18}{s['kept']}",
             f"dropped           {dropped}",
             f"added             {added}" + ("" if any(s["added"].values()) else " (already imported)")]
    if s.get("judges"):
        lines.append(f"ratings as judges {', '.join(s['judges'])}")
    if s["as"] == "pairs":
        lines.append(f"dataset           {s['dataset']} (origin imported)")
    lines.append(f"time              {s['seconds']} s")
    return "\n".join(lines)
