"""Write an import into a workspace: idempotent, crash-safe, provenance in the manifest.

Each table gets one part per import, keyed by the file's content hash and the
import's settings (`import-<key>`, for pairs `import-<dataset>-<key>`), so the
same file imported with another --origin or --map is another import. A part holds the
file's rows that no *other* part has, by id (prompt_id, candidate_id, (candidate,
judge, version), pair_id), so re-writing it is a pure function of the file and
the rest of the workspace:

* the same file imported twice with the same settings is found in the manifest
  with its parts intact and skipped (were a part missing, it would be rewritten):
  nothing is added;
* a killed import leaves whole parts (temp file + fsync + rename) and no
  manifest entry; re-running it rewrites the same parts and ends with the same
  rows as an uninterrupted run;
* the manifest (written last) records the file, its sha256, the mapping, the
  counts and the drop reasons under the stage `import:<key>`.
"""

from __future__ import annotations

import polars as pl
import pyarrow.compute as pc
import pyarrow.parquet as pq

from prefdata.errors import PrefdataError
from prefdata.store import Workspace, atomic_write_bytes

IDS = {"prompts": ("prompt_id",), "candidates": ("candidate_id",),
       "judgments": ("candidate_id", "judge_name", "judge_version"), "pairs": ("pair_id",)}
PREFIX = "import-"


def part_key(sha256: str, settings: dict) -> str:
    """`import-<16 hex>` of the file's hash and the settings that shape its rows."""
    import hashlib
    import json

    digest = hashlib.sha256(json.dumps([sha256, settings], sort_keys=True).encode()).hexdigest()[:16]
    dataset = settings.get("dataset")
    return f"{PREFIX}{dataset}-{digest}" if settings.get("as") == "pairs" else f"{PREFIX}{digest}"


def stage_name(key: str) -> str:
    return f"import:{key[len(PREFIX):]}"


def already_imported(ws_root, key: str) -> dict | None:
    """The recorded summary when this import finished before and its parts are all on disk."""
    from pathlib import Path

    root = Path(ws_root)
    if not (root / "manifest.json").is_file():
        return None
    manifest = Workspace.open(root).manifest()
    entry = manifest.get("stages", {}).get(stage_name(key))
    if entry is None:
        return None
    name = f"part-{key}.parquet"
    for table in IDS:
        recorded = manifest.get("tables", {}).get(table, {}).get("parts", {}).get(name)
        path = root / table / name
        if recorded is None and entry["config"].get("added", {}).get(table):
            return None  # rows were added to this table, but its part is gone
        if recorded is not None and (not path.is_file() or path.stat().st_size != recorded["bytes"]):
            return None
    return entry["config"]


def _ids(ws: Workspace, table: str, key: str) -> tuple[pl.DataFrame, pl.DataFrame]:
    """(ids in every part but `key`, ids in part `key`), reading only the id columns."""
    columns = list(IDS[table])
    others, mine = [], []
    for path in ws.parts(table):
        ids = pl.from_arrow(pq.read_table(path, columns=columns))
        (mine if path.name == f"part-{key}.parquet" else others).append(ids)
    empty = pl.DataFrame(schema={c: pl.String for c in columns})
    return (pl.concat(others) if others else empty), (pl.concat(mine) if mine else empty)


def check_dataset(ws: Workspace, dataset: str) -> None:
    """Imported pairs may join an imported dataset, never a built one."""
    for path in ws.parts("pairs"):
        key = path.name[len("part-"):-len(".parquet")]
        if key.startswith(PREFIX):
            continue
        names = pq.read_table(path, columns=["dataset"]).column("dataset")
        if len(names) and pc.any(pc.equal(names, dataset)).as_py():
            raise PrefdataError(f"dataset {dataset!r} in {ws.root} was built by prefdata",
                                "import the pairs under another --dataset name")


def write_import(ws: Workspace, tables: dict[str, pl.DataFrame | None], key: str, record: dict) -> dict[str, int]:
    """Write each table's new rows as part `key`, then the manifest and the card; returns the
    rows each table gained."""
    from prefdata.card import dataset_card

    added = {}
    with ws.writer():
        for table in ("prompts", "candidates", "judgments", "pairs"):
            frame = tables.get(table)
            if frame is None:
                continue
            others, mine = _ids(ws, table, key)
            ids = list(IDS[table])
            new = frame.join(others, on=ids, how="anti") if others.height else frame
            added[table] = new.join(mine, on=ids, how="anti").height if mine.height else new.height
            if new.height:
                ws.write_part(table, key, new.to_arrow())
            elif mine.height:
                ws.delete_part(table, key)
        record = {**record, "added": added}
        ws.write_manifest(stage_name(key), record)
        atomic_write_bytes(ws.root / "README.md", dataset_card(ws).encode())
    return added

