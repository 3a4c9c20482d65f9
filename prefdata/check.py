"""`prefdata check`: is a workspace whole? Names every fault it finds.

Two depths:

* `quick_faults` (run by every `build` before it takes the lock, so it costs one
  Parquet footer per part): the manifest is a JSON object, each table folder is a
  folder, each part's footer reads, and each part's schema is exactly the one in
  `schemas/` (names, types, nullability, order): a valid Parquet file with a
  foreign schema is a fault, not a part.
* `faults` (`prefdata check`): the above, plus each part matches the manifest
  (listed, same size, same sha256 of its bytes), each part reads in full, and
  every reference resolves: pairs to their chosen and rejected candidates and
  their prompt, candidates to their prompt, judgments to their candidate.

A build killed after writing a part but before its manifest leaves a part the
manifest does not list yet; `check` reports it (the fix is to re-run that build,
which re-derives the manifest), while `build` itself accepts it and resumes.

>>> for fault in faults(Workspace.open("ws")):  # doctest: +SKIP
...     print(fault)
ws/candidates/part-policy-1a2b.parquet: not readable Parquet (magic bytes not found)
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from prefdata.errors import PrefdataError
from prefdata.schemas import TABLES, schema
from prefdata.store import MANIFEST, Workspace, _sha256_file

# (table, column) -> (table, column) it must resolve to
REFERENCES = (
    ("pairs", "chosen_candidate_id", "candidates", "candidate_id"),
    ("pairs", "rejected_candidate_id", "candidates", "candidate_id"),
    ("pairs", "prompt_id", "prompts", "prompt_id"),
    ("candidates", "prompt_id", "prompts", "prompt_id"),
    ("judgments", "candidate_id", "candidates", "candidate_id"),
)


@dataclass(frozen=True)
class Fault:
    path: Path
    problem: str

    def __str__(self) -> str:
        return f"{self.path}: {self.problem}"


def _first_line(err: BaseException) -> str:
    return (str(err).strip().splitlines() or [type(err).__name__])[0]


def _names(what: str, names: list[str]) -> str:
    if not names:
        return ""
    shown = ", ".join(names[:3]) + (f" and {len(names) - 3} more" if len(names) > 3 else "")
    return f"{what} column{'s' if len(names) > 1 else ''} {shown}"


def _schema_problem(found: pa.Schema, table: str) -> str | None:
    want = schema(table)
    if found.names != want.names:
        missing = [n for n in want.names if n not in found.names]
        extra = [n for n in found.names if n not in want.names]
        detail = "; ".join(x for x in (_names("missing", missing), _names("unknown", extra)) if x) \
            or "columns out of order"
        return f"schema differs from schemas/{table}.json ({detail})"
    for got, expected in zip(found, want):
        if got.type != expected.type or got.nullable != expected.nullable:
            return (f"schema differs from schemas/{table}.json (column {got.name}: "
                    f"{got.type}{'' if got.nullable else ' not null'}, expected "
                    f"{expected.type}{'' if expected.nullable else ' not null'})")
    return None


def quick_faults(ws: Workspace) -> list[Fault]:
    """The cheap structural check: manifest, folders, part footers and schemas."""
    found: list[Fault] = []
    try:
        ws.manifest()
    except PrefdataError as err:
        found.append(Fault(ws.root / MANIFEST, err.problem.replace(f"{ws.root / MANIFEST} ", "")))
    for table in TABLES:
        folder = ws.root / table
        if folder.exists() and not folder.is_dir():
            found.append(Fault(folder, "is a file; a table must be a folder of parts"))
            continue
        for path in ws.parts(table):
            try:
                part_schema = pq.read_schema(path)
            except (pa.ArrowInvalid, OSError) as err:
                found.append(Fault(path, f"not readable Parquet ({_first_line(err)})"))
                continue
            problem = _schema_problem(part_schema, table)
            if problem:
                found.append(Fault(path, problem))
    return found


def _manifest_faults(ws: Workspace, manifest: dict) -> list[Fault]:
    found = []
    for table in TABLES:
        described = manifest.get("tables", {}).get(table)
        listed = described.get("parts") if isinstance(described, dict) else None
        listed = listed if isinstance(listed, dict) else {}
        on_disk = {p.name: p for p in ws.parts(table)}
        for name in sorted(set(listed) - set(on_disk)):
            found.append(Fault(ws.root / table / name, "listed in the manifest but missing"))
        for name, path in on_disk.items():
            entry = listed.get(name)
            if not isinstance(entry, dict):
                found.append(Fault(path, "not in the manifest (written by a build that did not finish?)"))
            elif entry.get("bytes") != path.stat().st_size or entry.get("sha256") != _sha256_file(path):
                found.append(Fault(path, "content differs from the manifest's sha256"))
    return found


def _column(ws: Workspace, table: str, column: str, bad: set[Path]) -> dict[Path, pa.Array]:
    """`column` of each part of `table` that read in full (the unreadable ones are already faults)."""
    out = {}
    for path in ws.parts(table):
        if path not in bad:
            try:
                out[path] = pq.read_table(path, columns=[column]).column(column).combine_chunks()
            except (pa.ArrowInvalid, OSError, KeyError):
                bad.add(path)
    return out


def _reference_faults(ws: Workspace, bad: set[Path]) -> list[Fault]:
    import pyarrow.compute as pc

    found = []
    for table, column, target, target_column in REFERENCES:
        known = [a.unique() for a in _column(ws, target, target_column, bad).values()]
        targets = pa.concat_arrays(known).unique() if known else pa.array([], pa.string())
        for path, values in _column(ws, table, column, bad).items():
            missing = values.filter(pc.and_(pc.is_valid(values), pc.invert(pc.is_in(values, value_set=targets))))
            if len(missing):
                found.append(Fault(path, f"{len(missing)} of {len(values)} rows' {column} do not resolve to "
                                         f"a {target} row (e.g. {missing[0].as_py()})"))
    return found


def faults(ws: Workspace) -> list[Fault]:
    """Every fault: the quick check, the manifest's hashes, full reads and references."""
    found = quick_faults(ws)
    bad = {f.path for f in found}
    if not any(f.path == ws.root / MANIFEST for f in found):
        found += _manifest_faults(ws, ws.manifest())
    for table in TABLES:
        for path in ws.parts(table):
            if path in bad:
                continue
            try:
                pq.read_table(path)
            except (pa.ArrowInvalid, OSError) as err:
                bad.add(path)
                found.append(Fault(path, f"not readable Parquet ({_first_line(err)})"))
    found += _reference_faults(ws, bad)
    return found


def open_for_check(root: Path) -> Workspace:
    """The workspace at `root` even when its manifest is damaged (that is one of the faults)."""
    root = Path(root)
    try:
        return Workspace.open(root)
    except PrefdataError:
        if root.is_dir() and (os.path.lexists(root / MANIFEST) or any((root / t).exists() for t in TABLES)):
            return Workspace(root)
        raise


def refuse_if_damaged(root: Path) -> None:
    """Raise a one-line error naming the first fault of the quick check (used by `build`)."""
    root = Path(root)
    if not root.is_dir():
        return
    Workspace(root).manifest()  # a damaged manifest raises its own one-line error, naming it
    found = quick_faults(Workspace(root))
    if found:
        more = f" (and {len(found) - 1} more fault(s))" if len(found) > 1 else ""
        raise PrefdataError(f"workspace {root} is damaged: {found[0]}{more}",
                            f"move the named file out of the workspace (a build regenerates missing parts) "
                            f"and run `prefdata check {root}` for the full list")
