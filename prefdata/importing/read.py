"""Read an import file, and find its columns.

CSV and `datasets` folders are read by `prefdata.sources.readers`, with the same
checks and one-line errors as a prompt source; Parquet by polars' own reader
(and by the readers, for their error, when it fails). JSON Lines go through
Arrow's JSON reader when every field keeps one type. A JSON file whose field
changes type between rows (a number where text should be, a list of content
parts instead of a string) is not refused as a whole, and its odd values are
not turned into text either: they become null and the row is flagged, so that
it is dropped with the reason ``non_string_content``. A malformed JSON file is
handed to the readers, which say where it is broken.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path

import polars as pl
import pyarrow as pa

from prefdata.errors import PrefdataError
from prefdata.sources.readers import read_source
from prefdata.sources.spec import SourceSpec

NONSTRING = "_nonstring"  # bool column: the row had a value of the wrong type (fallback reader)


@dataclass(frozen=True)
class ImportFile:
    frame: pl.DataFrame   # the file's rows (+ NONSTRING)
    name: str             # stable source name (file stem or folder name): hashed into prompt ids
    origin: str           # where it was read from, for messages
    sha256: str           # content hash of the file (of every data file, for a folder)
    format: str


def file_sha256(path: Path) -> str:
    """sha256 of a file, or of a folder's files (names and contents, sorted)."""
    digest = hashlib.sha256()
    files = [path] if path.is_file() else sorted(p for p in path.rglob("*") if p.is_file())
    for f in files:
        if path.is_dir():
            digest.update(str(f.relative_to(path)).encode() + b"\0")
        with open(f, "rb") as fh:
            for block in iter(lambda: fh.read(1 << 20), b""):
                digest.update(block)
    return digest.hexdigest()


def read_import(path: str, format: str = "auto", split: str = "train", name: str | None = None) -> ImportFile:
    from prefdata.sources.readers import _file_format, _source_name

    local = Path(path).expanduser()
    if not local.exists():
        raise PrefdataError(f"file not found: {path}", "check the path of the file to import")
    spec = SourceSpec(path, format=format, split=split, name=name)
    frame = None
    fmt = _file_format(local, format) if local.is_file() else "hf"
    if fmt in ("jsonl", "json"):
        frame = _read_json_file(local, fmt)
    elif fmt == "parquet":
        frame = _read_parquet_file(local)
    if frame is not None:
        source_name, origin = name or _source_name(local), str(local)
    if frame is None:  # CSV, folders, and files the readers must explain (malformed)
        raw = read_source(spec)
        source_name, origin, fmt = raw.name, raw.origin, raw.format
        frame = pl.from_arrow(raw.table) if raw.table.num_rows else pl.DataFrame()
        frame = frame.with_columns(pl.lit(False).alias(NONSTRING))
    if frame.height == 0:
        raise PrefdataError(f"{path} has no rows", "point at a file with rows to import")
    return ImportFile(frame, source_name, origin, file_sha256(local), fmt)


def _read_parquet_file(path: Path) -> pl.DataFrame | None:
    """Parquet through polars' own reader (no Arrow-to-polars copy of the texts: ~3x faster on
    a million rows); None when it fails, for the readers to report why."""
    try:
        return pl.read_parquet(path).with_columns(pl.lit(False).alias(NONSTRING))
    except Exception:  # polars raises several error types for a bad file
        return None


def _read_json_file(path: Path, fmt: str) -> pl.DataFrame | None:
    """JSON Lines through Arrow's reader when every field keeps one type; otherwise (and for
    JSON arrays) the type-checking reader below. None: malformed, for the readers to report."""
    import pyarrow.json as pajson

    if fmt == "jsonl":
        try:
            table = pajson.read_json(path, read_options=pajson.ReadOptions(use_threads=False))
            return pl.from_arrow(table).with_columns(pl.lit(False).alias(NONSTRING))
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
            pass
    try:
        return _read_mixed_json(path)
    except (json.JSONDecodeError, UnicodeDecodeError, PrefdataError):
        return None


def _kind(value) -> str:
    if isinstance(value, bool):
        return "bool"
    if isinstance(value, (int, float)):
        return "number"
    return type(value).__name__


def _read_mixed_json(path: Path) -> pl.DataFrame:
    """The fallback reader (the fast path has already failed, so this file is an odd one):
    per field, keep values of the most common type, null the others and flag their rows;
    in lists of messages, a turn whose content is not a string flags the row too."""
    text = path.read_text(encoding="utf-8-sig")
    try:
        records = json.loads(text)
    except json.JSONDecodeError:
        records = [json.loads(line) for line in text.splitlines() if line.strip()]
    if isinstance(records, dict):  # {"data": [...]}: one list of rows under one key
        lists = [v for v in records.values() if isinstance(v, list)]
        if len(records) != 1 or len(lists) != 1:
            raise PrefdataError(f"{path} is not a list of rows", "the readers explain")
        records = lists[0]
    if not isinstance(records, list) or not records or not all(isinstance(r, dict) for r in records):
        raise PrefdataError(f"{path} is not a list of rows", "the readers explain")
    kinds: dict[str, dict[str, int]] = {}
    for record in records:
        for key, value in record.items():
            if value is not None:
                counts = kinds.setdefault(key, {})
                counts[_kind(value)] = counts.get(_kind(value), 0) + 1
    major = {key: max(counts, key=counts.get) for key, counts in kinds.items()}
    flags = []
    for record in records:
        bad = False
        for key, value in list(record.items()):
            if value is None:
                continue
            if _kind(value) != major[key] or (isinstance(value, list) and not _turns_ok(value)):
                record[key] = None
                bad = True
        flags.append(bad)
    try:
        table = pa.Table.from_pylist(records)
    except (pa.ArrowInvalid, pa.ArrowTypeError) as exc:
        raise PrefdataError(f"{path}: rows differ in structure ({str(exc).splitlines()[0][:200]})",
                            "make each field the same type in every row") from None
    return pl.from_arrow(table).with_columns(pl.Series(NONSTRING, flags, pl.Boolean))


def _turns_ok(items: list) -> bool:
    """A list of message dicts must hold string contents; other lists pass as they are."""
    turns = [t for t in items if isinstance(t, dict) and "content" in t]
    return all(isinstance(t["content"], str) for t in turns) and len({_kind(t) for t in items}) <= 1


def find_column(frame: pl.DataFrame, field: str, mapping: dict, names: tuple[str, ...]) -> str | None:
    """The column for `field`: the mapped one (which must exist), else the first of `names`
    present (case-insensitive)."""
    if field in mapping:
        if mapping[field] not in frame.columns:
            raise PrefdataError(f"--map {field}={mapping[field]}: no column {mapping[field]!r} in the file",
                                f"the columns are: {columns_text(frame)}")
        return mapping[field]
    lowered = {c.lower(): c for c in frame.columns if c != NONSTRING}
    return next((lowered[n] for n in names if n in lowered), None)


def columns_text(frame: pl.DataFrame) -> str:
    return ", ".join(f"{c} ({_dtype_name(frame.schema[c])})" for c in frame.columns if c != NONSTRING)


def _dtype_name(dtype) -> str:
    return "text" if dtype == pl.String else ("list" if isinstance(dtype, pl.List) else str(dtype).lower())


def is_text(frame: pl.DataFrame, column: str | None) -> bool:
    return column is not None and frame.schema[column] in (pl.String, pl.Null)
