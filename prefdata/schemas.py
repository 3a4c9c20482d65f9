"""The table schemas, loaded from `schemas/*.json` (the single source of truth).

Writers never let Arrow infer a schema: `conform` puts a table into the declared
column order and types, fills absent nullable columns with nulls, and refuses
missing required columns, unknown columns and nulls in non-nullable columns.

>>> schema("judgments").field("score").type
DataType(double)
"""

from __future__ import annotations

import json
import re
from functools import lru_cache
from pathlib import Path

import pyarrow as pa

from prefdata.errors import PrefdataError

SCHEMA_VERSION = 1
TABLES = ("prompts", "candidates", "judgments", "pairs")

_PRIMITIVES = {
    "string": pa.string(),
    "int32": pa.int32(),
    "int64": pa.int64(),
    "float32": pa.float32(),
    "float64": pa.float64(),
    "bool": pa.bool_(),
}


def schema_dir() -> Path:
    """`schemas/` beside the package (source checkout, editable install) or inside it (wheel)."""
    here = Path(__file__).resolve().parent
    for candidate in (here.parent / "schemas", here / "_schemas"):
        if (candidate / "prompts.json").is_file():
            return candidate
    raise PrefdataError("schema files not found next to the prefdata package",
                        "reinstall prefdata (scripts/install.sh)")


def parse_type(text: str) -> pa.DataType:
    """Parse the small type language of the schema files.

    >>> parse_type("list<struct<role:string,content:string>>")
    ListType(list<item: struct<role: string, content: string>>)
    """
    text = text.replace(" ", "")
    if text in _PRIMITIVES:
        return _PRIMITIVES[text]
    match = re.fullmatch(r"list<(.+)>", text)
    if match:
        return pa.list_(parse_type(match.group(1)))
    match = re.fullmatch(r"struct<(.+)>", text)
    if match:
        fields = []
        for part in _split_top_level(match.group(1)):
            name, _, sub = part.partition(":")
            fields.append(pa.field(name, parse_type(sub)))
        return pa.struct(fields)
    raise ValueError(f"unknown schema type {text!r}")


def _split_top_level(text: str) -> list[str]:
    parts, depth, start = [], 0, 0
    for i, ch in enumerate(text):
        depth += ch == "<"
        depth -= ch == ">"
        if ch == "," and depth == 0:
            parts.append(text[start:i])
            start = i + 1
    parts.append(text[start:])
    return parts


@lru_cache(maxsize=None)
def schema(table: str) -> pa.Schema:
    """The Arrow schema of `table` (one of TABLES)."""
    if table not in TABLES:
        raise PrefdataError(f"unknown table {table!r}", f"use one of: {', '.join(TABLES)}")
    spec = json.loads((schema_dir() / f"{table}.json").read_text())
    fields = [pa.field(f["name"], parse_type(f["type"]), nullable=f["nullable"]) for f in spec["fields"]]
    return pa.schema(fields, metadata={"prefdata.table": table,
                                       "prefdata.schema_version": str(spec["schema_version"])})


def empty(table: str) -> pa.Table:
    return schema(table).empty_table()


def conform(table_name: str, data: pa.Table) -> pa.Table:
    """Return `data` cast to the declared schema of `table_name`, or raise."""
    target = schema(table_name)
    extra = [n for n in data.column_names if target.get_field_index(n) < 0]
    if extra:
        raise ValueError(f"{table_name}: columns not in schema: {extra}")
    columns = []
    for field in target:
        if field.name in data.column_names:
            column = data.column(field.name)
            if column.type != field.type:
                column = column.cast(field.type)
        elif field.nullable:
            column = pa.nulls(data.num_rows, field.type)
        else:
            raise ValueError(f"{table_name}: required column {field.name!r} missing")
        if not field.nullable and column.null_count:
            raise ValueError(f"{table_name}: column {field.name!r} has {column.null_count} nulls")
        columns.append(column)
    return pa.Table.from_arrays(columns, schema=target)
