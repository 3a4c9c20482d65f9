"""DuckDB over a workspace: one read-only view per table.

The views are created in a throwaway database file which is then re-opened
read-only, and only query statements (SELECT, WITH, DESCRIBE, SHOW, SUMMARIZE,
EXPLAIN) are accepted, so `prefdata query` can neither change the workspace nor
write files (no COPY ... TO, no EXPORT, no ATTACH).

>>> run_query(Workspace.open("ws"), "SELECT scenario, count(*) FROM pairs GROUP BY 1")  # doctest: +SKIP
"""

from __future__ import annotations

import contextlib
import re
import tempfile
from pathlib import Path
from typing import Iterator

import pyarrow as pa
import pyarrow.parquet as pq

from prefdata.errors import PrefdataError
from prefdata.schemas import TABLES, empty
from prefdata.store import Workspace

OUTPUT_FORMATS = ("table", "csv", "json", "jsonl", "parquet")  # json and jsonl: JSON Lines


def _sql_string(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


@contextlib.contextmanager
def connect(ws: Workspace) -> Iterator["duckdb.DuckDBPyConnection"]:  # noqa: F821
    """A read-only DuckDB connection with a view per table (a snapshot of the parts now on disk)."""
    import duckdb

    with tempfile.TemporaryDirectory(prefix="prefdata-query-") as tmp:
        db_path = Path(tmp) / "views.duckdb"
        setup = duckdb.connect(str(db_path))
        for table in TABLES:
            paths = [str(p.resolve()) for p in ws.parts(table)]
            if not paths:  # an empty, correctly typed view rather than a missing one
                stub = Path(tmp) / f"{table}-empty.parquet"
                pq.write_table(empty(table), stub)
                paths = [str(stub)]
            files = "[" + ", ".join(_sql_string(p) for p in paths) + "]"
            try:
                setup.execute(f"CREATE VIEW {table} AS SELECT * FROM read_parquet({files})")
            except duckdb.Error as err:  # e.g. a corrupted part: DuckDB reads the files' schemas here
                setup.close()
                raise PrefdataError(f"cannot read the {table} table of {ws.root}: {str(err).splitlines()[0]}",
                                    "move the corrupted part out of the workspace and re-run the build "
                                    "that wrote it") from None
        setup.close()
        con = duckdb.connect(str(db_path), read_only=True)
        try:
            yield con
        finally:
            con.close()


_ALLOWED = {"SELECT", "EXPLAIN"}
_EXPLAIN = re.compile(r"^\s*EXPLAIN\s+(ANALY[SZ]E\s+)?", re.IGNORECASE)


def check_read_only(sql: str) -> None:
    """Refuse any statement that is not a query, before it reaches DuckDB."""
    import duckdb

    try:
        statements = duckdb.extract_statements(sql)
    except duckdb.Error as err:
        raise PrefdataError(f"SQL does not parse: {str(err).splitlines()[0]}",
                            "check the query syntax") from None
    if not statements:
        raise PrefdataError("no SQL statement given", "pass a query such as \"SELECT count(*) FROM pairs\"")
    for statement in statements:
        kind = statement.type.name
        if kind not in _ALLOWED:
            raise PrefdataError(f"{kind} statements are not allowed: prefdata query is read-only",
                                "use SELECT queries only; export data with `prefdata export`")
        if kind == "EXPLAIN":
            # EXPLAIN ANALYZE runs the statement it wraps (e.g. COPY ... TO a file): check that one too.
            # Anything the pattern cannot strip (comments, options) fails to parse and is refused.
            inner = _EXPLAIN.sub("", statement.query, count=1)
            if inner == statement.query:
                raise PrefdataError("this EXPLAIN form is not allowed: prefdata query is read-only",
                                    "write EXPLAIN [ANALYZE] SELECT ...")
            check_read_only(inner)


def run_query(ws: Workspace, sql: str) -> pa.Table:
    """Run read-only `sql` against the workspace views; returns the last statement's result."""
    import duckdb

    check_read_only(sql)
    with connect(ws) as con:
        try:
            result = None
            for statement in duckdb.extract_statements(sql):
                result = con.sql(statement.query).to_arrow_table()
        except duckdb.Error as err:
            first_line = str(err).splitlines()[0]
            raise PrefdataError(f"query failed: {first_line}",
                                f"the views are: {', '.join(TABLES)}") from None
    return result


def format_text_table(table: pa.Table, max_rows: int = 50, max_width: int = 60) -> str:
    """Render a result as an aligned text table (the terminal output of `prefdata query`)."""
    names = table.column_names
    shown = table.slice(0, max_rows).to_pylist()

    def cell(value) -> str:
        text = "NULL" if value is None else str(value)
        text = text.replace("\n", "\\n")
        return text if len(text) <= max_width else text[: max_width - 1] + "…"

    rows = [[cell(row[n]) for n in names] for row in shown]
    widths = [max([len(n)] + [len(r[i]) for r in rows]) for i, n in enumerate(names)]
    line = lambda values: "  ".join(v.ljust(w) for v, w in zip(values, widths)).rstrip()  # noqa: E731
    out = [line(names), line(["-" * w for w in widths])] + [line(r) for r in rows]
    if table.num_rows > max_rows:
        out.append(f"... {table.num_rows - max_rows} more rows ({table.num_rows} in all); "
                   "use --format csv|json|parquet for everything")
    else:
        out.append(f"({table.num_rows} row{'s' if table.num_rows != 1 else ''})")
    return "\n".join(out)


def check_result_fits(table: pa.Table, fmt: str) -> None:
    """Refuse, naming the column, a result the output format cannot hold: duplicate column
    names (any file format), nested columns in CSV, union/interval/map columns in JSON,
    union/interval columns in Parquet."""
    seen = set()
    for name in table.column_names:
        if name in seen:
            raise PrefdataError(f"the result has two columns named {name!r}, which {fmt} output cannot hold",
                                "give each column its own name with AS, e.g. SELECT a.x AS x1, b.x AS x2")
        seen.add(name)
    if fmt == "csv":
        cannot = lambda t: pa.types.is_nested(t) or _holds(t, _no_json)  # noqa: E731
        fix = "use --format json or parquet, or flatten it in SQL (e.g. to_json(col) or unnest(col))"
    elif fmt in ("json", "jsonl"):
        cannot = lambda t: _holds(t, _no_json)  # noqa: E731
        fix = "cast it in SQL, e.g. CAST(col AS VARCHAR)"
    else:
        cannot = lambda t: _holds(t, _no_parquet)  # noqa: E731
        fix = "cast it in SQL, e.g. CAST(col AS VARCHAR)"
    for field in table.schema:
        if cannot(field.type):
            raise PrefdataError(f"column {field.name!r} is of type {field.type}, which {fmt} output cannot hold", fix)


def _no_parquet(t: pa.DataType) -> bool:
    return pa.types.is_union(t) or pa.types.is_interval(t)


def _no_json(t: pa.DataType) -> bool:
    return _no_parquet(t) or pa.types.is_map(t)



def _holds(t: pa.DataType, bad) -> bool:
    """Whether `t` or any type nested in it is one `bad` says yes to."""
    if bad(t):
        return True
    return any(_holds(t.field(i).type, bad) for i in range(t.num_fields))


def write_result(table: pa.Table, fmt: str, output: Path | None) -> str | None:
    """Write a query result as csv, json (JSON Lines) or parquet; returns text for stdout, if any."""
    if fmt not in OUTPUT_FORMATS:
        raise PrefdataError(f"unknown output format {fmt!r}", f"use one of: {', '.join(OUTPUT_FORMATS)}")
    if fmt == "table":
        return format_text_table(table)
    check_result_fits(table, fmt)
    if fmt == "parquet":
        if output is None:
            raise PrefdataError("--format parquet needs a file", "add --output result.parquet")
        pq.write_table(table, output)
        return None
    import polars as pl

    frame = pl.from_arrow(table)
    text = frame.write_csv() if fmt == "csv" else frame.write_ndjson()  # json and jsonl
    if output is None:
        return text
    Path(output).write_text(text)
    return None
