"""Find a source and read its split into an Arrow table, with actionable errors.

A source is a file (JSONL, JSON array, Parquet, CSV/TSV), a directory (saved
with `datasets.save_to_disk`, or a folder of `<split>.<ext>` /
`<split>-NNNNN-of-NNNNN.<ext>` data files) or a Hugging Face hub id.
Text files are checked for UTF-8 first so that a bad byte is reported with its
line and offset instead of surfacing as a parser error deep inside Arrow.
"""

from __future__ import annotations

import io
import json
import os
import re
import socket
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import pyarrow as pa

from prefdata.errors import PrefdataError
from prefdata.sources.guards import check_depth, check_surrogates, concat_shards
from prefdata.sources.spec import FORMATS, SPLIT_NAMES, SourceSpec

_EXTENSIONS = {".jsonl": "jsonl", ".ndjson": "jsonl", ".json": "json", ".parquet": "parquet",
               ".pq": "parquet", ".csv": "csv", ".tsv": "csv"}
_HUB_ID = re.compile(r"[A-Za-z0-9][\w.-]*(/[\w.-]+)?")
_BOM = b"\xef\xbb\xbf"


@dataclass(frozen=True)
class RawSource:
    """One split of a source as read, before any column mapping."""

    table: pa.Table
    name: str          # stable source name, hashed into prompt_id
    split: str
    format: str        # resolved format (never "auto")
    origin: str        # where it was read from, for messages
    where: Callable[[int], str]  # row index (0-based) -> "line 12 of x.jsonl"


def read_source(spec: SourceSpec) -> RawSource:
    """Resolve `spec.path_or_name` and read the requested split."""
    if spec.format not in FORMATS:
        raise PrefdataError(f"unknown format {spec.format!r}", f"use one of: {', '.join(FORMATS)}")
    path = Path(spec.path_or_name).expanduser()
    if path.is_file():
        return _read_file(path, spec)
    if path.is_dir():
        return _read_directory(path, spec)
    if spec.format in ("auto", "hf") and _looks_like_hub_id(spec.path_or_name):
        return _read_hub(spec)
    raise PrefdataError(f"file not found: {spec.path_or_name} (working directory {os.getcwd()})",
                        "check the path, or give a Hugging Face hub id like openai/gsm8k")


def _looks_like_hub_id(text: str) -> bool:
    # "data/x.jsonl" or "./gsm8k" are paths the user mistyped, not hub ids.
    return (bool(_HUB_ID.fullmatch(text)) and Path(text).suffix.lower() not in _EXTENSIONS
            and not text.startswith("."))


def _source_name(path: Path) -> str:
    """The dataset's name: `gsm8k` for both `.../gsm8k/train.jsonl` and `.../gsm8k/`.

    Only the name (never the absolute path) is used, so ids survive moving files.
    """
    path = path.resolve()
    if path.is_file():
        if _split_of(path) in SPLIT_NAMES:
            return path.parent.name if path.parent.name != "data" else path.parent.parent.name
        return path.stem
    return path.name


def _split_of(path: Path) -> str:
    # "train-00000-of-00002.parquet" and "train.jsonl" both belong to split "train".
    return path.name.split(".")[0].split("-")[0].lower()


def _file_format(path: Path, requested: str) -> str:
    if requested != "auto":
        if requested == "hf":
            raise PrefdataError(f"--format hf needs a directory or hub id, but {path} is a file",
                                "use --format auto, jsonl, json, parquet or csv")
        return requested
    fmt = _EXTENSIONS.get(path.suffix.lower())
    if fmt is None:
        raise PrefdataError(f"unknown format for {path.name} (extension {path.suffix or 'none'!r})",
                            "rename it to .jsonl/.json/.parquet/.csv or pass --format jsonl|json|parquet|csv")
    return fmt


def _read_file(path: Path, spec: SourceSpec) -> RawSource:
    fmt = _file_format(path, spec.format)
    table, where = _READERS[fmt](path)
    # A file named like a split is that split ("test.jsonl" holds the test split).
    split = _split_of(path) if _split_of(path) in SPLIT_NAMES else spec.split
    return RawSource(table, spec.name or _source_name(path), split, fmt, str(path), where)


def _read_directory(path: Path, spec: SourceSpec) -> RawSource:
    name = spec.name or _source_name(path)
    if (path / "dataset_dict.json").is_file() or (path / "state.json").is_file():
        table, split = _read_saved_dataset(path, spec.split)
        return RawSource(table, name, split, "hf", str(path), lambda i: f"row {i + 1} of {path}")
    files = sorted(p for p in path.rglob("*") if p.is_file() and p.suffix.lower() in _EXTENSIONS
                   and not any(part.startswith(".") for part in p.relative_to(path).parts))
    if not files:
        raise PrefdataError(f"no data files in directory {path}",
                            "put <split>.jsonl/.json/.parquet/.csv files there, or a save_to_disk dataset")
    by_split: dict[str, list[Path]] = {}
    for f in files:
        by_split.setdefault(_split_of(f), []).append(f)
    chosen = by_split.get(spec.split.lower())
    if chosen is None:
        raise PrefdataError(f"split {spec.split!r} not found in {path}",
                            f"available splits: {', '.join(sorted(by_split))}; pass --split NAME")
    if spec.format not in ("auto", "hf"):
        fmts = [spec.format] * len(chosen)
    else:
        fmts = [_file_format(f, "auto") for f in chosen]
    parts, wheres, offsets = [], [], [0]
    for f, fmt in zip(chosen, fmts):
        table, where = _READERS[fmt](f)
        parts.append(table)
        wheres.append(where)
        offsets.append(offsets[-1] + table.num_rows)
    table = parts[0] if len(parts) == 1 else concat_shards(parts, chosen)

    def where(i: int) -> str:
        k = max(j for j in range(len(parts)) if offsets[j] <= i)
        return wheres[k](i - offsets[k])

    return RawSource(table, name, spec.split, fmts[0], str(path), where)


def _read_saved_dataset(path: Path, split: str) -> tuple[pa.Table, str]:
    import datasets  # heavy: only for save_to_disk directories

    try:
        loaded = datasets.load_from_disk(str(path))
    except Exception as exc:  # corrupt or version-mismatched dataset folder
        raise PrefdataError(f"cannot load the saved dataset in {path}: {_first_line(exc)}",
                            "re-save it with datasets.save_to_disk, or export it to JSONL") from exc
    if isinstance(loaded, datasets.DatasetDict):
        if split not in loaded:
            raise PrefdataError(f"split {split!r} not found in {path}",
                                f"available splits: {', '.join(loaded)}; pass --split NAME")
        loaded = loaded[split]
    return _dataset_table(loaded), split


def _dataset_table(ds) -> pa.Table:
    # with_format("arrow")[:] honours an indices mapping (select/shuffle), .data would not.
    return ds.with_format("arrow")[:] if len(ds) else ds.data.table.slice(0, 0)


def _read_hub(spec: SourceSpec) -> RawSource:
    name = spec.path_or_name
    if not os.environ.get("HF_HUB_OFFLINE") and not _hub_reachable():
        # Without this, datasets retries for ~25 s before failing; offline mode
        # answers from the local cache at once.
        os.environ["HF_HUB_OFFLINE"] = "1"
        os.environ["HF_DATASETS_OFFLINE"] = "1"
        _set_offline_if_imported()
    import datasets  # heavy: only for hub sources

    try:
        loaded = datasets.load_dataset(name, spec.config)
    except Exception as exc:
        raise PrefdataError(
            f"{name!r} is not a local file or directory and could not be loaded from the "
            f"Hugging Face hub or its cache ({type(exc).__name__}: {_first_line(exc)})",
            "give a local path (a .jsonl/.json/.parquet/.csv file or a dataset folder), or download "
            "it once with network access (datasets.load_dataset) so it is cached") from exc
    if isinstance(loaded, datasets.DatasetDict):
        if spec.split not in loaded:
            raise PrefdataError(f"split {spec.split!r} not found in {name}",
                                f"available splits: {', '.join(loaded)}; pass --split NAME")
        loaded = loaded[spec.split]
    table = _dataset_table(loaded)
    return RawSource(table, spec.name or name, spec.split, "hf", name, lambda i: f"row {i + 1} of {name}")


def _hub_reachable() -> bool:
    endpoint = os.environ.get("HF_ENDPOINT", "https://huggingface.co")
    host = re.sub(r"^\w+://", "", endpoint).split("/")[0].split(":")[0]
    try:
        socket.create_connection((host, 443), timeout=3).close()
        return True
    except OSError:
        return False


def _set_offline_if_imported() -> None:
    # The libraries read the env var at import time; patch them if already loaded.
    import sys

    if "huggingface_hub" in sys.modules:
        sys.modules["huggingface_hub"].constants.HF_HUB_OFFLINE = True
    if "datasets" in sys.modules:
        sys.modules["datasets"].config.HF_HUB_OFFLINE = True


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip() or type(exc).__name__
    return text.splitlines()[0][:300]


# --- text files ----------------------------------------------------------------

def _read_text_bytes(path: Path) -> bytes:
    data = path.read_bytes()
    skipped = len(_BOM) if data.startswith(_BOM) else 0  # offsets below count it
    data = data[skipped:]
    if not data.strip():
        raise PrefdataError(f"{path} is empty (no rows)", "point at a file that has prompts in it")
    try:
        data.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = data.count(b"\n", 0, exc.start) + 1
        raise PrefdataError(f"{path} is not valid UTF-8 text (line {line}, byte offset {exc.start + skipped})",
                            f"re-encode it as UTF-8, e.g. iconv -f latin1 -t utf-8 {path.name}") from None
    return data


def _line_locator(data: bytes, path: Path) -> Callable[[int], str]:
    """Map a row index to its 1-based line number (blank lines are skipped as rows)."""
    cache: list[int] = []

    def where(i: int) -> str:
        if not cache:
            cache.extend(n for n, line in enumerate(data.split(b"\n"), 1) if line.strip())
        return f"line {cache[i]} of {path}" if i < len(cache) else f"row {i + 1} of {path}"

    return where


def _read_jsonl(path: Path) -> tuple[pa.Table, Callable[[int], str]]:
    import pyarrow.json as pajson

    data = _read_text_bytes(path)
    check_depth(data, path)
    check_surrogates(data, path)
    try:
        # Single-threaded: when a threaded read fails (a line longer than a
        # block), Arrow can leave worker tasks running, and the process then
        # sometimes aborts at exit ("terminate called without an active
        # exception") instead of exiting with our error. Prompt files are
        # small enough that one thread reads them about as fast.
        table = pajson.read_json(pa.BufferReader(data), read_options=pajson.ReadOptions(use_threads=False))
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
        # Arrow reports "row N" within a block, not a line; re-parse in Python
        # to find the exact line, and to accept columns whose type varies by row.
        table = _jsonl_slow(data, path)
    return _nonempty(table, path), _line_locator(data, path)


def _jsonl_slow(data: bytes, path: Path) -> pa.Table:
    records = []
    for lineno, line in enumerate(data.decode("utf-8").split("\n"), 1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as exc:
            raise PrefdataError(f"malformed JSON on line {lineno} of {path}: {exc.msg} at column {exc.colno}",
                                "fix or remove that line (each line must be one JSON object)") from None
        if not isinstance(record, dict):
            raise PrefdataError(f"line {lineno} of {path} is a JSON {type(record).__name__}, not an object",
                                "each line must be one JSON object like {\"prompt\": \"...\"}")
        records.append(record)
    return _table_from_records(records, path)


def _table_from_records(records: list[dict], path: Path) -> pa.Table:
    try:
        return pa.Table.from_pylist(records)
    except (pa.ArrowInvalid, pa.ArrowTypeError, TypeError):
        # A column mixes types (72 in one row, "72" in another): keep text as
        # text and write other scalars as JSON text, so "answer": 72 -> "72".
        fixed = [{k: v if isinstance(v, (str, list, dict)) or v is None else json.dumps(v)
                  for k, v in r.items()} for r in records]
        try:
            return pa.Table.from_pylist(fixed)
        except (pa.ArrowInvalid, pa.ArrowTypeError, TypeError) as exc:
            raise PrefdataError(f"{path}: a field's type differs between rows ({_first_line(exc)})",
                                "make each field the same type in every row") from None


def _read_json(path: Path) -> tuple[pa.Table, Callable[[int], str]]:
    data = _read_text_bytes(path)
    check_depth(data, path)
    check_surrogates(data, path)
    try:
        doc = json.loads(data)
    except json.JSONDecodeError as exc:
        if exc.msg == "Extra data" and data.lstrip().startswith(b"{"):
            return _read_jsonl(path)  # a .json file that is really JSON Lines
        raise PrefdataError(f"malformed JSON in {path} at line {exc.lineno}, column {exc.colno}: {exc.msg}",
                            "fix the file (it must be a JSON array of objects, or JSON Lines)") from None
    if isinstance(doc, dict):
        lists = [v for v in doc.values() if isinstance(v, list)]
        if len(lists) == 1 and len(doc) == 1:
            doc = lists[0]  # {"data": [...]} wrapper
        elif lists and len(lists) == len(doc) and len({len(v) for v in lists}) == 1:
            doc = [dict(zip(doc, row)) for row in zip(*doc.values())]  # column-oriented
        else:
            raise PrefdataError(f"{path} holds a JSON object, not an array of rows",
                                "write it as [{\"prompt\": ...}, ...] or as JSON Lines")
    if not isinstance(doc, list):
        raise PrefdataError(f"{path} holds a JSON {type(doc).__name__}, not an array of rows",
                            "write it as [{\"prompt\": ...}, ...] or as JSON Lines")
    bad = next((i for i, r in enumerate(doc) if not isinstance(r, dict)), None)
    if bad is not None:
        raise PrefdataError(f"item {bad + 1} of the array in {path} is not a JSON object",
                            "every item must be an object like {\"prompt\": \"...\"}")
    table = _nonempty(_table_from_records(doc, path), path)
    return table, lambda i: f"item {i + 1} of {path}"


def _read_csv(path: Path) -> tuple[pa.Table, Callable[[int], str]]:
    import polars as pl

    data = _read_text_bytes(path)
    try:
        # Every column as text: answers like "007" or "1,000" must survive as written.
        frame = pl.read_csv(io.BytesIO(data), infer_schema=False,
                            separator="\t" if path.suffix.lower() == ".tsv" else ",")
    except Exception as exc:  # polars raises several error types for bad CSV
        raise PrefdataError(f"cannot parse CSV {path}: {_first_line(exc)}",
                            "check quoting and the number of fields per line") from None
    table = _nonempty(frame.to_arrow(), path)
    # Row i sits on line i + 2 (after the header) unless a quoted field spans lines.
    return table, lambda i: f"row {i + 1} (line {i + 2}) of {path}"


def _read_parquet(path: Path) -> tuple[pa.Table, Callable[[int], str]]:
    import pyarrow.parquet as pq

    if path.stat().st_size == 0:
        raise PrefdataError(f"{path} is empty (no rows)", "point at a file that has prompts in it")
    try:
        table = pq.read_table(path)
    except (pa.ArrowInvalid, OSError) as exc:
        raise PrefdataError(f"{path} is not a readable Parquet file: {_first_line(exc)}",
                            "check the file, or pass --format if it is not Parquet") from None
    return _nonempty(table, path), lambda i: f"row {i + 1} of {path}"


def _nonempty(table: pa.Table, path: Path) -> pa.Table:
    if table.num_rows == 0:
        raise PrefdataError(f"{path} has no rows", "point at a file that has prompts in it")
    return table


_READERS = {"jsonl": _read_jsonl, "json": _read_json, "csv": _read_csv, "parquet": _read_parquet}
